"""MultitaskLearner: the batched masked N-task step equals the per-task loop of Algorithm 1.

The reference below is the paper's Algorithm 1 written naively: for each task, a *local model*
whose weights are θ ⊙ m_n (a deep copy with no masks attached, run densely on that task's batch
alone), its gradients masked by m_n and summed (or averaged) into the global parameters, then one
optimizer step. It shares no code with the batched path.
"""

from __future__ import annotations

import copy

import pytest
import torch

from npf.multitask import (
    MultitaskLearner,
    append_one_hot,
    factory_for,
    obs_dim_for,
    stack_batches,
)
from npf.nets import MaskedLinear, StackedLinear, mlp
from npf.pathways import Pathways

try:
    from test_pathways import DT, TinyAC, make_batch, set_plan
except ImportError:  # tests/ imported as a package
    from tests.test_pathways import DT, TinyAC, make_batch, set_plan

torch.set_num_threads(1)
N = 3


def task_batches(seed, n=N, B=16, obs_dim=3, act_dim=2):
    return [make_batch(1000 * seed + i, B=B, obs_dim=obs_dim, act_dim=act_dim) for i in range(n)]


def make_pathways(algo, n=N, keep_ratio=0.25, mask_bias=False):
    return Pathways.discover(algo, task_batches(99, n), keep_ratio=keep_ratio, mask_bias=mask_bias)


# --------------------------------------------------------------------------------------------
# Reference: Algorithm 1 with local models (no attached masks anywhere)
# --------------------------------------------------------------------------------------------
def local_model(algo, pw, n):
    local = copy.deepcopy(algo)
    for role in algo.roles:
        for net in (local.networks()[role], local.targets().get(role)):
            if net is None:
                continue
            for m in net.modules():
                if isinstance(m, MaskedLinear):
                    m.set_masks(None, None)
                    m.pathway_forward = None
            with torch.no_grad():
                for k, p in net.named_parameters():
                    if k in pw.masks[role]:
                        p.mul_(pw.masks[role][k][n].to(p.dtype))
    local.loss_scale = 1.0
    return local


def reference_grads(algo, pw, batches, role, loss_name, weight):
    """Σ_n weight · m_n ⊙ ∇L_n(θ ⊙ m_n) for the global parameters of ``role``."""
    names = [k for k, _ in algo.networks()[role].named_parameters()]
    total = {k: torch.zeros_like(p) for k, p in algo.networks()[role].named_parameters()}
    for n, b in enumerate(batches):
        local = local_model(algo, pw, n)
        params = [p for _, p in local.networks()[role].named_parameters()]
        grads = torch.autograd.grad(getattr(local, loss_name)(b), params)
        for k, g in zip(names, grads):
            m = pw.masks[role].get(k)
            total[k] += weight * (g if m is None else g * m[n].to(g.dtype))
    return total


def reference_update(algo, pw, batches, reduce):
    weight = 1.0 if reduce == "sum" else 1.0 / len(batches)
    for role, loss_name, opt in (("critic", "critic_loss", algo.critic_opt), ("actor", "actor_loss", algo.actor_opt)):
        total = reference_grads(algo, pw, batches, role, loss_name, weight)
        opt.zero_grad()
        for k, p in algo.networks()[role].named_parameters():
            p.grad = total[k].clone()
        opt.step()
    algo.soft_update_targets()


def all_params(algo):
    out = {}
    for role in algo.roles:
        for tag, net in (("net", algo.networks()[role]), ("target", algo.targets()[role])):
            for k, p in net.named_parameters():
                out[f"{tag}/{role}/{k}"] = p.detach().clone()
    return out


# --------------------------------------------------------------------------------------------
# Batched == per-task loop
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["fused", "autograd"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("mask_bias", [False, True])
def test_batched_gradients_equal_per_task_loop(reduce, backend, mask_bias):
    algo = TinyAC(seed=7)
    pw = make_pathways(algo, mask_bias=mask_bias)
    batches = task_batches(1)
    ref = {
        role: reference_grads(algo, pw, batches, role, f"{role}_loss", 1.0 if reduce == "sum" else 1 / N)
        for role in algo.roles
    }
    learner = MultitaskLearner(algo, "npf", N, pw, reduce=reduce, backend=backend)
    assert algo.loss_scale == (N if reduce == "sum" else 1)
    losses = learner.losses(batches)
    for i, role in enumerate(algo.roles):
        names, params = zip(*algo.networks()[role].named_parameters())
        grads = torch.autograd.grad(losses[role], params, retain_graph=i == 0)
        for k, g in zip(names, grads):
            assert torch.allclose(g, ref[role][k], rtol=0, atol=1e-12), (role, k)
        assert any(g.abs().max() > 1e-3 for g in grads)


@pytest.mark.parametrize("plan", ["bmm", "loop", "sparse"])
@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_batched_update_equals_per_task_loop_after_steps(reduce, plan, monkeypatch):
    set_plan(monkeypatch, plan)
    a, b = TinyAC(seed=8), TinyAC(seed=8)
    pw = make_pathways(a)
    learner = MultitaskLearner(a, "npf", N, pw, reduce=reduce)
    for step in range(6):
        batches = task_batches(step)
        learner.update(batches)
        reference_update(b, pw, batches, reduce)
    pa, pb = all_params(a), all_params(b)
    moved = 0.0
    for k in pa:
        assert torch.allclose(pa[k], pb[k], rtol=0, atol=1e-10), k
        moved = max(moved, float((pa[k] - all_params(TinyAC(seed=8))[k]).abs().max()))
    assert moved > 1e-3


def test_loop_over_tasks_is_not_in_update(monkeypatch):
    algo = TinyAC()
    learner = MultitaskLearner(algo, "npf", N, make_pathways(algo))
    calls = []
    orig = algo.update
    monkeypatch.setattr(algo, "update", lambda batch: calls.append(batch) or orig(batch))
    learner.update(task_batches(0))
    assert len(calls) == 1 and calls[0]["obs"].shape == (N, 16, 3)


# --------------------------------------------------------------------------------------------
# What masks guarantee
# --------------------------------------------------------------------------------------------
def weights_only(algo, role):
    return {k: p.detach().clone() for k, p in algo.networks()[role].named_parameters() if k.endswith("weight")}


def test_weights_outside_union_never_change():
    algo = TinyAC(seed=9)
    pw = make_pathways(algo, keep_ratio=0.1)
    before = {role: weights_only(algo, role) for role in algo.roles}
    tgt_before = {role: {k: p.clone() for k, p in algo.targets()[role].named_parameters()} for role in algo.roles}
    learner = MultitaskLearner(algo, "npf", N, pw)
    for step in range(40):
        learner.update(task_batches(step))
    for role in algo.roles:
        union = pw.union_mask(role)
        after = weights_only(algo, role)
        tgt = dict(algo.targets()[role].named_parameters())
        changed_inside = False
        for k, u in union.items():
            assert torch.equal(after[k][~u], before[role][k][~u]), (role, k)
            assert torch.equal(tgt[k][~u], tgt_before[role][k][~u]), (role, k)
            changed_inside |= bool((after[k][u] != before[role][k][u]).any())
        assert changed_inside


@pytest.mark.parametrize("task", [0, 2])
def test_step_on_one_task_changes_only_its_pathway(task):
    algo = TinyAC(seed=10)
    pw = make_pathways(algo, keep_ratio=0.2)
    before = {role: weights_only(algo, role) for role in algo.roles}
    learner = MultitaskLearner(algo, "npf", 1, pw.task_view(task))
    learner.update([task_batches(3)[task]])
    for role in algo.roles:
        after = weights_only(algo, role)
        for k, m in pw.masks[role].items():
            mn = m[task]
            assert torch.equal(after[k][~mn], before[role][k][~mn]), (role, k)
    # (the actor may legitimately not move: if task n's critic pathway uses no action input,
    # ∂Q/∂a = 0 through that pathway)
    after = weights_only(algo, "critic")
    assert any(bool((after[k] != before["critic"][k]).any()) for k in after)


def test_task_actions_ignore_weights_outside_its_pathway():
    algo = TinyAC(seed=11)
    pw = make_pathways(algo, keep_ratio=0.2)
    learner = MultitaskLearner(algo, "npf", N, pw)
    for step in range(3):
        learner.update(task_batches(step))
    obs = torch.randn(N, 7, 3, dtype=DT)
    acts = learner.act(obs)
    assert acts.shape == (N, 7, 2)
    for n in range(N):
        assert torch.allclose(learner.act_task(n, obs[n]), acts[n], rtol=0, atol=1e-14)
    n = 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, p in algo.actor.named_parameters():
            if k in pw.masks["actor"]:
                outside = ~pw.masks["actor"][k][n]
                p[outside] += torch.randn(int(outside.sum()), generator=g, dtype=DT)
    after = learner.act(obs)
    assert torch.equal(after[n], acts[n])
    assert torch.equal(learner.act_task(n, obs[n]), acts[n])
    pw.task_view(n).attach(algo)  # task n's pathway alone, [1, ...] inputs
    assert torch.allclose(algo.act(obs[n : n + 1])[0], acts[n], rtol=0, atol=1e-14)
    assert not torch.allclose(after[0], acts[0]) or not torch.allclose(after[2], acts[2])


# --------------------------------------------------------------------------------------------
# Baselines and helpers
# --------------------------------------------------------------------------------------------
def test_obs_dim_and_factory_helpers():
    assert obs_dim_for("mt", 39, 10) == 49 and obs_dim_for("npf", 39, 10) == 39
    assert obs_dim_for("mhmt", 39, 10) == 39
    assert factory_for("npf", 10) is mlp and factory_for("mt", 10) is mlp
    net = factory_for("mhmt", 4)(5, 2, [8])
    assert isinstance(net[-1], StackedLinear) and net[-1].weight.shape == (4, 2, 8)
    with pytest.raises(ValueError, match="method"):
        obs_dim_for("pcgrad2", 3, 2)


def test_stack_batches_and_one_hot():
    bs = task_batches(0)
    s = stack_batches(bs)
    assert s["obs"].shape == (N, 16, 3) and torch.equal(s["rew"][1], bs[1]["rew"])
    with pytest.raises(ValueError, match="keys"):
        stack_batches([bs[0], {k: v for k, v in bs[1].items() if k != "done"}])
    with pytest.raises(ValueError, match="shapes"):
        stack_batches([bs[0], make_batch(5, B=8)])
    x = torch.zeros(N, 2, 4, 1)
    h = append_one_hot(x, N)
    assert h.shape == (N, 2, 4, 1 + N)
    for n in range(N):
        assert torch.equal(h[n, ..., 1:], torch.eye(N)[n].expand(2, 4, N))
    assert append_one_hot(torch.zeros(5, 1), N, task=2)[:, 1:].argmax(-1).tolist() == [2] * 5


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_mt_baseline_one_hot_update_equals_sum_of_task_losses(reduce):
    algo = TinyAC(obs_dim=obs_dim_for("mt", 3, N), seed=12)
    learner = MultitaskLearner(algo, "mt", N, reduce=reduce)
    batches = task_batches(2)
    prepared = learner.prepare(batches)
    assert prepared["obs"].shape == (N, 16, 3 + N) and prepared["next_obs"].shape == (N, 16, 3 + N)
    assert torch.equal(prepared["obs"][2, :, 3:], torch.eye(N, dtype=DT)[2].expand(16, N))
    assert torch.equal(prepared["act"], stack_batches(batches)["act"])
    # loss_scale: N · mean over [N, B] == Σ_n mean_n (sum) or the plain mean (mean)
    loss = learner.losses(batches)["critic"]
    algo.loss_scale = 1.0
    per_task = torch.stack([algo.critic_loss({k: v[n] for k, v in prepared.items()}) for n in range(N)])
    ref = per_task.sum() if reduce == "sum" else per_task.mean()
    assert torch.allclose(loss, ref, rtol=1e-12)
    learner = MultitaskLearner(algo, "mt", N, reduce=reduce)
    learner.update(batches)
    obs = torch.randn(N, 5, 3, dtype=DT)
    acts = learner.act(obs)
    assert acts.shape == (N, 5, 2)
    assert torch.allclose(learner.act_task(1, obs[1]), acts[1], rtol=0, atol=1e-14)


def test_mhmt_baseline_heads_per_task():
    algo = TinyAC(factory=factory_for("mhmt", N), seed=13)
    learner = MultitaskLearner(algo, "mhmt", N)
    head = algo.actor[-2]  # StackedLinear, then the tanh output activation
    assert isinstance(head, StackedLinear)
    w0 = head.weight.detach().clone()
    learner.update(task_batches(0))
    assert (head.weight != w0).any(dim=(1, 2)).all()  # every task's head learns
    obs = torch.randn(N, 4, 3, dtype=DT)
    acts = learner.act(obs)
    assert acts.shape == (N, 4, 2)
    assert torch.allclose(learner.act_task(2, obs[2]), acts[2], rtol=0, atol=1e-14)
    # a one-task batch only moves that task's head
    single = TinyAC(factory=factory_for("mhmt", N), seed=13)
    h = single.actor[-2]
    w0 = h.weight.detach().clone()
    b = stack_batches(task_batches(1))
    b = {k: torch.cat([v[:1], v[1:] * 0], 0) for k, v in b.items()}  # tasks 1, 2 see zeros
    single.loss_scale = N
    single.critic_opt.zero_grad()
    single.critic_loss(b).backward()
    g = single.critic[-1].weight.grad
    assert g[0].abs().sum() > 0


def test_learner_validation():
    algo = TinyAC()
    with pytest.raises(ValueError, match="needs pathways"):
        MultitaskLearner(algo, "npf", N)
    with pytest.raises(ValueError, match="reduce"):
        MultitaskLearner(algo, "mt", N, reduce="max")
    pw = make_pathways(algo)
    with pytest.raises(ValueError, match="tasks"):
        MultitaskLearner(algo, "npf", N + 1, pw)
    learner = MultitaskLearner(algo, "npf", N, pw)
    with pytest.raises(ValueError, match="task batches"):
        learner.update(task_batches(0, n=N - 1))
    state = learner.state_dict()
    assert state["method"] == "npf" and Pathways.from_state_dict(state["pathways"]).equals(pw)


# --------------------------------------------------------------------------------------------
# The real offline algorithms (written concurrently; skipped when they do not import)
# --------------------------------------------------------------------------------------------
def _real_algos():
    out = []
    try:
        from npf.algos.iql import IQL, IQLConfig

        out.append(
            pytest.param(
                lambda: IQL(
                    3, 2, IQLConfig(actor_hidden=[16, 16], critic_hidden=[16, 16], value_hidden=[16, 16]), seed=0
                ),
                id="iql",
            )
        )
    except Exception as e:
        out.append(pytest.param(None, id="iql", marks=pytest.mark.skip(reason=f"IQL unavailable: {e}")))
    try:
        from npf.algos.bcq import BCQ, BCQConfig

        out.append(
            pytest.param(
                lambda: BCQ(
                    3, 2, BCQConfig(actor_hidden=[16, 16], critic_hidden=[16, 16], vae_hidden=[16, 16]), seed=0
                ),
                id="bcq",
            )
        )
    except Exception as e:
        out.append(pytest.param(None, id="bcq", marks=pytest.mark.skip(reason=f"BCQ unavailable: {e}")))
    return out


@pytest.mark.parametrize("make", _real_algos())
def test_real_algorithm_npf_update(make):
    try:
        algo = make()
    except Exception as e:
        pytest.skip(f"could not build the algorithm: {e}")
    batches = [make_batch(s, B=32, dtype=torch.float32) for s in range(N)]
    pw = Pathways.discover(algo, batches, keep_ratio=0.2)
    assert set(pw.roles) == set(algo.roles)
    before = {role: weights_only(algo, role) for role in algo.roles}
    learner = MultitaskLearner(algo, "npf", N, pw)
    for step in range(3):
        metrics = learner.update([make_batch(100 * step + s, B=32, dtype=torch.float32) for s in range(N)])
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    for role in algo.roles:
        after = weights_only(algo, role)
        for k, u in pw.union_mask(role).items():
            assert torch.equal(after[k][~u], before[role][k][~u]), (role, k)
    acts = learner.act(torch.randn(N, 4, 3))
    assert acts.shape == (N, 4, 2) and torch.isfinite(acts).all()


def test_iql_batched_gradients_equal_per_task_loop():
    """IQL's losses are deterministic, so its batched masked gradients must match Algorithm 1's
    per-task local models exactly (float64)."""
    try:
        from npf.algos.iql import IQL, IQLConfig

        algo = IQL(3, 2, IQLConfig(actor_hidden=[16, 16], critic_hidden=[16, 16], value_hidden=[16, 16]), seed=0)
    except Exception as e:
        pytest.skip(f"IQL unavailable: {e}")
    for net in [*algo.networks().values(), *algo.targets().values()]:
        net.double()
    pw = Pathways.discover(algo, task_batches(5), keep_ratio=0.2)
    batches = task_batches(6)
    ref = {}
    for role in algo.roles:
        names = [k for k, _ in algo.networks()[role].named_parameters()]
        ref[role] = {k: 0.0 for k in names}
        for n, b in enumerate(batches):
            local = local_model(algo, pw, n)
            params = [p for _, p in local.networks()[role].named_parameters()]
            grads = torch.autograd.grad(local.losses(b)[role], params)
            for k, g in zip(names, grads):
                m = pw.masks[role].get(k)
                ref[role][k] = ref[role][k] + (g if m is None else g * m[n].to(g.dtype))
    learner = MultitaskLearner(algo, "npf", N, pw, reduce="sum")
    losses = learner.losses(batches)
    for role in algo.roles:
        names, params = zip(*algo.networks()[role].named_parameters())
        grads = torch.autograd.grad(losses[role], params, retain_graph=True)
        for k, g in zip(names, grads):
            assert torch.allclose(g, ref[role][k], rtol=0, atol=1e-10), (role, k)
