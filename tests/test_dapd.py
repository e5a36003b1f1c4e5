"""DAPD (Eq. 2), its stop rule, SNIP scoring of shared networks and of per-task copies, and the
merge of the pretraining copies."""

from __future__ import annotations

import pytest
import torch

from npf.algos.sac import SAC, SACConfig
from npf.config import validate
from npf.dapd import (
    DAPDController,
    attach_copy_masks,
    broadcast_state,
    copies_factory,
    copies_group_grad_norms,
    copies_snip_scores,
    merge_copies,
    shared_snip_scores,
)
from npf.online.agent import OnlineAgent
from npf.online.settings import online_settings, parse_variant
from npf.online_buffers import ChunkStore, TaskReplay
from npf.pathways import Pathways, snip_scores_all, topk_masks

torch.set_num_threads(1)

OBS, ACT = 5, 2
CFG = SACConfig(hidden=[12, 10], batch_size=8)


def batch(n_rows: int, seed: int, lead=()):
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, n_rows)
    return {
        "obs": torch.randn(*shape, OBS, generator=g),
        "act": torch.rand(*shape, ACT, generator=g) * 2 - 1,
        "rew": torch.randn(*shape, 1, generator=g),
        "next_obs": torch.randn(*shape, OBS, generator=g),
        "done": torch.zeros(*shape, 1),
    }


def scores_of(algo, b, seed):
    algo.generator.manual_seed(seed)
    return snip_scores_all(algo, b)


# ------------------------------------------------------------------------------------ Eq. 2
@pytest.mark.parametrize("M", [1, 3])
def test_mask_is_topk_of_mean_of_last_M_single_shot_scores(M):
    algo = SAC(OBS, ACT, CFG, seed=0)
    ctl = DAPDController(1, "dapd", window=M, interval=1, keep_ratio=0.1)
    history = []
    for k in range(5):
        s = scores_of(algo, batch(16, 100 + k), k)  # computed independently, one TD batch each
        history.append(s)
        masks = ctl.discover([s])[0] if k == 0 else ctl.rescore(0, s)
        last = history[-M:]
        for role in algo.roles:
            mean = {name: torch.stack([h[role][name] for h in last]).mean(0) for name in s[role]}
            avg = ctl.averager.mean(0)[role]
            for name in mean:
                assert torch.allclose(avg[name], mean[name], rtol=1e-6, atol=0)
            expected = topk_masks(mean, 0.1)
            for name in expected:
                assert torch.equal(masks[role][name], expected[name]), (role, name, k)
        with torch.no_grad():  # the weights move between re-scorings, as in training
            for p in algo.actor.parameters():
                p.mul_(1.01)
    assert ctl.rescores == [5]


def test_interval_counts_episodes_per_task():
    ctl = DAPDController(2, "dapd", window=2, interval=3, keep_ratio=0.5)
    s = {"actor": {"w": torch.rand(4, 4)}}
    ctl.discover([s, s])
    due = []
    for ep in range(7):
        ctl.observe(0, 0.0)
        if ep % 2 == 0:
            ctl.observe(1, 0.0)
        d = ctl.due([0, 1] if ep % 2 == 0 else [0])
        for n in d:
            ctl.rescore(n, s)
        due.append(d)
    assert due == [[], [], [0], [], [1], [0], []]


# ------------------------------------------------------------------------------------ stop rule
def test_stop_rule_freezes_for_good():
    ctl = DAPDController(2, "dapd", window=2, interval=1, keep_ratio=0.25, threshold=10.0)
    a = {"actor": {"w": torch.arange(16.0).reshape(4, 4)}}
    b = {"actor": {"w": torch.arange(16.0).flip(0).reshape(4, 4)}}
    m0 = ctl.discover([a, a])
    assert not ctl.observe(0, 9.0, step=100)
    assert ctl.due([0, 1]) == [0] and ctl.rescore(0, a) is not None
    assert ctl.observe(0, 10.0, step=200)  # reaches T_H: frozen
    assert ctl.frozen == (True, False) and ctl.frozen_at == [200, None]
    frozen_mask = ctl.averager.masks(0)
    for value in (-5.0, 3.0, 11.0):  # falling back below T_H never re-opens it
        ctl.observe(0, value, step=300)
        ctl.observe(1, 0.0)
        assert ctl.due([0, 1]) == [1]
        assert ctl.rescore(0, b) is None
        assert ctl.rescore(1, b) is not None
        assert ctl.frozen[0]
    assert torch.equal(ctl.averager.masks(0)["actor"]["w"], frozen_mask["actor"]["w"])
    assert ctl.rescores[0] == 2
    # task 1 kept being re-scored with b: its mask moved away from the first one
    assert not torch.equal(ctl.averager.masks(1)["actor"]["w"], m0[1]["actor"]["w"])
    # state round trip keeps the frozen flags and the windows
    other = DAPDController(2, "dapd", window=2, interval=1, keep_ratio=0.25, threshold=10.0)
    other.load_state_dict(ctl.state_dict())
    assert other.frozen == ctl.frozen and other.frozen_at == ctl.frozen_at
    assert torch.equal(other.averager.masks(1)["actor"]["w"], ctl.averager.masks(1)["actor"]["w"])


def test_stop_window_uses_the_mean_of_the_last_episodes():
    ctl = DAPDController(1, "dapd", window=1, keep_ratio=0.5, threshold=0.9, stop_window=3)
    ctl.discover([{"actor": {"w": torch.rand(2, 2)}}])
    assert not ctl.observe(0, 1.0) and not ctl.observe(0, 1.0)  # only 2 episodes so far
    assert not ctl.observe(0, 0.0)  # mean 2/3
    assert not ctl.observe(0, 1.0)  # mean 2/3
    assert not ctl.observe(0, 1.0)  # mean 2/3
    assert ctl.observe(0, 1.0)  # mean 1 ≥ 0.9


def test_no_threshold_never_freezes_and_single_shot_always_does():
    ctl = DAPDController(1, "dapd", window=1, keep_ratio=0.5, threshold=None)
    ctl.discover([{"actor": {"w": torch.rand(2, 2)}}])
    assert not ctl.observe(0, 1e9)
    ss = DAPDController(2, "single_shot", window=1, keep_ratio=0.5, threshold=None)
    ss.discover([{"actor": {"w": torch.rand(2, 2)}}] * 2)
    ss.observe(0, 0.0)
    assert ss.frozen == (True, True) and ss.due([0, 1]) == []
    assert ss.frozen_by == ["single_shot", "single_shot"] and ss.frozen_at == [None, None]


def test_frozen_by_tells_the_stop_rule_and_the_merge_apart():
    """Task 0 reaches T_H at step 300, then the merge freezes the rest: task 0 stays frozen by the
    threshold (with its step), tasks 1 and 2 by the merge (no stop-rule step); a state round trip,
    and a checkpoint written before ``frozen_by`` existed, give the same reasons."""
    ctl = DAPDController(3, "dapd", window=1, keep_ratio=0.5, threshold=5.0)
    ctl.discover([{"actor": {"w": torch.rand(2, 2)}}] * 3)
    assert ctl.frozen_by == [None, None, None]
    ctl.observe(0, 4.0, step=150)
    ctl.observe(0, 6.0, step=300)
    ctl.observe(1, 4.0, step=300)
    assert ctl.frozen_by == ["threshold", None, None] and ctl.frozen_at == [300, None, None]
    ctl.freeze_all("merge")
    assert ctl.frozen == (True, True, True)
    assert ctl.frozen_by == ["threshold", "merge", "merge"] and ctl.frozen_at == [300, None, None]
    state = ctl.state_dict()
    for s in (state, {k: v for k, v in state.items() if k != "frozen_by"}):
        other = DAPDController(3, "dapd", window=1, keep_ratio=0.5, threshold=5.0)
        other.load_state_dict(s)
        assert other.frozen_by == ctl.frozen_by and other.frozen_at == ctl.frozen_at


def test_variant_names():
    assert parse_variant("single-shot", 10) == {"method": "sac-npf", "mode": "single_shot", "M": 1, "threshold": True}
    assert parse_variant("dapd-M5", 10)["M"] == 5
    assert parse_variant("dapd-nothreshold", 10) == {"method": "sac-npf", "mode": "dapd", "M": 10, "threshold": False}
    assert parse_variant("dapd-M10-nothreshold", 7)["M"] == 10
    assert parse_variant("dense", 10)["method"] == "sac"
    with pytest.raises(ValueError, match="unknown DAPD ablation variant"):
        parse_variant("dapd-X", 10)


# ------------------------------------------------------------------------------------ scoring
def test_shared_scores_use_the_task_temperature_and_dense_weights():
    n = 3
    algo = SAC(OBS, ACT, CFG, num_temperatures=n, seed=1)
    with torch.no_grad():
        algo.log_alpha.copy_(torch.tensor([-2.0, 0.0, 1.5]).reshape(n, 1, 1))
    b = batch(16, 7)
    # reference: a single-temperature SAC with the same weights and task 2's temperature
    ref = SAC(OBS, ACT, CFG, seed=1)
    for role, net in algo.networks().items():
        ref.networks()[role].load_state_dict(net.state_dict())
    ref.critic_target.load_state_dict(algo.critic_target.state_dict())
    with torch.no_grad():
        ref.log_alpha.fill_(1.5)
    algo.generator.manual_seed(5)
    ref.generator.manual_seed(5)
    got = shared_snip_scores(algo, b, 2)
    want = snip_scores_all(ref, b)
    for role in want:
        for name in want[role]:
            assert torch.allclose(got[role][name], want[role][name], atol=1e-7)
    assert algo.log_alpha.shape == (n, 1, 1)  # restored


def test_copy_scores_equal_per_task_scores(monkeypatch):
    """All N copies scored in one pass = each task scored alone at that copy's weights (up to the
    1/N of the mean over tasks; the policy noise is switched off so the draws agree)."""
    n = 3
    b = batch(12, 3, lead=(n,))
    monkeypatch.setattr(
        torch, "randn", lambda shape, **kw: torch.zeros(shape, dtype=kw.get("dtype"), device=kw.get("device"))
    )
    shared = SAC(OBS, ACT, CFG, num_temperatures=n, seed=2)
    copies = SAC(OBS, ACT, CFG, factory=copies_factory(n), num_temperatures=n, seed=2)
    for role, net in shared.networks().items():
        copies.networks()[role].load_state_dict(broadcast_state(net.state_dict(), n))
    copies.critic_target.load_state_dict(broadcast_state(shared.critic_target.state_dict(), n))
    with torch.no_grad():  # make the copies differ: copy n's weights scaled by (1 + n/10)
        for p in list(copies.actor.parameters()) + list(copies.critic.parameters()):
            p.mul_(torch.tensor([1.0, 1.1, 1.2]).reshape(n, *([1] * (p.dim() - 1))))
        copies.critic_target.load_state_dict(copies.critic.state_dict())
        copies.log_alpha.copy_(torch.tensor([-1.0, 0.0, 0.5]).reshape(n, 1, 1))
    ones = {
        k: torch.ones(n, *p.shape[1:], dtype=torch.bool)
        for k, p in copies.actor.named_parameters()
        if k.endswith("weight")
    }
    attach_copy_masks(copies, Pathways({"actor": ones}))  # scoring must run densely anyway
    got = copies_snip_scores(copies, b)
    for t in range(n):
        single = SAC(OBS, ACT, CFG, seed=2)
        for role, net in copies.networks().items():
            single.networks()[role].load_state_dict({k: v[t] for k, v in net.state_dict().items()})
        single.critic_target.load_state_dict({k: v[t] for k, v in copies.critic_target.state_dict().items()})
        with torch.no_grad():
            single.log_alpha.fill_(float(copies.log_alpha[t]))
        want = snip_scores_all(single, {k: v[t] for k, v in b.items()})
        for role in want:
            for name in want[role]:
                assert torch.allclose(got[t][role][name] * n, want[role][name], rtol=1e-4, atol=1e-7), (t, role, name)


# ------------------------------------------------------------------------------------ merge
def test_merge_rule_on_hand_made_masks_and_weights():
    # 3 tasks, one 2×3 weight: entries in 0, 1, 2 and 3 pathways
    copies = {
        "w": torch.tensor(
            [
                [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
                [[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]],
                [[100.0, 200.0, 300.0], [400.0, 500.0, 600.0]],
            ]
        ),
        "b": torch.tensor([[1.0, 2.0], [3.0, 4.0], [8.0, 0.0]]),
    }
    init = {"w": torch.full((2, 3), -7.0), "b": torch.zeros(2)}
    m = torch.tensor([[[0, 1, 1], [1, 0, 1]], [[0, 0, 1], [1, 1, 0]], [[0, 0, 1], [0, 0, 0]]], dtype=torch.bool)
    out = merge_copies(copies, init, {"w": m})
    expected = torch.tensor([[-7.0, 2.0, (3 + 30 + 300) / 3], [(4 + 40) / 2, 50.0, 6.0]])
    assert torch.allclose(out["w"], expected)
    assert out["w"][0, 0] == -7.0  # in no pathway: initial value, exactly
    assert out["w"][0, 1] == 2.0 and out["w"][1, 1] == 50.0 and out["w"][1, 2] == 6.0  # one pathway: exact
    assert torch.allclose(out["b"], torch.tensor([4.0, 2.0]))  # unmasked (used by all): mean of all copies


def test_agent_merge_end_of_pretraining():
    cfg = validate(
        {"online": {"pretrain_steps": 2, "batch_size": 8, "sac": {"hidden": [12, 10]}}, "pathways": {"keep_ratio": 0.3}}
    )
    st = online_settings(cfg)
    n = 2
    agent = OnlineAgent("sac-npf", n, OBS, ACT, st, torch.device("cpu"), seed=0, dapd_threshold=None)
    init = {k: v.clone() for k, v in agent.shared.actor.state_dict().items()}
    td = TaskReplay(n, 16, OBS, ACT)
    b = batch(16, 0, lead=(n,))
    td.add(obs=b["obs"], act=b["act"], rew=b["rew"][..., 0], next_obs=b["next_obs"], done=b["done"][..., 0])
    agent.discover(td)
    agent.update(batch(8, 1, lead=(n,)))
    agent.update(batch(8, 2, lead=(n,)))
    copies = {k: v.clone() for k, v in agent.copies.actor.state_dict().items()}
    gn = copies_group_grad_norms(agent.copies.actor, agent.pathways.masks["actor"])
    assert gn.shape == (n,) and (gn > 0).all()
    assert agent.maybe_merge(step=42) and agent.phase == "shared" and agent.copies is None
    assert (agent.merged_at, agent.merged_at_step, agent.dapd.frozen_by) == (2, 42, ["merge", "merge"])
    masks = agent.pathways.masks["actor"]
    merged = agent.shared.actor.state_dict()
    for name, m in masks.items():
        count = m.sum(0)
        c = copies[name]
        assert torch.equal(merged[name][count == 0], init[name][count == 0])
        for t in range(n):
            only = m[t] & (count == 1)
            assert torch.equal(merged[name][only], c[t][only])
        both = count == 2
        assert torch.allclose(merged[name][both], c[:, both].mean(0))
        assert not torch.equal(merged[name], init[name])
    assert agent.dapd.frozen == (True, True)
    # the merged network acts through the frozen pathways on [N, E, obs]
    a = agent.act(torch.randn(n, 3, OBS), deterministic=True)
    assert a.shape == (n, 3, ACT)


# ------------------------------------------------------------------------------------ buffers
def test_chunked_replay_rebuilds_the_ring_exactly(tmp_path):
    n, cap = 2, 7
    buf = TaskReplay(n, cap, 3, 1)
    store = ChunkStore(tmp_path)
    names = []
    for k, rows in enumerate([3, 5, 2, 11, 4]):  # wraps, and one add longer than the capacity
        v = torch.arange(rows * n, dtype=torch.float32).reshape(n, rows) + 100 * k
        buf.add(
            obs=v[..., None].expand(n, rows, 3),
            act=v[..., None],
            rew=v,
            next_obs=v[..., None].expand(n, rows, 3),
            done=torch.zeros(n, rows),
        )
        names = store.save(buf)
        store.prune(names)
        other = TaskReplay(n, cap, 3, 1)
        ChunkStore(tmp_path).restore(other, names)
        assert other.total == buf.total
        for key in buf.data:
            assert torch.equal(other.data[key], buf.data[key])
    assert len(list(tmp_path.iterdir())) == len(names) <= 2
    s = buf.state_dict()
    again = TaskReplay(n, cap, 3, 1)
    again.load_state_dict(s)
    assert all(torch.equal(again.data[k], buf.data[k]) for k in buf.data)
    g = torch.Generator().manual_seed(0)
    smp = buf.sample(4, g)
    assert smp["obs"].shape == (n, 4, 3)
