"""BCQ: shapes (single-task and task axis), loss values by hand, resume, and offline learning."""

from __future__ import annotations

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

from npf.algos.bcq import BCQ, BCQConfig
from npf.nets import multihead_factory

torch.set_num_threads(1)

TINY = dict(actor_hidden=[16, 16], critic_hidden=[16, 16], vae_hidden=[16, 16])


def make(seed=0, **kw) -> BCQ:
    return BCQ(OBS, ACT, BCQConfig(**{**TINY, **kw}), "cpu", seed=seed)


# ---------------------------------------------------------------------------- config
def test_config_from_dict_rejects_unknown_key():
    cfg = BCQConfig.from_dict({"lr": 3e-4, "activation": "tanh"})
    assert cfg.lr == 3e-4 and cfg.activation == "tanh" and cfg.phi == 0.05 and cfg.lmbda == 0.75
    with pytest.raises(ValueError, match="'actor_lr'") as e:
        BCQConfig.from_dict({"actor_lr": 1e-3})
    assert "\n" not in str(e.value)


def test_paper_defaults_and_tanh_activation():
    c = BCQConfig()
    assert (c.lr, c.gamma, c.tau, c.num_samples) == (1e-3, 0.99, 5e-3, 10)
    assert not hasattr(c, "batch_size")  # one source of truth: config offline.batch_size
    assert (c.actor_hidden, c.critic_hidden, c.vae_hidden) == ([400, 300], [400, 300], [750, 750])
    algo = make(activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in algo.critic.q1.modules())
    assert algo.vae.latent_dim == 2 * ACT


def test_seeding():
    check_seeding(make)


# ---------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("lead", [(), (3,)])
def test_losses_finite_update_and_act_shapes(lead):
    algo = make()
    b = batch(*lead)
    metrics = check_losses_and_update(algo, b)
    assert set(metrics) == {"loss/vae", "loss/critic", "loss/actor", "q/mean"}
    a = algo.act(b["obs"])
    assert a.shape == (*lead, 8, ACT) and a.abs().max() <= 1
    assert algo.act(b["obs"][..., 0, :]).shape == (*lead, ACT)


def test_losses_do_not_change_parameters():
    check_losses_change_nothing(make())


def test_task_axis_with_masks_attached():
    n = 3
    algo = make()
    b = check_task_axis_with_masks(algo, n)
    assert algo.act(b["obs"][:, 0]).shape == (n, ACT)


def test_multihead_factory():
    n = 2
    check_multihead(BCQ(OBS, ACT, BCQConfig(**TINY), "cpu", factory=multihead_factory(n), seed=0), n)


# ---------------------------------------------------------------------------- hand checks
class RecordingQ(nn.Module):
    """Stub twin critic with known values: Q1 = Σa, Q2 = 0.3 − a₀ + s₀; records its inputs."""

    def forward(self, obs, act):
        self.seen = (obs.clone(), act.clone())
        return act.sum(-1, keepdim=True), 0.3 - act[..., :1] + obs[..., :1]


@pytest.mark.parametrize("lead", [(), (2,)])
def test_critic_target_by_hand(lead):
    """y_b = r_b + γ(1 − d_b)·max_j [λ·min(Q1, Q2) + (1 − λ)·max(Q1, Q2)] over the S samples of s'_b."""
    algo = make(num_samples=4, lmbda=0.75, gamma=0.9)
    algo.critic_target = RecordingQ()
    b = batch(*lead, b=5)
    y = algo.critic_target_value(b["rew"], b["next_obs"], b["done"])
    assert y.shape == (*lead, 5, 1)
    obs_seen, act_seen = algo.critic_target.seen
    assert obs_seen.shape == (*lead, 5 * 4, OBS)
    s, lam, gamma = 4, 0.75, 0.9
    flat = lambda t: t.reshape(-1, *t.shape[len(lead) :])
    for t, (obs_t, act_t, r, d, ns) in enumerate(
        zip(flat(obs_seen), flat(act_seen), flat(b["rew"]), flat(b["done"]), flat(b["next_obs"]))
    ):
        for i in range(5):
            best = -float("inf")
            for j in range(s):
                row = i * s + j
                assert torch.equal(obs_t[row], ns[i])  # sample j of next state i
                assert act_t[row].abs().max() <= 1
                q1 = act_t[row].sum().item()
                q2 = 0.3 - act_t[row, 0].item() + obs_t[row, 0].item()
                best = max(best, lam * min(q1, q2) + (1 - lam) * max(q1, q2))
            expected = r[i].item() + gamma * (1 - d[i].item()) * best
            assert y.reshape(-1, 5, 1)[t, i].item() == pytest.approx(expected, abs=1e-5)


def test_vae_and_actor_loss_by_hand():
    """VAE: MSE(recon, a) + 0.5·KL(N(μ, σ) ‖ N(0, 1)), both means over elements; actor: −mean Q1."""
    algo = make()
    b = batch(b=6)
    state = algo.generator.get_state()
    loss = algo.vae_loss(b["obs"], b["act"])
    algo.generator.set_state(state)
    eps = torch.randn(6, 2 * ACT, generator=algo.generator)
    h = algo.vae.encoder(torch.cat([b["obs"], b["act"]], -1))
    mu, log_std = h[:, : 2 * ACT], h[:, 2 * ACT :].clamp(-4, 15)
    recon = algo.vae.decoder(torch.cat([b["obs"], mu + log_std.exp() * eps], -1))
    kl = (0.5 * (mu**2 + (2 * log_std).exp() - 1) - log_std).mean()
    torch.testing.assert_close(loss, ((recon - b["act"]) ** 2).mean() + 0.5 * kl)
    # Actor: decoder actions from the clipped prior, perturbed by at most Φ, scored by Q1.
    algo.generator.set_state(state)
    actor_loss = algo.actor_loss(b["obs"])
    algo.generator.set_state(state)
    z = torch.randn(6, 2 * ACT, generator=algo.generator).clamp(-0.5, 0.5)
    a0 = algo.vae.decoder(torch.cat([b["obs"], z], -1))
    a = (a0 + 0.05 * algo.actor.net(torch.cat([b["obs"], a0], -1))).clamp(-1, 1)
    assert (a - a0).abs().max() <= 0.05 + 1e-6
    torch.testing.assert_close(actor_loss, -algo.critic.q1(torch.cat([b["obs"], a], -1)).mean())


def test_act_picks_argmax_q1():
    algo = make()
    algo.critic = RecordingQ()
    obs = torch.randn(4, OBS)
    a = algo.act(obs)
    _, cand = algo.critic.seen  # [4, S, ACT]
    assert torch.equal(a, cand.gather(1, cand.sum(-1).argmax(1)[:, None, None].expand(-1, 1, ACT))[:, 0])


# ---------------------------------------------------------------------------- resume
def test_state_round_trip_is_bit_identical():
    full, resumed = resumed_pair(make)
    for name in ("actor_opt", "critic_opt", "vae_opt"):
        sa, sb = getattr(full, name).state_dict()["state"], getattr(resumed, name).state_dict()["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    obs = torch.randn(4, OBS)
    assert torch.equal(full.act(obs), resumed.act(obs))


# ---------------------------------------------------------------------------- learning
# The toy goal-reaching task (tests/algo_fixtures.py): the best action is known.
def test_learns_toy_task_from_mixed_offline_data():
    algo = BCQ(
        2 * D,
        D,
        BCQConfig(actor_hidden=[64, 64], critic_hidden=[64, 64], vae_hidden=[64, 64], gamma=0.9),
        "cpu",
        seed=0,
    )
    ret, data_mean, random_return, expert_return = toy_learning(algo, 1000)
    # random ≈ −17.1, dataset mean ≈ −15.0 (an untrained policy ≈ −15), expert ≈ −1.7;
    # BCQ reaches ≈ −5.7 here (74% of the random → expert gap).
    assert ret > data_mean
    assert (ret - random_return) / (expert_return - random_return) > 0.6, (ret, random_return, expert_return)
