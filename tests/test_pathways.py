"""Pathways: SNIP saliency, global top-k masks, attach/detach, overlap, persistence, DAPD window.

Defines ``TinyAC``, a small deterministic actor-critic following the Algorithm contract (two
roles, target networks for both), reused by tests/test_multitask.py.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import npf.pathways.backends as pathways_mod
from npf.algos.base import Algorithm
from npf.dapd import ScoreAverager
from npf.nets import MaskedLinear, mlp, soft_update
from npf.pathways import (
    Pathways,
    maskable_parameters,
    num_kept,
    snip_scores,
    snip_scores_all,
    topk_masks,
)

torch.set_num_threads(1)
DT = torch.float64


# --------------------------------------------------------------------------------------------
# A tiny algorithm following the contract (DDPG-like, deterministic)
# --------------------------------------------------------------------------------------------
class TinyAC(Algorithm):
    roles = ("actor", "critic")

    def __init__(
        self, obs_dim=3, act_dim=2, hidden=(12, 10), factory=mlp, lr=1e-2, gamma=0.9, tau=0.2, seed=0, dtype=DT
    ):
        torch.manual_seed(seed)
        self.actor = factory(obs_dim, act_dim, list(hidden), "tanh", "tanh").to(dtype)
        self.critic = factory(obs_dim + act_dim, 1, list(hidden), "tanh").to(dtype)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr)
        self.gamma, self.tau = gamma, tau

    def networks(self):
        return {"actor": self.actor, "critic": self.critic}

    def targets(self):
        return {"actor": self.actor_target, "critic": self.critic_target}

    def critic_loss(self, b):
        with torch.no_grad():
            na = self.actor_target(b["next_obs"])
            y = b["rew"] + self.gamma * (1 - b["done"]) * self.critic_target(torch.cat([b["next_obs"], na], -1))
        q = self.critic(torch.cat([b["obs"], b["act"]], -1))
        return ((q - y) ** 2).mean() * self.loss_scale

    def actor_loss(self, b):
        return -self.critic(torch.cat([b["obs"], self.actor(b["obs"])], -1)).mean() * self.loss_scale

    def losses(self, b):
        return {"critic": self.critic_loss(b), "actor": self.actor_loss(b)}

    def soft_update_targets(self):
        soft_update(self.critic_target, self.critic, self.tau)
        soft_update(self.actor_target, self.actor, self.tau)

    def update(self, b):
        lc = self.critic_loss(b)
        self.critic_opt.zero_grad()
        lc.backward()
        self.critic_opt.step()
        la = self.actor_loss(b)
        self.actor_opt.zero_grad()
        la.backward()
        self.actor_opt.step()
        self.soft_update_targets()
        return {"critic_loss": float(lc.detach()), "actor_loss": float(la.detach())}

    @torch.no_grad()
    def act(self, obs, deterministic=True):
        return self.actor(obs)


def make_batch(seed, B=16, obs_dim=3, act_dim=2, lead=(), dtype=DT):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*lead, B, *s, generator=g, dtype=dtype)
    return {
        "obs": r(obs_dim),
        "act": torch.tanh(r(act_dim)),
        "rew": r(1),
        "next_obs": r(obs_dim),
        "done": (torch.rand(*lead, B, 1, generator=g) < 0.2).to(dtype),
    }


#: CPU execution plans of the fused backend (see npf.pathways.backends.LayerPlan): thresholds
#: (CPU_BMM_MAX_ELEMENTS, CPU_SPARSE_MAX_DENSITY). All must give the same numbers.
PLANS = {
    "bmm": (10**12, 0.1),  # one bmm per layer
    "loop": (0, 0.0),  # task by task, dense masked matmuls
    "sparse": (0, 1.0),  # task by task, CSR kernels for every task
    "mixed": (0, 0.1),  # task by task, CSR only for tasks with density ≤ 10 %
}


def set_plan(monkeypatch, plan):
    bmm_max, sparse_max = PLANS[plan]
    monkeypatch.setattr(pathways_mod, "CPU_BMM_MAX_ELEMENTS", bmm_max)
    monkeypatch.setattr(pathways_mod, "CPU_SPARSE_MAX_DENSITY", sparse_max)


class Regress(Algorithm):
    """One-role algorithm: MSE regression of a plain MLP (for the gate formulation of SNIP)."""

    roles = ("net",)

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.net = mlp(4, 3, [7, 5], "tanh").to(DT)

    def networks(self):
        return {"net": self.net}

    def losses(self, b):
        return {"net": F.mse_loss(self.net(b["x"]), b["y"])}


# --------------------------------------------------------------------------------------------
# SNIP
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["critic", "actor"])
def test_snip_equals_central_finite_differences(role):
    algo = TinyAC(seed=1)
    batch = make_batch(0)
    scores = snip_scores(algo, role, batch)
    net = algo.networks()[role]
    weights = maskable_parameters(net)
    assert list(scores) == list(weights) and all(k.endswith("weight") for k in scores)
    eps = 1e-6
    for name, p in weights.items():
        fd = torch.zeros_like(p)
        for idx in np.ndindex(*p.shape):
            orig = p.data[idx].item()
            vals = []
            for s in (1 + eps, 1 - eps):  # θ_q → θ_q(1 ± ε): δ_q has θ_q at q
                p.data[idx] = orig * s
                with torch.no_grad():
                    vals.append(algo.losses(batch)[role].item())
            p.data[idx] = orig
            fd[idx] = abs(vals[0] - vals[1]) / (2 * eps)
        assert torch.allclose(scores[name], fd, rtol=1e-5, atol=1e-9), name


def test_snip_equals_multiplicative_gate_gradient():
    algo = Regress(seed=3)
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.randn(32, 4, generator=g, dtype=DT), "y": torch.randn(32, 3, generator=g, dtype=DT)}
    scores = snip_scores(algo, "net", batch)
    params = dict(algo.net.named_parameters())
    gates = {k: torch.ones_like(params[k], requires_grad=True) for k in scores}
    out = functional_call(algo.net, {k: (p * gates[k] if k in gates else p) for k, p in params.items()}, (batch["x"],))
    grads = torch.autograd.grad(F.mse_loss(out, batch["y"]), list(gates.values()))
    for (k, _), gk in zip(gates.items(), grads):
        assert torch.allclose(scores[k], gk.abs(), rtol=1e-12, atol=1e-15), k


def test_snip_touches_no_grad_no_optimizer_and_restores_masks():
    algo = TinyAC(seed=2)
    batches = [make_batch(s) for s in range(3)]
    sentinel = {p: torch.full_like(p, 7.0) for net in algo.networks().values() for p in net.parameters()}
    for p, s in sentinel.items():
        p.grad = s.clone()
    state_before = copy.deepcopy(algo.critic_opt.state_dict())
    dense = snip_scores_all(algo, batches[0])
    pw = Pathways.discover(algo, batches, keep_ratio=0.3)
    pw.attach(algo)
    with_masks = snip_scores_all(algo, batches[0])  # masks are removed for the call ...
    for role in dense:
        for k in dense[role]:
            assert torch.equal(dense[role][k], with_masks[role][k])
    layer = algo.critic[0]
    assert layer.weight_mask is not None and layer.pathway_forward is not None  # ... and restored
    assert algo.critic_target[0].weight_mask is not None
    for p, s in sentinel.items():
        assert torch.equal(p.grad, s)
    assert algo.critic_opt.state_dict() == state_before


def test_snip_scores_biases_only_when_asked():
    algo = TinyAC()
    b = make_batch(0)
    plain = snip_scores(algo, "critic", b)
    with_bias = snip_scores(algo, "critic", b, mask_bias=True)
    assert not any(k.endswith("bias") for k in plain)
    assert {k for k in with_bias if k.endswith("bias")} == {"0.bias", "2.bias", "4.bias"}
    for k in plain:
        assert torch.equal(plain[k], with_bias[k])
    with pytest.raises(ValueError, match="role 'vae'"):
        snip_scores(algo, "vae", b)


# --------------------------------------------------------------------------------------------
# top-k
# --------------------------------------------------------------------------------------------
def test_topk_keeps_exactly_k_with_deterministic_ties():
    scores = {"a": torch.ones(3, 4), "b": torch.ones(5)}
    m = topk_masks(scores, 0.3)  # k = ceil(0.3 · 17) = 6: the first 6 flat indices
    assert m["a"].sum() + m["b"].sum() == 6
    assert m["a"].reshape(-1).tolist() == [True] * 6 + [False] * 6 and not m["b"].any()
    # ties at the threshold only: 2 clear winners, then 4 of the tied 0.5 values by lowest index
    s = {"a": torch.tensor([0.5, 0.9, 0.5, 0.1]), "b": torch.tensor([0.5, 0.5, 0.5, 2.0, 0.5])}
    m = topk_masks(s, 6 / 9)
    assert m["a"].tolist() == [True, True, True, False]
    assert m["b"].tolist() == [True, True, False, True, False]
    assert all(torch.equal(x, y) for x, y in zip(m.values(), topk_masks(s, 6 / 9).values()))


def test_topk_is_global_across_layers_not_per_layer():
    g = torch.Generator().manual_seed(0)
    scores = {"0.weight": 10 + torch.rand(20, 10, generator=g), "2.weight": torch.rand(30, 20, generator=g)}
    m = topk_masks(scores, 0.1)  # k = 80 < 200: all from the dominant layer
    assert int(m["0.weight"].sum()) == 80 and int(m["2.weight"].sum()) == 0
    top80 = torch.topk(scores["0.weight"].reshape(-1), 80).indices
    assert set(top80.tolist()) == set(torch.nonzero(m["0.weight"].reshape(-1)).flatten().tolist())


@pytest.mark.parametrize(
    "ratio,total,k", [(0.05, 30, 2), (0.07, 100, 7), (0.05, 1_092_608, 54_631), (1.0, 13, 13), (1e-9, 10, 1)]
)
def test_num_kept_is_ceil(ratio, total, k):
    assert num_kept(ratio, total) == k
    m = topk_masks({"w": torch.rand(total)}, ratio) if total < 10_000 else None
    if m is not None:
        assert int(m["w"].sum()) == k


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "x", True])
def test_keep_ratio_validated(bad):
    with pytest.raises(ValueError, match="keep_ratio"):
        topk_masks({"w": torch.rand(4)}, bad)


def test_topk_rejects_non_finite():
    with pytest.raises(ValueError, match="'b'"):
        topk_masks({"a": torch.rand(3), "b": torch.tensor([1.0, float("nan")])}, 0.5)


# --------------------------------------------------------------------------------------------
# Pathways
# --------------------------------------------------------------------------------------------
def test_discover_shapes_density_and_task_specificity():
    algo = TinyAC(seed=4)
    batches = [make_batch(s) for s in range(4)]
    pw = Pathways.discover(algo, batches, keep_ratio=0.1)
    assert pw.num_tasks == 4 and pw.roles == ("actor", "critic")
    for role, net in algo.networks().items():
        params = maskable_parameters(net)
        assert list(pw.masks[role]) == list(params)
        total = sum(p.numel() for p in params.values())
        for k, p in params.items():
            assert pw.masks[role][k].shape == (4, *p.shape) and pw.masks[role][k].dtype == torch.bool
        np.testing.assert_allclose(pw.density(role), num_kept(0.1, total) / total)
        # single-task SNIP on the same batch gives the same mask
        m1 = topk_masks(snip_scores(algo, role, batches[2]), 0.1)
        assert all(torch.equal(m1[k], pw.masks[role][k][2]) for k in m1)
    crit = pw._flat("critic")
    assert not torch.equal(crit[0], crit[1])  # different data → different pathways
    assert pw.union_density("critic") >= pw.density("critic").max()


def test_attach_detach_sets_networks_and_targets():
    algo = TinyAC()
    pw = Pathways.discover(algo, [make_batch(s) for s in range(3)], keep_ratio=0.2)
    pw.attach(algo)
    for role in algo.roles:
        for net in (algo.networks()[role], algo.targets()[role]):
            layers = [m for m in net.modules() if isinstance(m, MaskedLinear)]
            for i, layer in zip((0, 2, 4), layers):
                assert torch.equal(layer.weight_mask, pw.masks[role][f"{i}.weight"].to(DT))
    obs = torch.randn(3, 5, 3, dtype=DT)
    assert algo.act(obs).shape == (3, 5, 2)
    with pytest.raises(ValueError, match="tasks"):
        algo.act(torch.randn(2, 5, 3, dtype=DT))
    Pathways.detach(algo)
    assert all(
        m.weight_mask is None and m.pathway_forward is None
        for net in (algo.actor, algo.actor_target, algo.critic)
        for m in net.modules()
        if isinstance(m, MaskedLinear)
    )
    assert algo.act(torch.randn(5, 3, dtype=DT)).shape == (5, 2)
    with pytest.raises(ValueError, match="role 'vae'"):
        Pathways({"vae": {"0.weight": torch.ones(3, 12, 3, dtype=torch.bool)}}).attach(algo)
    with pytest.raises(ValueError, match="shape"):
        Pathways({**pw.masks, "actor": {k: torch.ones(3, 2, 2, dtype=torch.bool) for k in pw.masks["actor"]}}).attach(
            algo
        )
    with pytest.raises(ValueError, match="no masks for network 'critic'"):
        Pathways({"actor": pw.masks["actor"]}).attach(algo)


@pytest.mark.parametrize("mask_bias", [False, True])
def test_fused_backend_matches_autograd_backend(mask_bias):
    algo = TinyAC(seed=5)
    N = 3
    pw = Pathways.discover(algo, [make_batch(s) for s in range(N)], keep_ratio=0.3, mask_bias=mask_bias)
    batch = make_batch(10, lead=(N,))
    res = {}
    for backend in ("autograd", "fused"):
        pw.attach(algo, backend=backend)
        out = {}
        for role in ("critic", "actor"):
            loss = algo.losses(batch)[role]
            params = list(algo.networks()[role].parameters())
            out[role] = (loss.detach(), torch.autograd.grad(loss, params))
        res[backend] = out
    for role in ("critic", "actor"):
        assert torch.allclose(res["fused"][role][0], res["autograd"][role][0], rtol=0, atol=1e-13)
        for a, b in zip(res["fused"][role][1], res["autograd"][role][1]):
            assert torch.allclose(a, b, rtol=0, atol=1e-13)
    # input gradients too (extra leading dims between task axis and features)
    layer = algo.critic[2]
    x = torch.randn(N, 2, 4, 12, dtype=DT, requires_grad=True)
    grads = {}
    for backend in ("autograd", "fused"):
        pw.attach(algo, backend=backend)
        y = layer(x)
        grads[backend] = torch.autograd.grad((y**2).sum(), [x, layer.weight, layer.bias])
    for a, b in zip(grads["fused"], grads["autograd"]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def varied_masks(algo, densities=(0.0, 0.05, 0.5), mask_bias=False, seed=0):
    """Hand-made pathways: task n keeps ~densities[n] of every layer (0.0: an empty pathway)."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for role, net in algo.networks().items():
        masks[role] = {}
        for k, p in maskable_parameters(net, mask_bias).items():
            u = torch.rand(len(densities), *p.shape, generator=g)
            d = torch.tensor(densities).reshape(-1, *([1] * p.dim()))
            masks[role][k] = u < d
    return Pathways(masks, mask_bias=mask_bias)


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize("mask_bias", [False, True])
def test_fused_plans_match_autograd_backend(plan, mask_bias, monkeypatch):
    set_plan(monkeypatch, plan)
    algo = TinyAC(seed=6, hidden=(24, 20))
    pw = varied_masks(algo, mask_bias=mask_bias)
    if plan == "mixed":
        pw.attach(algo)
        algo.critic(torch.zeros(3, 1, 5, dtype=DT))
        layer_plan = algo.critic[2].pathway_forward.plan()
        assert layer_plan.mode == "loop" and [p is not None for p in layer_plan.sparse] == [True, True, False]
    batch = make_batch(11, lead=(3,))
    res = {}
    for backend in ("autograd", "fused"):
        pw.attach(algo, backend=backend)
        res[backend] = {}
        for role in ("critic", "actor"):
            loss = algo.losses(batch)[role]
            res[backend][role] = (loss.detach(), torch.autograd.grad(loss, list(algo.networks()[role].parameters())))
    for role in ("critic", "actor"):
        assert torch.allclose(res["fused"][role][0], res["autograd"][role][0], rtol=0, atol=1e-13)
        for a, b in zip(res["fused"][role][1], res["autograd"][role][1]):
            assert torch.allclose(a, b, rtol=0, atol=1e-13)
    layer = algo.critic[2]
    x = torch.randn(3, 2, 4, 24, dtype=DT, requires_grad=True)
    out = {}
    for backend in ("autograd", "fused"):
        pw.attach(algo, backend=backend)
        y = layer(x)
        out[backend] = (y.detach(), *torch.autograd.grad((y**3).sum(), [x, layer.weight, layer.bias]))
    for a, b in zip(out["fused"], out["autograd"]):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # no gradient requested for the input (first layer) and none for the weight (frozen)
    layer.weight.requires_grad_(False)
    pw.attach(algo)
    (gx,) = torch.autograd.grad(layer(x).sum(), [x])
    pw.attach(algo, backend="autograd")
    assert torch.allclose(gx, torch.autograd.grad(layer(x).sum(), [x])[0], rtol=0, atol=1e-12)


def test_plan_rebuilt_when_mask_replaced_and_after_deepcopy(monkeypatch):
    set_plan(monkeypatch, "mixed")  # plans hold CSR structures, which must follow the mask
    algo = TinyAC(hidden=(24, 20))
    pw1, pw2 = varied_masks(algo, seed=1), varied_masks(algo, seed=2)
    x = torch.randn(3, 4, 3, dtype=DT)
    pw2.attach(algo, backend="autograd")
    ref = algo.actor(x)
    pw1.attach(algo)
    before = algo.actor(x)
    first = algo.actor[2].pathway_forward.plan()
    for i in (0, 2, 4):  # masks replaced behind the hooks' back: the hooks stay, plans follow
        algo.actor[i].set_masks(pw2.masks["actor"][f"{i}.weight"])
    assert torch.allclose(algo.actor(x), ref, rtol=0, atol=1e-14)
    assert algo.actor[2].pathway_forward.plan() is not first
    twin = copy.deepcopy(algo)
    assert twin.actor[2].pathway_forward.layer is twin.actor[2]
    with torch.no_grad():
        for p in twin.actor.parameters():
            p.add_(0.5)
    assert not torch.allclose(twin.actor(x), ref)
    assert torch.allclose(algo.actor(x), ref, rtol=0, atol=1e-14) and not torch.allclose(before, ref)


def test_subset_and_task_view():
    g = torch.Generator().manual_seed(0)
    masks = {"r": {"w": torch.rand(4, 3, 5, generator=g) < 0.5}}
    pw = Pathways(masks, keep_ratio=0.5)
    v = pw.task_view(2)
    assert v.num_tasks == 1 and torch.equal(v.masks["r"]["w"][0], masks["r"]["w"][2])
    s = pw.subset([3, 1])
    assert torch.equal(s.masks["r"]["w"], masks["r"]["w"][[3, 1]])
    with pytest.raises(IndexError):
        pw.subset([4])
    new = {"r": {"w": torch.zeros(3, 5, dtype=torch.bool)}}
    pw.set_task_masks(1, new)
    assert not pw.masks["r"]["w"][1].any() and torch.equal(pw.masks["r"]["w"][0], masks["r"]["w"][0])


def test_overlap_matrix_hand_made_three_tasks():
    # Two tensors of one network; 12 entries in all.
    t0 = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1]  # |m0| = 5
    t1 = [0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # |m1| = 4
    t2 = [1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0]  # |m2| = 4
    f = torch.tensor([t0, t1, t2], dtype=torch.bool)
    pw = Pathways({"actor": {"0.weight": f[:, :6].reshape(3, 2, 3), "2.weight": f[:, 6:].reshape(3, 3, 2)}})
    # intersections: |0∧1| = 2 (idx 2, 3), |0∧2| = 1 (idx 0), |1∧2| = 1 (idx 5)
    # unique: task0 {1, 11} = 2, task1 {4} = 1, task2 {6, 7} = 2
    expected = 100 * np.array([[2 / 5, 2 / 5, 1 / 5], [2 / 4, 1 / 4, 1 / 4], [1 / 4, 1 / 4, 2 / 4]])
    np.testing.assert_allclose(pw.overlap_matrix("actor"), expected, rtol=1e-12)
    np.testing.assert_allclose(pw.density("actor"), [5 / 12, 4 / 12, 4 / 12])
    grads = {"0.weight": torch.arange(6.0, dtype=DT).reshape(2, 3), "2.weight": torch.ones(3, 2, dtype=DT)}
    flat_g = torch.cat([grads["0.weight"].reshape(-1), grads["2.weight"].reshape(-1)])
    ref = [float((flat_g[f[i]] ** 2).sum().sqrt()) for i in range(3)]
    np.testing.assert_allclose(pw.group_grad_norms("actor", grads), ref, rtol=1e-12)
    u = pw.union_mask("actor")
    assert u["0.weight"].reshape(-1).tolist() == [True] * 6
    assert u["2.weight"].reshape(-1).tolist() == [True, True, False, False, False, True]
    assert pw.union_density("actor") == pytest.approx(9 / 12)


def test_state_round_trip_is_compact_and_weights_only_loadable():
    algo = TinyAC()
    pw = Pathways.discover(algo, [make_batch(s) for s in range(3)], keep_ratio=0.15, mask_bias=True)
    buf = io.BytesIO()
    torch.save(pw.state_dict(), buf)
    buf.seek(0)
    back = Pathways.from_state_dict(torch.load(buf, weights_only=True))
    assert back.equals(pw) and back.keep_ratio == 0.15 and back.mask_bias
    entry = pw.state_dict()["masks"]["critic"]["0.weight"]
    assert entry["bits"].dtype == torch.uint8 and entry["bits"].numel() == math.ceil(3 * 12 * 5 / 8)
    with pytest.raises(ValueError, match="format"):
        Pathways.from_state_dict({"masks": {}})


def test_truncated_bit_array_is_an_error_not_zero_padding():
    pw = Pathways.discover(TinyAC(), [make_batch(s) for s in range(3)], keep_ratio=0.15)
    state = pw.state_dict()
    entry = state["masks"]["critic"]["2.weight"]
    need = entry["bits"].numel()
    for bad in (entry["bits"][:-1], torch.cat([entry["bits"], entry["bits"][:1]]), entry["bits"].to(torch.int32)):
        state["masks"]["critic"]["2.weight"] = {**entry, "bits": bad}
        with pytest.raises(ValueError, match=rf"mask critic/2.weight: bit array holds .* needs {need} uint8"):
            Pathways.from_state_dict(state)


def test_check_names_a_task_with_an_empty_pathway_and_a_network_without_masks():
    algo = TinyAC()
    pw = Pathways.discover(algo, [make_batch(s) for s in range(3)], keep_ratio=0.15)
    pw.check(algo, ["a", "b", "c"])  # SNIP's top-k keeps ≥ 1 weight of every network for every task
    pw.masks["critic"] = {k: m.clone() for k, m in pw.masks["critic"].items()}
    for m in pw.masks["critic"].values():
        m[1] = False  # task "b": no critic weight at all; its actor pathway is intact
    with pytest.raises(ValueError, match="task 'b' has an empty pathway through network 'critic'"):
        pw.check(algo, ["a", "b", "c"])
    with pytest.raises(ValueError, match="task 1 has an empty pathway"):
        Pathways.from_state_dict(pw.state_dict()).check()
    with pytest.raises(ValueError, match=r"no masks for network 'critic' of TinyAC \(masks cover \['actor'\]\)"):
        Pathways({"actor": pw.masks["actor"]}).check(algo)


# --------------------------------------------------------------------------------------------
# DAPD score window
# --------------------------------------------------------------------------------------------
def test_score_averager_mean_of_last_m_and_topk_of_mean():
    g = torch.Generator().manual_seed(0)
    M = 3
    av = ScoreAverager(num_tasks=2, window=M, keep_ratio=0.25)
    pushed = []
    for _i in range(5):
        s = {
            "actor": {"0.weight": torch.rand(4, 3, generator=g), "2.weight": torch.rand(2, 4, generator=g)},
            "critic": {"0.weight": torch.rand(5, 5, generator=g)},
        }
        pushed.append(s)
        assert av.push(0, s)
    assert av.count(0) == M and av.count(1) == 0
    mean = av.mean(0)
    for role in ("actor", "critic"):
        for k in pushed[0][role]:
            ref = sum(p[role][k] for p in pushed[-M:]) / M
            assert torch.allclose(mean[role][k], ref, rtol=1e-6, atol=1e-7)
    masks = av.masks(0)
    for role in ("actor", "critic"):
        summed = {k: sum(p[role][k] for p in pushed[-M:]) for k in pushed[0][role]}  # Eq. 2: the sum
        ref = topk_masks(summed, 0.25)
        assert all(torch.equal(masks[role][k], ref[k]) for k in ref)
    # pushed tensors are copied: mutating the caller's dict does not change the window
    pushed[-1]["critic"]["0.weight"].add_(100.0)
    assert torch.allclose(av.mean(0)["critic"]["0.weight"], mean["critic"]["0.weight"])
    with pytest.raises(ValueError, match="task 1"):
        av.mean(1)
    flat = ScoreAverager(1, window=2, keep_ratio=0.5)
    flat.push(0, {"w": torch.tensor([1.0, 0.0])})
    flat.push(0, {"w": torch.tensor([0.0, 3.0])})
    assert flat.masks(0)["w"].tolist() == [False, True]


def test_score_averager_freeze_never_reopens():
    av = ScoreAverager(num_tasks=3, window=2, keep_ratio=0.5)
    s = {"w": torch.tensor([1.0, 2.0])}
    av.push(1, s)
    assert av.maybe_freeze(1, value=1500.0, threshold=2000.0) is False
    assert av.maybe_freeze(1, value=2100.0, threshold=2000.0) is True
    assert av.maybe_freeze(1, value=10.0, threshold=2000.0) is True  # a later bad return: still frozen
    assert av.frozen == (False, True, False)
    assert av.push(1, {"w": torch.tensor([9.0, 0.0])}) is False
    assert av.count(1) == 1 and av.masks(1)["w"].tolist() == [False, True]
    av.freeze(0)
    state = av.state_dict()
    av2 = ScoreAverager(3, window=2, keep_ratio=0.5)
    av2.load_state_dict(state)
    assert av2.frozen == (True, True, False) and av2.count(1) == 1
    with pytest.raises(ValueError, match="window"):
        ScoreAverager(3, window=0)
