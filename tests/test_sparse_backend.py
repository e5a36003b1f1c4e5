"""Pathway backends ``dense`` / ``sparse`` / ``auto`` against an independent masked-dense reference.

The reference never touches :mod:`npf.pathways`' kernels: task by task it computes
``act(x[n] @ (W ⊙ m[n])ᵀ + b ⊙ bm[n])`` with plain autograd on copies of the parameters.
Tolerances: 1e-5 in float32, 1e-10 in float64. No test needs a GPU.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import npf.pathways.backends as P
from npf.multitask import MultitaskLearner
from npf.nets import MLP, MaskedLinear, soft_update
from npf.pathways import BACKENDS, Pathways, choose_plan, maskable_parameters, resolve_backend

try:
    from test_pathways import TinyAC, make_batch
except ImportError:  # tests/ imported as a package
    from tests.test_pathways import TinyAC, make_batch

torch.set_num_threads(1)
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
NPF_BACKENDS = ("dense", "sparse", "auto")


def close(a, b, dtype):
    tol = TOL[dtype]
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=tol, atol=tol), float((a - b).abs().max())


def awkward_masks(n, out_f, in_f, seed=0, density=0.3):
    """Random masks with an empty row and an empty column in every task, one task with an empty
    pathway through the layer (all-zero mask) and one with a full one."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(n, out_f, in_f, generator=g) < density
    m[:, 1, :] = False  # empty output row
    m[:, :, 2] = False  # empty input column
    m[0] = False  # task 0: fully masked layer
    if n > 2:
        m[2] = True  # task 2: dense pathway (a masked-dense task under auto)
    return m


def reference_mlp(x, weights, biases, masks, bias_masks, acts):
    """Task-by-task plain autograd through W ⊙ m (the dense masked reference)."""
    outs = []
    for t in range(x.shape[0]):
        h = x[t]
        for w, b, m, bm, act in zip(weights, biases, masks, bias_masks, acts):
            bb = b if bm is None else b * bm[t]
            h = F.linear(h, w * m[t], bb)
            if act == "relu":
                h = torch.relu(h)
            elif act == "tanh":
                h = torch.tanh(h)
        outs.append(h)
    return torch.stack(outs)


def attach_plan(layer, backend):
    layer.pathway_forward = P.PathwayForward(layer, backend)


# --------------------------------------------------------------------------------------------
# one network: forward, ∂x, ∂W, ∂b
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", NPF_BACKENDS)
@pytest.mark.parametrize("mask_bias", [False, True])
@pytest.mark.parametrize("force_loop", [False, True])
def test_network_matches_masked_dense_reference(dtype, backend, mask_bias, force_loop, monkeypatch):
    if force_loop:  # every layer through the task-loop plan (auto then mixes CSR and dense tasks)
        monkeypatch.setattr(P, "CPU_BMM_MAX_ELEMENTS", 0)
        monkeypatch.setattr(P, "CPU_SPARSE_MAX_DENSITY", 0.5)
    torch.manual_seed(0)
    n, dims = 4, [7, 24, 20, 3]
    net = MLP(dims[0], dims[-1], dims[1:-1], "relu", "tanh").to(dtype)
    layers = [m for m in net if isinstance(m, MaskedLinear)]
    masks = [awkward_masks(n, lin.out_features, lin.in_features, seed=i) for i, lin in enumerate(layers)]
    masks[1][:] = False  # a layer fully masked for every task
    g = torch.Generator().manual_seed(1)
    bmasks = [torch.rand(n, lin.out_features, generator=g) < 0.7 if mask_bias else None for lin in layers]
    for layer, m, bm in zip(layers, masks, bmasks):
        layer.set_masks(m, bm)
        attach_plan(layer, backend)
    # extra leading dims and a transposed-layout input
    x = torch.randn(n, 2, 5, dims[0], generator=g, dtype=dtype).transpose(1, 2).requires_grad_(True)
    y = net(x)
    gy = torch.randn(y.shape, generator=g, dtype=dtype)
    grads = torch.autograd.grad(y, [x] + [p for lin in layers for p in (lin.weight, lin.bias)], gy)

    ws = [lin.weight.detach().clone().requires_grad_(True) for lin in layers]
    bs = [lin.bias.detach().clone().requires_grad_(True) for lin in layers]
    xr = x.detach().clone().requires_grad_(True)
    mf = [m.to(dtype) for m in masks]
    bmf = [None if bm is None else bm.to(dtype) for bm in bmasks]
    yr = reference_mlp(xr, ws, bs, mf, bmf, ["relu", "relu", "tanh"])
    ref = torch.autograd.grad(yr, [xr] + [p for w, b in zip(ws, bs) for p in (w, b)], gy)
    close(y.detach(), yr.detach(), dtype)
    for a, b in zip(grads, ref):
        close(a, b, dtype)
    # gradients vanish outside the union of pathways (mask-restricted ∂W)
    for layer_i, m in enumerate(masks):
        gw = grads[1 + 2 * layer_i]
        assert torch.all(gw[~m.any(0)] == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_layer_every_plan_and_no_input_grad(dtype, monkeypatch):
    """One layer, all three plans; also ∂x not requested (first layer) and W frozen."""
    n, out_f, in_f = 3, 16, 11
    masks = awkward_masks(n, out_f, in_f, seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 9, in_f, generator=g, dtype=dtype)
    for plan_cfg in ((10**9, 0.1), (0, 0.0), (0, 1.0), (0, 0.4)):
        monkeypatch.setattr(P, "CPU_BMM_MAX_ELEMENTS", plan_cfg[0])
        monkeypatch.setattr(P, "CPU_SPARSE_MAX_DENSITY", plan_cfg[1])
        for backend in NPF_BACKENDS:
            torch.manual_seed(0)
            layer = MaskedLinear(in_f, out_f).to(dtype)
            layer.set_masks(masks)
            attach_plan(layer, backend)
            for act in (None, "relu", "tanh"):
                y = layer.pathway_forward(x, activation=act)
                yr = reference_mlp(x, [layer.weight], [layer.bias], [masks.to(dtype)], [None], [act])
                close(y.detach(), yr.detach(), dtype)
                gw, gb = torch.autograd.grad((y**2).sum(), [layer.weight, layer.bias])
                gwr, gbr = torch.autograd.grad((yr**2).sum(), [layer.weight, layer.bias])
                close(gw, gwr, dtype)
                close(gb, gbr, dtype)
            layer.weight.requires_grad_(False)
            xg = x.clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(layer(xg).sum(), [xg])
            (gxr,) = torch.autograd.grad(
                reference_mlp(xg, [layer.weight], [layer.bias], [masks.to(dtype)], [None], [None]).sum(), [xg]
            )
            close(gx, gxr, dtype)


def test_outputs_are_transposed_views_that_chain_without_copies():
    torch.manual_seed(0)
    net = MLP(6, 2, [32, 32], "relu")
    pw = Pathways(
        {"net": {k: awkward_masks(3, *p.shape, seed=i) for i, (k, p) in enumerate(maskable_parameters(net).items())}}
    )

    class One:
        roles = ("net",)

        def networks(self):
            return {"net": net}

        def targets(self):
            return {}

    pw.attach(One(), backend="sparse")
    h = net[0].pathway_forward(torch.randn(3, 8, 6), activation="relu")
    assert h.shape == (3, 8, 32) and not h.is_contiguous() and h.transpose(1, 2).is_contiguous()
    y = net(torch.randn(3, 8, 6))
    assert y.shape == (3, 8, 2)


# --------------------------------------------------------------------------------------------
# training: sparse vs dense backends leave identical weights
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fused_adam", [False, True])
def test_many_optimizer_steps_identical_across_backends(fused_adam, monkeypatch):
    """float64, 40 full updates (critic + actor + targets) of TinyAC through MultitaskLearner: every
    backend ends with the same weights as the autograd reference. With fused Adam the weights change
    without moving their version counters, so a stale sparse view would show up here."""
    monkeypatch.setattr(P, "CPU_BMM_MAX_ELEMENTS", 0)  # tiny layers: force the task loop
    monkeypatch.setattr(P, "CPU_SPARSE_MAX_DENSITY", 0.3)  # auto: CSR for sparse tasks only
    n = 3
    probe = TinyAC(hidden=(24, 20))
    pw = Pathways.discover(probe, [make_batch(s) for s in range(n)], keep_ratio=0.2)
    batches = [[make_batch(100 * step + t) for t in range(n)] for step in range(40)]
    final = {}
    for backend in ("autograd", *NPF_BACKENDS):
        algo = TinyAC(hidden=(24, 20))
        if fused_adam:
            algo.actor_opt = torch.optim.Adam(algo.actor.parameters(), lr=1e-2, fused=True)
            algo.critic_opt = torch.optim.Adam(algo.critic.parameters(), lr=1e-2, fused=True)
        learner = MultitaskLearner(algo, "npf", n, pw, backend=backend)
        for b in batches:
            learner.update(b)
        final[backend] = {
            f"{r}.{k}": v.detach().clone()
            for r, net in {**algo.networks(), **{f"{r}_target": t for r, t in algo.targets().items()}}.items()
            for k, v in net.state_dict().items()
        }
    for backend in NPF_BACKENDS:
        for k, v in final["autograd"].items():
            assert torch.allclose(final[backend][k], v, rtol=1e-10, atol=1e-10), (backend, k)
    init = TinyAC(hidden=(24, 20)).actor.state_dict()
    assert not torch.allclose(final["autograd"]["actor.2.weight"], init["2.weight"])  # training happened


def test_views_follow_soft_update_load_state_dict_and_explicit_refresh():
    torch.manual_seed(0)
    layer = MaskedLinear(12, 10).double()
    masks = awkward_masks(3, 10, 12, seed=5)
    layer.set_masks(masks)
    attach_plan(layer, "sparse")
    x = torch.randn(3, 4, 12, dtype=torch.float64)

    def ref():
        return reference_mlp(x, [layer.weight], [layer.bias], [masks.double()], [None], [None])

    close(layer(x), ref(), torch.float64)
    other = MaskedLinear(12, 10).double()
    soft_update(layer, other, 0.5)  # lerp_ (version counter)
    close(layer(x), ref(), torch.float64)
    layer.load_state_dict(MaskedLinear(12, 10).double().state_dict())  # copy_
    close(layer(x), ref(), torch.float64)
    layer.weight.data.mul_(3.0)  # invisible to autograd: needs an explicit refresh
    layer.pathway_forward.refresh()
    close(layer(x), ref(), torch.float64)
    twin = copy.deepcopy(layer)  # target networks: the hook follows the copy with its own views
    with torch.no_grad():
        twin.weight.add_(1.0)
    assert twin.pathway_forward.layer is twin
    close(layer(x), ref(), torch.float64)
    assert not torch.allclose(twin(x), layer(x))


def test_pathways_refresh_after_data_writes():
    algo = TinyAC(hidden=(24, 20))
    pw = Pathways.discover(algo, [make_batch(s) for s in range(3)], keep_ratio=0.2)
    pw.attach(algo, backend="sparse")
    obs = torch.randn(3, 5, 3, dtype=torch.float64)
    algo.act(obs)
    for p in algo.actor.parameters():
        p.data.mul_(1.5)
    Pathways.refresh(algo)
    got = algo.act(obs)
    pw.attach(algo, backend="autograd")
    assert torch.allclose(got, algo.act(obs), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# names and rules
# --------------------------------------------------------------------------------------------
def test_backend_names_aliases_and_errors():
    assert BACKENDS == ("dense", "sparse", "auto", "autograd")
    assert resolve_backend("fused") == "auto"
    for b in BACKENDS:
        assert resolve_backend(b) == b
    with pytest.raises(ValueError, match="pathway backend"):
        resolve_backend("csr")
    algo = TinyAC()
    pw = Pathways.discover(algo, [make_batch(s) for s in range(3)], keep_ratio=0.3)
    with pytest.raises(ValueError, match="pathway backend"):
        pw.attach(algo, backend="gpu")
    learner = MultitaskLearner(algo, "npf", 3, pw, backend="sparse")
    assert learner.backend == "sparse"
    assert algo.actor[0].pathway_forward.backend == "sparse"
    assert MultitaskLearner(TinyAC(), "npf", 3, pw, backend="fused").backend == "auto"
    with pytest.raises(ValueError, match="pathway backend"):
        MultitaskLearner(TinyAC(), "mt", 3, backend="nope")
    MultitaskLearner(algo, "npf", 3, pw, backend="autograd")
    assert algo.actor[0].pathway_forward is None


def test_plan_rules():
    n, out_f, in_f = 10, 1024, 1024
    sparse_nnz = [int(0.05 * out_f * in_f)] * 5 + [int(0.4 * out_f * in_f)] * 5
    assert choose_plan(n, out_f, in_f, sparse_nnz, "sparse") == ("loop", [True] * n)
    assert choose_plan(n, out_f, in_f, sparse_nnz, "dense") == ("loop", [False] * n)
    assert choose_plan(n, out_f, in_f, sparse_nnz, "auto") == ("loop", [True] * 5 + [False] * 5)
    # small layers: one bmm; CUDA: one bmm for auto and dense (no GPU needed to ask)
    assert choose_plan(n, 40, 40, [80] * n, "auto")[0] == "bmm"
    assert choose_plan(n, out_f, in_f, sparse_nnz, "auto", device="cuda") == ("bmm", [False] * n)
    assert choose_plan(n, out_f, in_f, sparse_nnz, "dense", device="cuda") == ("bmm", [False] * n)
    assert choose_plan(n, out_f, in_f, sparse_nnz, "sparse", device="cuda") == ("loop", [True] * n)
    with pytest.raises(ValueError, match="autograd"):
        choose_plan(n, out_f, in_f, sparse_nnz, "autograd")
    # batch: the density threshold is lower for large batches (measured crossover 12-15 % vs ~20 %)
    twelve = [int(0.12 * out_f * in_f)] * n
    assert choose_plan(n, out_f, in_f, twelve, "auto", rows=256) == ("loop", [True] * n)
    assert choose_plan(n, out_f, in_f, twelve, "auto", rows=2560) == ("loop", [False] * n)
    assert (
        P.sparse_density_threshold(None)
        == P.sparse_density_threshold(P.CPU_LARGE_BATCH_ROWS)
        > P.sparse_density_threshold(P.CPU_LARGE_BATCH_ROWS + 1)
        == P.CPU_SPARSE_MAX_DENSITY
    )


def test_batch_regimes_switch_plans_and_keep_views_per_plan(monkeypatch):
    monkeypatch.setattr(P, "CPU_BMM_MAX_ELEMENTS", 0)
    monkeypatch.setattr(P, "CPU_LARGE_BATCH_ROWS", 8)
    n, out_f, in_f = 3, 20, 30
    g = torch.Generator().manual_seed(0)
    dens = torch.tensor([0.05, 0.13, 0.5]).reshape(-1, 1, 1)
    masks = torch.rand(n, out_f, in_f, generator=g) < dens  # task 1: CSR for small batches only
    layer = MaskedLinear(in_f, out_f).double()
    layer.set_masks(masks)
    attach_plan(layer, "auto")
    small, large = layer.pathway_forward.plan(4), layer.pathway_forward.plan(16)
    assert [f is not None for f in small.sparse] == [True, True, False]
    assert [f is not None for f in large.sparse] == [True, False, False]
    for rows in (4, 16, 4, 16):
        x = torch.randn(n, rows, in_f, generator=g, dtype=torch.float64, requires_grad=True)
        y = layer(x)
        ref = reference_mlp(x, [layer.weight], [layer.bias], [masks.double()], [None], [None])
        close(y, ref, torch.float64)
        for a, b in zip(
            torch.autograd.grad(y.sum(), [x, layer.weight]), torch.autograd.grad(ref.sum(), [x, layer.weight])
        ):
            close(a, b, torch.float64)
        with torch.no_grad():
            layer.weight.mul_(0.9)  # a weight update between calls: both plans' views must follow
    same = layer.pathway_forward
    same.plan(2)
    assert same.plan(2) is small and same.plan(100) is large


def test_fused_activation_equals_separate_module():
    torch.manual_seed(0)
    net = MLP(5, 3, [16, 16], "tanh", "tanh").double()
    masks = {f"{i}.weight": awkward_masks(2, *net[i].weight.shape, seed=i) for i in (0, 2, 4)}
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    outs = []
    for fuse in (True, False):
        for i in (0, 2, 4):
            net[i].set_masks(masks[f"{i}.weight"])
            attach_plan(net[i], "sparse")
            if not fuse:
                net[i].pathway_forward.fuses_activation = False
        outs.append(net(x))
    close(outs[0], outs[1], torch.float64)
    calls = []
    net[1].register_forward_hook(lambda m, i, o: calls.append(1))  # hooked modules are never skipped
    for i in (0, 2, 4):
        attach_plan(net[i], "sparse")
    close(net(x), outs[1], torch.float64)
    assert calls == [1]


def test_speed_knobs_are_read_from_the_backends_module(monkeypatch):
    """``npf.pathways.CPU_*`` reads the backends' own knob; writing it through the package (which
    would change no plan) is an error, writing it in npf.pathways.backends changes the plans."""
    import npf.pathways

    args = (2, 40, 40, [100, 1500], "auto")  # 2·40·40 = 3200 entries; densities 6 % and 94 %
    assert choose_plan(*args) == ("bmm", [False, False])
    with pytest.raises(AttributeError, match="npf.pathways.backends"):
        npf.pathways.CPU_BMM_MAX_ELEMENTS = 3199
    monkeypatch.setattr(P, "CPU_BMM_MAX_ELEMENTS", 3199)
    assert npf.pathways.CPU_BMM_MAX_ELEMENTS == 3199
    assert choose_plan(*args) == ("loop", [True, False])


@pytest.mark.parametrize("backend", [*NPF_BACKENDS, "autograd"])
@pytest.mark.parametrize("force_loop", [False, True])
def test_nonfinite_weight_outside_every_pathway_changes_no_output(backend, force_loop, monkeypatch):
    """θ ⊙ m selects θ where m is set: a NaN / inf weight that no task's pathway holds leaves every
    backend's outputs and gradients equal to those of the same network with that weight at 0
    (CSR kernels never read it; masked-dense products must not compute inf · 0 = NaN)."""
    if force_loop:
        monkeypatch.setattr(P, "CPU_BMM_MAX_ELEMENTS", 0)
        monkeypatch.setattr(P, "CPU_SPARSE_MAX_DENSITY", 0.5)
    dtype, n, dims = torch.float64, 2, [6, 16, 2]  # n = 2: awkward_masks leaves row 1 in no pathway
    torch.manual_seed(0)
    net = MLP(dims[0], dims[-1], dims[1:-1], "relu").to(dtype)
    layers = [m for m in net if isinstance(m, MaskedLinear)]
    masks = [awkward_masks(n, lin.out_features, lin.in_features, seed=i, density=0.4) for i, lin in enumerate(layers)]
    clean = [lin.weight.detach().clone() for lin in layers]
    for layer, m, clean_w, value in zip(layers, masks, clean, (math.inf, math.nan)):
        outside = tuple((~m.any(0)).nonzero()[0])  # an entry in no task's pathway
        with torch.no_grad():
            layer.weight[outside] = value
        clean_w[outside] = 0.0
        layer.set_masks(m)
        if backend != "autograd":
            attach_plan(layer, backend)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 5, dims[0], generator=g, dtype=dtype)
    y = net(x)
    y.sum().backward()
    ws = [w.requires_grad_(True) for w in clean]
    yr = reference_mlp(
        x, ws, [lin.bias.detach() for lin in layers], [m.to(dtype) for m in masks], [None, None], ["relu", None]
    )
    yr.sum().backward()
    assert torch.isfinite(y).all()
    close(y.detach(), yr.detach(), dtype)
    for layer, w in zip(layers, ws):
        assert torch.isfinite(layer.weight.grad).all()
        close(layer.weight.grad, w.grad, dtype)
