"""IQL: shapes (single-task and task axis), loss values by hand, resume, and offline learning."""

from __future__ import annotations

import math

import pytest
import torch
from algo_fixtures import (
    ACT,
    OBS,
    D,
    check_losses_and_update,
    check_losses_change_nothing,
    check_multihead,
    check_seeding,
    check_task_axis_with_masks,
    resumed_pair,
    toy_learning,
)
from algo_fixtures import (
    random_batch as batch,
)
from torch import nn

from npf.algos.iql import IQL, IQLConfig, expectile_loss
from npf.nets import MaskedLinear, multihead_factory

torch.set_num_threads(1)

TINY = dict(actor_hidden=[16, 16], critic_hidden=[16, 16], value_hidden=[16, 16])


def make(seed=0, **kw) -> IQL:
    return IQL(OBS, ACT, IQLConfig(**{**TINY, **kw}), "cpu", seed=seed)


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
    check_seeding(make)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("lead", [(), (3,)])
def test_losses_finite_update_and_act_shapes(lead):
    algo = make()
    b = batch(*lead)
    metrics = check_losses_and_update(algo, b)
    assert {"loss/value", "loss/critic", "loss/actor", "q/mean"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    for det in (True, False):
        a = algo.act(b["obs"], deterministic=det)
        assert a.shape == (*lead, 8, ACT) and a.abs().max() <= 1
    assert algo.act(b["obs"][..., 0, :]).shape == (*lead, ACT)


def test_losses_do_not_change_parameters():
    check_losses_change_nothing(make())


def test_task_axis_with_masks_attached():
    n = 3
    algo = make()
    b = check_task_axis_with_masks(algo, n)
    assert algo.act(b["obs"][:, 0], deterministic=False).shape == (n, ACT)


def test_multihead_factory():
    n = 2
    check_multihead(IQL(OBS, ACT, IQLConfig(**TINY), "cpu", factory=multihead_factory(n), seed=0), n)


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

    u = min(q1t, q2t) - v  # 0.6 > 0 → weight τ
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
    full, resumed = resumed_pair(make, lr_schedule=schedule, schedule_steps=10)
    assert full.actor_opt.param_groups[0]["lr"] == resumed.actor_opt.param_groups[0]["lr"]
    if schedule == "cosine":
        assert full.actor_opt.param_groups[0]["lr"] < 1e-3
    obs = torch.randn(4, OBS)
    assert torch.equal(full.act(obs, deterministic=False), resumed.act(obs, deterministic=False))


# ---------------------------------------------------------------------------- learning
# The toy goal-reaching task (tests/algo_fixtures.py): the best action is known.
def test_learns_toy_task_from_mixed_offline_data():
    algo = IQL(
        2 * D,
        D,
        IQLConfig(actor_hidden=[64, 64], critic_hidden=[64, 64], value_hidden=[64, 64], gamma=0.9),
        "cpu",
        seed=0,
    )
    ret, data_mean, random_return, expert_return = toy_learning(algo, 1500)
    # random ≈ −17.1, dataset mean ≈ −15.0 (an untrained policy ≈ −15), expert ≈ −1.7;
    # IQL reaches ≈ −2.7 here (93% of the random → expert gap).
    assert ret > data_mean
    assert (ret - random_return) / (expert_return - random_return) > 0.75, (ret, random_return, expert_return)
