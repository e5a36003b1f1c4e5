"""IQL: shapes (single-task and task axis), loss values by hand, resume, and offline learning."""
from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from npf.algos.iql import IQL, IQLConfig, expectile_loss
from npf.nets import MaskedLinear, multihead_factory
from algo_fixtures import D, random_batch, toy_learning

torch.set_num_threads(1)

OBS, ACT = 5, 3
TINY = dict(actor_hidden=[16, 16], critic_hidden=[16, 16], value_hidden=[16, 16])


def make(seed=0, **kw) -> IQL:
    return IQL(OBS, ACT, IQLConfig(**{**TINY, **kw}), "cpu", seed=seed)


def batch(*lead, b=8, seed=0, obs=OBS, act=ACT) -> dict[str, torch.Tensor]:
    return random_batch(*lead, b=b, seed=seed, obs=obs, act=act, done_p=0.2)


def snapshot(algo: IQL) -> dict[str, torch.Tensor]:
    mods = {**algo.networks(), **{f"{k}_target": v for k, v in algo.targets().items()}}
    return {f"{k}.{n}": p.detach().clone() for k, m in mods.items() for n, p in m.state_dict().items()}


def masked_layers(algo: IQL):
    for m in [*algo.networks().values(), *algo.targets().values()]:
        yield from (l for l in m.modules() if isinstance(l, MaskedLinear))


# ---------------------------------------------------------------------------- config
def test_config_from_dict_rejects_unknown_key():
    cfg = IQLConfig.from_dict({"beta": 10.0, "activation": "tanh", "lr_schedule": "cosine"})
    assert cfg.beta == 10.0 and cfg.expectile == 0.7 and cfg.max_weight == 100.0
    with pytest.raises(ValueError, match="'temperature'") as e:
        IQLConfig.from_dict({"temperature": 3.0})
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        IQLConfig(lr_schedule="linear")


def test_paper_defaults_and_tanh_activation():
    c = IQLConfig()
    assert (c.lr, c.gamma, c.tau) == (1e-3, 0.99, 5e-3)
    assert not hasattr(c, "batch_size")  # one source of truth: config offline.batch_size
    assert (c.expectile, c.beta, c.max_weight, c.lr_schedule) == (0.7, 3.0, 100.0, "none")
    assert c.actor_hidden == c.critic_hidden == c.value_hidden == [1024, 1024]
    algo = make(activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in algo.value.modules())
    assert algo.actor.log_std.shape == (ACT,)  # state-independent


def test_seeding():
    w = lambda algo: algo.critic.q1[0].weight  # noqa: E731
    assert torch.equal(w(make(seed=5)), w(make(seed=5)))
    assert not torch.equal(w(make(seed=5)), w(make(seed=6)))
    assert not torch.equal(w(make(seed=None)), w(make(seed=None)))  # unseeded: fresh draws
    torch.manual_seed(1)
    a = make(seed=None)
    torch.manual_seed(1)
    b = make(seed=None)  # ... that follow the global torch seed, noise generator included
    assert torch.equal(w(a), w(b)) and torch.equal(a.generator.get_state(), b.generator.get_state())


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("lead", [(), (3,)])
def test_losses_finite_update_and_act_shapes(lead):
    algo = make()
    b = batch(*lead)
    losses = algo.losses(b)
    assert set(losses) == set(algo.roles)
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    metrics = algo.update(b)
    assert {"loss/value", "loss/critic", "loss/actor", "q/mean"} <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for det in (True, False):
        a = algo.act(b["obs"], deterministic=det)
        assert a.shape == (*lead, 8, ACT) and a.abs().max() <= 1
    assert algo.act(b["obs"][..., 0, :]).shape == (*lead, ACT)


def test_losses_do_not_change_parameters():
    algo = make()
    algo.update(batch(seed=1))
    before = snapshot(algo)
    opts = (algo.actor_opt, algo.critic_opt, algo.value_opt)
    opt_before = [o.state_dict()["state"][0]["exp_avg"].clone() for o in opts]
    algo.losses(batch(seed=2))
    after = snapshot(algo)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(x, o.state_dict()["state"][0]["exp_avg"]) for x, o in zip(opt_before, opts))


def test_task_axis_with_masks_attached():
    n = 3
    algo = make()
    b = batch(n)
    plain = algo.losses(b)
    for layer in masked_layers(algo):
        layer.set_masks(torch.ones(n, *layer.weight.shape))
    ones = algo.losses(b)
    for k in plain:
        torch.testing.assert_close(ones[k], plain[k])
    algo.loss_scale = float(n)
    scaled = algo.losses(b)
    for k in plain:
        torch.testing.assert_close(scaled[k], n * plain[k])
    g = torch.Generator().manual_seed(0)
    for layer in masked_layers(algo):
        layer.set_masks((torch.rand(n, *layer.weight.shape, generator=g) < 0.5).float())
    assert all(torch.isfinite(v) for v in algo.losses(b).values())
    algo.update(b)
    assert algo.act(b["obs"]).shape == (n, 8, ACT)
    assert algo.act(b["obs"][:, 0], deterministic=False).shape == (n, ACT)


def test_multihead_factory():
    n = 2
    algo = IQL(OBS, ACT, IQLConfig(**TINY), "cpu", factory=multihead_factory(n), seed=0)
    b = batch(n)
    assert all(torch.isfinite(v) for v in algo.losses(b).values())
    algo.update(b)
    assert algo.act(b["obs"]).shape == (n, 8, ACT)


# ---------------------------------------------------------------------------- hand checks
def test_expectile_loss_values():
    # u = target − V: positive residuals weigh τ, negative 1 − τ.
    diff = torch.tensor([1.0, -2.0, 0.5, 0.0])
    expected = (0.7 * 1.0 + 0.3 * 4.0 + 0.7 * 0.25 + 0.0) / 4
    assert expectile_loss(diff, 0.7).item() == pytest.approx(expected)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (diff**2).mean().item())


def set_constant(net: nn.Module, value) -> None:
    """Make the network output a constant: zero output weights, bias = value."""
    last = [m for m in net.modules() if isinstance(m, MaskedLinear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.as_tensor(value, dtype=torch.float32))


def test_all_three_losses_by_hand():
    """Constant networks: V ≡ v, Q'1 ≡ q1, Q'2 ≡ q2, Q ≡ (c1, c2), π mean ≡ tanh(m), log σ = ℓ."""
    v, q1t, q2t, c1, c2 = -0.4, 0.5, 0.2, 1.0, -1.0
    m, ell = torch.tensor([0.3, -0.2, 0.0]), torch.tensor([-0.5, 0.0, 0.2])
    algo = make(gamma=0.9, beta=3.0, expectile=0.7)
    set_constant(algo.value, [v])
    set_constant(algo.critic_target.q1, [q1t])
    set_constant(algo.critic_target.q2, [q2t])
    set_constant(algo.critic.q1, [c1])
    set_constant(algo.critic.q2, [c2])
    set_constant(algo.actor.net, m)
    with torch.no_grad():
        algo.actor.log_std.copy_(ell)
    b = batch(b=4)
    losses = algo.losses(b)

    u = min(q1t, q2t) - v                        # 0.6 > 0 → weight τ
    assert losses["value"].item() == pytest.approx(0.7 * u**2, rel=1e-5)
    y = b["rew"] + 0.9 * (1 - b["done"]) * v
    assert losses["critic"].item() == pytest.approx((((c1 - y) ** 2).mean() + ((c2 - y) ** 2).mean()).item(), rel=1e-5)
    w = min(math.exp(3.0 * u), 100.0)
    mu, std = torch.tanh(m), ell.exp()
    logp = torch.distributions.Normal(mu, std).log_prob(b["act"]).sum(-1)
    assert losses["actor"].item() == pytest.approx(-(w * logp).mean().item(), rel=1e-5)
    # Weight clipping: β·A large → the weight saturates at max_weight.
    algo.cfg.beta = 100.0
    assert algo.losses(b)["actor"].item() == pytest.approx(-(100.0 * logp).mean().item(), rel=1e-5)
    # act: deterministic mean, clipped to [-1, 1].
    torch.testing.assert_close(algo.act(b["obs"]), mu.expand(4, ACT))


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize("schedule", ["none", "cosine"])
def test_state_round_trip_is_bit_identical(schedule):
    batches = [batch(b=16, seed=s) for s in range(6)]
    kw = dict(lr_schedule=schedule, schedule_steps=10)
    full = make(seed=3, **kw)
    for bt in batches:
        full.update(bt)

    first = make(seed=3, **kw)
    for bt in batches[:3]:
        first.update(bt)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = make(seed=99, **kw)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for bt in batches[3:]:
        resumed.update(bt)

    assert full.num_updates == resumed.num_updates == 6
    a, b = snapshot(full), snapshot(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full.actor_opt.param_groups[0]["lr"] == resumed.actor_opt.param_groups[0]["lr"]
    if schedule == "cosine":
        assert full.actor_opt.param_groups[0]["lr"] < 1e-3
    obs = torch.randn(4, OBS)
    assert torch.equal(full.act(obs, deterministic=False), resumed.act(obs, deterministic=False))


# ---------------------------------------------------------------------------- learning
# The toy goal-reaching task (tests/algo_fixtures.py): the best action is known.
def test_learns_toy_task_from_mixed_offline_data():
    algo = IQL(2 * D, D, IQLConfig(actor_hidden=[64, 64], critic_hidden=[64, 64], value_hidden=[64, 64],
                                   gamma=0.9), "cpu", seed=0)
    ret, data_mean, random_return, expert_return = toy_learning(algo, 1500)
    # random ≈ −17.1, dataset mean ≈ −15.0 (an untrained policy ≈ −15), expert ≈ −1.7;
    # IQL reaches ≈ −2.7 here (93% of the random → expert gap).
    assert ret > data_mean
    assert (ret - random_return) / (expert_return - random_return) > 0.75, (ret, random_return, expert_return)
