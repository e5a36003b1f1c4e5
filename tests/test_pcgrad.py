"""PCGrad (Yu et al. 2020): the projection on hand-made gradients, random orders, and the
PCGrad MT-SAC update using exactly the projected per-task gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from npf.algos.sac import SAC, SACConfig
from npf.baselines import PCGradSAC, conflict_fraction, pcgrad, pcgrad_orders, pcgrad_projected
from npf.multitask import MultitaskLearner, obs_dim_for

torch.set_num_threads(1)


def reference(grads: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The paper's loop, written plainly: g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j when g_i·g_j < 0."""
    out = []
    for i in range(grads.shape[0]):
        g = grads[i].clone()
        for j in orders[i].tolist():
            dot = float(g @ grads[j])
            if dot < 0:
                g = g - dot / float(grads[j] @ grads[j]) * grads[j]
        out.append(g)
    return torch.stack(out)


def test_conflicting_pair_is_projected():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    orders = torch.tensor([[1], [0]])
    proj = pcgrad_projected(g, orders=orders)
    # g1·g2 = −1 < 0: g1 − (−1/2) g2 = [0.5, 0.5]; g2 − (−1/1) g1 = [0, 1]
    assert torch.equal(proj, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))
    assert torch.equal(pcgrad(g, orders=orders), torch.tensor([0.5, 1.5], dtype=torch.float64))
    # after projection neither conflicts with the other's original gradient
    assert float(proj[0] @ g[1]) == 0.0 and float(proj[1] @ g[0]) == 0.0
    assert conflict_fraction(g) == 1.0


def test_non_conflicting_pair_is_unchanged():
    g = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert torch.equal(pcgrad_projected(g, orders=torch.tensor([[1], [0]])), g)
    assert torch.equal(pcgrad(g, generator=torch.Generator().manual_seed(0)), torch.tensor([2.0, 1.0]))
    assert conflict_fraction(g) == 0.0
    # orthogonal gradients (dot = 0) are not projected either
    o = torch.tensor([[1.0, 0.0], [0.0, -3.0]])
    assert torch.equal(pcgrad_projected(o, orders=torch.tensor([[1], [0]])), o)


def test_zero_gradient_task_is_harmless():
    g = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert torch.equal(pcgrad_projected(g, orders=torch.tensor([[1], [0]])), g)


@pytest.mark.parametrize("seed", range(5))
def test_many_tasks_match_the_sequential_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    orders = pcgrad_orders(5, gen)
    assert torch.allclose(pcgrad_projected(g, orders=orders), reference(g, orders), atol=1e-12)
    # the order matters in general, and each row is a permutation of the other tasks
    for i, row in enumerate(orders.tolist()):
        assert sorted(row) == [j for j in range(5) if j != i]


def test_orders_are_random_and_reproducible():
    a = pcgrad_orders(6, torch.Generator().manual_seed(1))
    b = pcgrad_orders(6, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    seen = {tuple(pcgrad_orders(4, torch.Generator().manual_seed(s))[0].tolist()) for s in range(40)}
    assert len(seen) == 6  # all 3! orders of the other tasks appear


def _batch(n, b, obs_dim, act_dim, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(n, b, obs_dim, generator=g),
        "act": torch.rand(n, b, act_dim, generator=g) * 2 - 1,
        "rew": torch.randn(n, b, 1, generator=g),
        "next_obs": torch.randn(n, b, obs_dim, generator=g),
        "done": torch.zeros(n, b, 1),
    }


def test_pcgrad_sac_steps_with_the_projected_gradients():
    n, obs_dim, act_dim = 3, 5, 2
    cfg = SACConfig(hidden=[16, 16], batch_size=8, policy_delay=1)
    algo = PCGradSAC(obs_dim_for("mt", obs_dim, n), act_dim, cfg, num_temperatures=n, seed=0)
    learner = MultitaskLearner(algo, "mt", n, reduce="mean")
    batch = learner.prepare(_batch(n, 8, obs_dim, act_dim, 1))
    twin = copy.deepcopy(algo)
    captured = {}
    for name, opt in (("critic", algo.critic_opt), ("actor", algo.actor_opt)):
        params = [p for g in opt.param_groups for p in g["params"]]

        def hook(opt, args, kwargs, name=name, params=params):
            captured[name] = torch.cat([p.grad.reshape(-1) for p in params]).clone()

        opt.register_step_pre_hook(hook)
    metrics = algo.update(batch)
    assert 0.0 <= metrics["pcgrad/critic_conflicts"] <= 1.0

    # expected: the per-task gradients of the same losses (same RNG draws), projected
    cparams = list(twin.critic.parameters())
    G = []
    for i in range(n):
        with twin._task(i):
            loss, _ = twin._critic_loss({k: v[i] for k, v in batch.items()})
        G.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, cparams)]))
    expected_c = pcgrad(torch.stack(G), twin.pc_generator)
    assert torch.allclose(captured["critic"], expected_c, atol=1e-6)
    twin.critic_opt.zero_grad()
    # (the critic step changes the actor loss; replay it on the twin)
    i = 0
    for p in cparams:
        p.grad = expected_c[i : i + p.numel()].view_as(p).clone()
        i += p.numel()
    twin.critic_opt.step()
    twin.critic.requires_grad_(False)
    aparams = list(twin.actor.parameters())
    Ga = []
    for i in range(n):
        with twin._task(i):
            loss, _ = twin._actor_loss({k: v[i] for k, v in batch.items()})
        Ga.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, aparams)]))
    expected_a = pcgrad(torch.stack(Ga), twin.pc_generator)
    assert torch.allclose(captured["actor"], expected_a, atol=1e-6)


def test_one_task_pcgrad_equals_plain_sac():
    obs_dim, act_dim = 4, 2
    cfg = SACConfig(hidden=[16], batch_size=8)
    a = PCGradSAC(obs_dim, act_dim, cfg, num_temperatures=1, seed=3)
    b = SAC(obs_dim, act_dim, cfg, num_temperatures=1, seed=3)
    for k in range(3):
        batch = _batch(1, 8, obs_dim, act_dim, 10 + k)
        a.update(batch)
        b.update(batch)
    for pa, pb in zip(
        list(a.actor.parameters()) + list(a.critic.parameters()),
        list(b.actor.parameters()) + list(b.critic.parameters()),
    ):
        assert torch.allclose(pa, pb, atol=1e-6)
    assert torch.allclose(a.log_alpha, b.log_alpha)


def test_state_dict_round_trip_keeps_the_order_generator():
    cfg = SACConfig(hidden=[8])
    a = PCGradSAC(4, 2, cfg, num_temperatures=2, seed=0)
    a.update(_batch(2, 4, 4, 2, 0))
    b = PCGradSAC(4, 2, cfg, num_temperatures=2, seed=5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.pc_generator.get_state(), b.pc_generator.get_state())
