"""Neural pathways: SNIP saliency, global top-k masks, N task masks over one set of weights.

A *pathway* of task n through a network is a binary mask m_n over its weight matrices; the task
runs through θ ⊙ m_n (paper Section 4.1). This module

* scores weights on one task's batch with SNIP, S(θ_q) = |θ_q · ∂L/∂θ_q| (Eq. 1), where L is the
  network's own loss from :meth:`Algorithm.losses` (:func:`snip_scores`);
* keeps the ``keep_ratio`` largest scores *globally across all layers of one network*
  (:func:`topk_masks`; paper: 5 %);
* holds the masks of N tasks for every network of an algorithm and attaches them to the
  algorithm's :class:`~npf.nets.MaskedLinear` layers (online networks and their targets alike),
  so that one forward over ``[N, ...]`` inputs runs task n through θ ⊙ m_n (:class:`Pathways`);
* keeps the running score window of Data Adaptive Pathway Discovery (:class:`ScoreAverager`, Eq. 2).

Only weight matrices of ``MaskedLinear`` layers are masked. Biases are shared by all tasks and
always trained unless ``mask_bias=True`` (an option; the authors' code leaves biases unmasked).
Output heads of the multi-head baseline (:class:`~npf.nets.StackedLinear`) are never masked.

Masks are stored as bool tensors ``[N, *weight.shape]`` keyed by the parameter's name inside its
network (``"0.weight"``, ``"q1.2.weight"`` …), one dict per role.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections import deque
from fractions import Fraction
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from npf.algos.base import Algorithm, Batch
from npf.nets import MaskedLinear

Scores = dict[str, Tensor]
Masks = dict[str, Tensor]

STATE_FORMAT = "npf.pathways/1"
BACKENDS = ("fused", "autograd")


# --------------------------------------------------------------------------------------------
# Which parameters carry a pathway
# --------------------------------------------------------------------------------------------
def maskable_parameters(net: nn.Module, mask_bias: bool = False) -> dict[str, nn.Parameter]:
    """name → parameter for every parameter that a pathway masks: the weight matrix of each
    :class:`MaskedLinear` layer of ``net`` (and its bias when ``mask_bias``), in module order."""
    out: dict[str, nn.Parameter] = {}
    for mod_name, mod in net.named_modules():
        if isinstance(mod, MaskedLinear):
            prefix = f"{mod_name}." if mod_name else ""
            out[prefix + "weight"] = mod.weight
            if mask_bias and mod.bias is not None:
                out[prefix + "bias"] = mod.bias
    return out


def _masked_layers(net: nn.Module) -> Iterator[tuple[str, MaskedLinear]]:
    for mod_name, mod in net.named_modules():
        if isinstance(mod, MaskedLinear):
            yield (f"{mod_name}." if mod_name else ""), mod


def _all_modules(algo: Algorithm) -> list[nn.Module]:
    mods = list(algo.networks().values()) + list(algo.targets().values())
    seen, out = set(), []
    for m in mods:
        if id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


@contextlib.contextmanager
def masks_removed(algo: Algorithm) -> Iterator[None]:
    """Temporarily run every network (and target) of ``algo`` densely; restores the masks after."""
    saved = []
    for net in _all_modules(algo):
        for _, layer in _masked_layers(net):
            saved.append((layer, layer.weight_mask, layer.bias_mask, layer.pathway_forward))
            layer.weight_mask = None
            layer.bias_mask = None
            layer.pathway_forward = None
    try:
        yield
    finally:
        for layer, wm, bm, fwd in saved:
            layer.weight_mask, layer.bias_mask, layer.pathway_forward = wm, bm, fwd


# --------------------------------------------------------------------------------------------
# SNIP saliency and top-k
# --------------------------------------------------------------------------------------------
def snip_scores_all(algo: Algorithm, batch: Batch, roles: Sequence[str] | None = None,
                    mask_bias: bool = False) -> dict[str, Scores]:
    """SNIP saliency |θ · ∂L_role/∂θ| of every role's maskable parameters on ONE task's batch.

    ``algo.losses(batch)`` is evaluated once, densely (any attached masks are removed for the
    call and restored after). Gradients come from :func:`torch.autograd.grad` restricted to each
    network's own parameters: no ``.grad`` field and no optimizer is touched.
    """
    nets = algo.networks()
    roles = tuple(algo.roles if roles is None else roles)
    for role in roles:
        if role not in nets:
            raise ValueError(f"role {role!r} is not a network of {type(algo).__name__} "
                             f"(has {sorted(nets)})")
    params = {role: maskable_parameters(nets[role], mask_bias) for role in roles}
    with masks_removed(algo):
        losses = algo.losses(batch)
        out: dict[str, Scores] = {}
        for i, role in enumerate(roles):
            if role not in losses:
                raise ValueError(f"{type(algo).__name__}.losses() returned no loss for role {role!r}")
            names = list(params[role])
            tensors = [params[role][k] for k in names]
            loss = losses[role]
            if loss.requires_grad:
                grads = torch.autograd.grad(loss, tensors, retain_graph=i < len(roles) - 1,
                                            allow_unused=True)
            else:
                grads = (None,) * len(tensors)
            out[role] = {
                k: (torch.zeros_like(p) if g is None else (p.detach() * g).abs())
                for k, p, g in zip(names, tensors, grads)
            }
    return out


def snip_scores(algo: Algorithm, role: str, batch: Batch, mask_bias: bool = False) -> Scores:
    """S(θ_q) = |θ_q · ∂L/∂θ_q| for every weight matrix of network ``role`` (biases too when
    ``mask_bias``), L = ``algo.losses(batch)[role]`` on one task's (unmasked) batch."""
    return snip_scores_all(algo, batch, (role,), mask_bias)[role]


def num_kept(keep_ratio: float, total: int) -> int:
    """k = ceil(keep_ratio · total), computed on the decimal value of ``keep_ratio`` so that
    e.g. 0.07 · 100 keeps 7, not 8."""
    try:
        ratio = float(keep_ratio)
    except (TypeError, ValueError):
        ratio = math.nan
    if isinstance(keep_ratio, bool) or not 0 < ratio <= 1:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}")
    return max(1, math.ceil(Fraction(repr(ratio)) * total))


def topk_masks(scores: Mapping[str, Tensor], keep_ratio: float) -> Masks:
    """Keep the k = ceil(keep_ratio · Σ|θ|) highest scores *globally* across all tensors of one
    network. Exactly k entries are kept: ties at the threshold go to the lowest flat index, the
    flat order being the dict order of ``scores`` then row-major order inside each tensor."""
    if not scores:
        raise ValueError("topk_masks: no scores given")
    names = list(scores)
    flat = torch.cat([scores[k].detach().reshape(-1).cpu() for k in names])
    total = flat.numel()
    k = num_kept(keep_ratio, total)
    for name in names:
        if not torch.isfinite(scores[name]).all():
            raise ValueError(f"topk_masks: non-finite saliency score in {name!r}")
    keep = torch.zeros(total, dtype=torch.bool)
    if k >= total:
        keep[:] = True
    else:
        # k-th largest value; everything above it is kept, ties filled by increasing index.
        threshold = torch.kthvalue(flat, total - k + 1).values
        above = flat > threshold
        keep |= above
        need = k - int(above.sum())
        ties = torch.nonzero(flat == threshold).flatten()[:need]
        keep[ties] = True
    out, start = {}, 0
    for name in names:
        n = scores[name].numel()
        out[name] = keep[start:start + n].reshape(scores[name].shape)
        start += n
    return out


# --------------------------------------------------------------------------------------------
# Fused masked linear (the fast path attached by Pathways.attach(backend="fused"))
# --------------------------------------------------------------------------------------------
#: CPU execution plan of a masked layer (all thresholds are speed knobs; every path computes the
#: same result). Layers whose stacked ``[N, out, in]`` masks have at most this many entries run as
#: one bmm over tasks; larger layers run task by task inside the fused function, with cache-sized
#: buffers instead of huge temporaries (a fresh multi-MB allocation per call costs page faults
#: that rival the matmuls). On CUDA every layer is one bmm.
CPU_BMM_MAX_ELEMENTS = 500_000
#: In the task-by-task plan, a task whose pathway keeps at most this fraction of a layer's weights
#: runs that layer with sparse CSR kernels (forward/∂x: CSR × dense; ∂W: sampled dense × dense,
#: only at the pathway's entries) instead of dense masked matmuls. ``0`` disables sparse kernels.
CPU_SPARSE_MAX_DENSITY = 0.10

_CSR_WARNED = False


def _silence_csr_beta_warning() -> None:
    """torch warns once per process that sparse CSR is beta; take that warning here, silently."""
    global _CSR_WARNED
    if not _CSR_WARNED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.sparse_csr_tensor(torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                                    torch.zeros(0), (1, 1), check_invariants=False)
        _CSR_WARNED = True


class _CsrPattern:
    """Task n's pathway through one layer as CSR index structures of W_n [out, in] and W_nᵀ.
    ``idx`` / ``idx_t``: flat index into W of each CSR value (row-major order of W_n / W_nᵀ)."""

    def __init__(self, mask: Tensor):  # bool [out, in]
        _silence_csr_beta_warning()
        out_f, in_f = mask.shape
        dev = mask.device
        rows, cols = torch.nonzero(mask, as_tuple=True)  # row-major order
        self.nnz = int(rows.numel())
        self.shape = (out_f, in_f)
        self.idx = rows * in_f + cols
        self.crow = torch.zeros(out_f + 1, dtype=torch.int64, device=dev)
        self.crow[1:] = torch.bincount(rows, minlength=out_f).cumsum(0)
        self.col = cols
        t_rows, t_cols = torch.nonzero(mask.t(), as_tuple=True)  # Wᵀ row-major: (i, o) pairs
        self.idx_t = t_cols * in_f + t_rows
        self.crow_t = torch.zeros(in_f + 1, dtype=torch.int64, device=dev)
        self.crow_t[1:] = torch.bincount(t_rows, minlength=in_f).cumsum(0)
        self.col_t = t_cols
        self._pattern: dict[torch.dtype, Tensor] = {}

    def csr(self, values: Tensor) -> Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, values, self.shape, check_invariants=False)

    def csr_t(self, values: Tensor) -> Tensor:
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, values, self.shape[::-1],
                                       check_invariants=False)

    def pattern(self, dtype: torch.dtype) -> Tensor:
        if dtype not in self._pattern:
            self._pattern[dtype] = self.csr(torch.ones(self.nnz, dtype=dtype, device=self.idx.device))
        return self._pattern[dtype]


class _LayerPlan:
    """How one masked layer runs its N tasks: ``"bmm"``, or ``"loop"`` with a CSR pattern for the
    tasks whose pathway is sparse enough (None = dense masked matmul for that task).

    For the loop plan the sparse tasks' index arrays are also concatenated (``idx_all``,
    ``idx_t_all``; task i's values are the slice ``offsets[i]:offsets[i+1]``) so that one gather
    and one scatter serve all tasks."""

    def __init__(self, weight_mask: Tensor):  # float [N, out, in]
        n = weight_mask.shape[0]
        self.mask = weight_mask
        cpu = weight_mask.device.type == "cpu"
        self.mode = "loop" if cpu and weight_mask.numel() > CPU_BMM_MAX_ELEMENTS else "bmm"
        self.sparse: list[_CsrPattern | None] = [None] * n
        if self.mode == "loop" and CPU_SPARSE_MAX_DENSITY > 0:
            per_task = weight_mask[0].numel()
            for i in range(n):
                m = weight_mask[i] != 0
                if int(m.sum()) <= CPU_SPARSE_MAX_DENSITY * per_task:
                    self.sparse[i] = _CsrPattern(m)
        pats = [p for p in self.sparse if p is not None]
        self.any_sparse = bool(pats)
        self.offsets = [0] * (n + 1)
        for i, p in enumerate(self.sparse):
            self.offsets[i + 1] = self.offsets[i] + (p.nnz if p is not None else 0)
        if pats:
            self.idx_all = torch.cat([p.idx for p in pats])
            self.idx_t_all = torch.cat([p.idx_t for p in pats])


class _MaskedTaskLinear(torch.autograd.Function):
    """y[n] = x[n] @ (W ⊙ M[n])ᵀ + b[n] for all tasks of one layer.

    Same maths as the plain autograd path of :class:`MaskedLinear`, computed without
    materialising extra ``[N, out, in]`` tensors in backward: ∂/∂W = Σ_n M[n] ⊙ (g[n]ᵀ x[n]) is
    masked in place (bmm plan), accumulated task by task (loop plan), or computed only at the
    pathway's entries (sparse tasks of the loop plan). The loop plan works in transposed space
    (yᵀ = W_n xᵀ, the layout CSR × dense produces) with one transpose per tensor for all tasks.
    See :class:`_LayerPlan`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, weight_mask, bias_mask, plan):
        n = weight_mask.shape[0]
        if x.shape[0] != n:
            raise ValueError(f"input has {x.shape[0]} tasks on its first axis, masks have {n}")
        flat = x.reshape(n, -1, x.shape[-1])
        out_f = weight.shape[0]
        if bias is None:
            b = None
        else:
            b = bias.expand(n, -1) if bias_mask is None else bias * bias_mask  # [N, out]
        if plan.mode == "loop":
            xt = flat.transpose(1, 2).contiguous()  # [N, in, R]
            yt = flat.new_empty(n, out_f, flat.shape[1])  # [N, out, R]
            vals = weight.reshape(-1)[plan.idx_all] if plan.any_sparse else None
            buf = None
            for i in range(n):
                pat = plan.sparse[i]
                if pat is None:
                    if buf is None:
                        buf = torch.empty_like(weight)
                    torch.mul(weight, weight_mask[i], out=buf)
                    torch.mm(buf, xt[i], out=yt[i])
                elif pat.nnz == 0:  # empty pathway through this layer
                    yt[i].zero_()
                else:
                    torch.mm(pat.csr(vals[plan.offsets[i]:plan.offsets[i + 1]]), xt[i], out=yt[i])
            y = flat.new_empty(n, flat.shape[1], out_f)
            if b is None:
                y.copy_(yt.transpose(1, 2))
            else:
                torch.add(yt.transpose(1, 2), b.unsqueeze(1), out=y)
            ctx.save_for_backward(flat, weight, weight_mask, bias_mask)
        else:
            wm = weight * weight_mask  # [N, out, in]
            if b is None:
                y = torch.bmm(flat, wm.transpose(1, 2))
            else:
                y = torch.baddbmm(b.unsqueeze(1), flat, wm.transpose(1, 2))
            ctx.save_for_backward(flat, wm, weight_mask, bias_mask)
        ctx.plan = plan
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        return y.reshape(*x.shape[:-1], out_f)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        flat, w, weight_mask, bias_mask = ctx.saved_tensors
        plan = ctx.plan
        n = weight_mask.shape[0]
        g = grad.reshape(n, -1, grad.shape[-1])
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = gb = None
        if plan.mode == "loop":  # w is the weight [out, in]
            gt = g.transpose(1, 2).contiguous()  # [N, out, R]
            gxt = flat.new_empty(n, flat.shape[2], flat.shape[1]) if need_x else None  # [N, in, R]
            if need_w:
                gw = torch.zeros(w.shape, dtype=w.dtype, device=w.device)
            vals_t = w.reshape(-1)[plan.idx_t_all] if need_x and plan.any_sparse else None
            sparse_grads = []
            buf = buf2 = None
            for i in range(n):
                pat = plan.sparse[i]
                if pat is None:
                    if buf is None:
                        buf = torch.empty_like(w)
                    torch.mul(w, weight_mask[i], out=buf)
                    if need_x:
                        torch.mm(buf.t(), gt[i], out=gxt[i])
                    if need_w:
                        if buf2 is None:
                            buf2 = torch.empty_like(w)
                        torch.mm(gt[i], flat[i], out=buf2)
                        gw.addcmul_(buf2, weight_mask[i])
                elif pat.nnz == 0:
                    if need_x:
                        gxt[i].zero_()
                else:
                    if need_x:
                        torch.mm(pat.csr_t(vals_t[plan.offsets[i]:plan.offsets[i + 1]]), gt[i], out=gxt[i])
                    if need_w:
                        sampled = torch.sparse.sampled_addmm(pat.pattern(w.dtype), gt[i], flat[i], beta=0.0)
                        sparse_grads.append(sampled.values())
            if sparse_grads:
                gw.view(-1).index_add_(0, plan.idx_all, torch.cat(sparse_grads))
            if need_x:
                gx = gxt.transpose(1, 2).contiguous()
        else:  # w is W ⊙ M [N, out, in]
            if need_x:
                gx = torch.bmm(g, w)
            if need_w:
                gw = torch.bmm(g.transpose(1, 2), flat).mul_(weight_mask).sum(0)
        if gx is not None:
            gx = gx.reshape(ctx.x_shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gbn = g.sum(1)  # [N, out]
            gb = (gbn if bias_mask is None else gbn * bias_mask).sum(0)
        return gx, gw, gb, None, None, None


class FusedPathwayForward:
    """``MaskedLinear.pathway_forward`` hook running :class:`_MaskedTaskLinear` on its layer.

    Holds a strong reference to the layer so that ``copy.deepcopy`` of a network maps the hook
    onto the copy. The layer plan is rebuilt whenever the layer's mask tensor is replaced."""

    def __init__(self, layer: MaskedLinear):
        self.layer = layer
        self._plan: _LayerPlan | None = None

    def plan(self) -> _LayerPlan:
        mask = self.layer.weight_mask
        if self._plan is None or self._plan.mask is not mask:
            self._plan = _LayerPlan(mask)
        return self._plan

    def __call__(self, x: Tensor) -> Tensor:
        layer = self.layer
        return _MaskedTaskLinear.apply(x, layer.weight, layer.bias, layer.weight_mask, layer.bias_mask,
                                       self.plan())

    def __getstate__(self):  # plans are caches: rebuilt after copy / unpickling
        return {"layer": self.layer, "_plan": None}


# --------------------------------------------------------------------------------------------
# Pathways
# --------------------------------------------------------------------------------------------
class Pathways:
    """Masks of N tasks for each network (role) of one algorithm.

    ``masks[role][param_name]`` is a bool tensor ``[N, *param.shape]``; task n's pathway through
    that network is ``{name: masks[role][name][n]}``.
    """

    def __init__(self, masks: Mapping[str, Mapping[str, Tensor]], keep_ratio: float | None = None,
                 mask_bias: bool = False):
        if not masks:
            raise ValueError("Pathways: no roles given")
        self.masks: dict[str, dict[str, Tensor]] = {}
        num = None
        for role, d in masks.items():
            if not d:
                raise ValueError(f"Pathways: role {role!r} has no masks")
            self.masks[role] = {}
            for name, m in d.items():
                m = torch.as_tensor(m).detach().to("cpu", torch.bool)
                if m.dim() < 2:
                    raise ValueError(f"Pathways: mask {role}/{name} must be [N, *shape], got {tuple(m.shape)}")
                if num is None:
                    num = m.shape[0]
                elif m.shape[0] != num:
                    raise ValueError(f"Pathways: mask {role}/{name} has {m.shape[0]} tasks, expected {num}")
                self.masks[role][name] = m.contiguous()
        self.num_tasks: int = int(num)
        self.keep_ratio = keep_ratio
        self.mask_bias = mask_bias

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_task_masks(cls, task_masks: Sequence[Mapping[str, Mapping[str, Tensor]]],
                        keep_ratio: float | None = None, mask_bias: bool = False) -> "Pathways":
        """Stack per-task ``{role: {name: bool tensor}}`` dicts into one Pathways."""
        if not task_masks:
            raise ValueError("Pathways: no tasks given")
        roles = list(task_masks[0])
        stacked = {
            role: {name: torch.stack([tm[role][name].to("cpu", torch.bool) for tm in task_masks])
                   for name in task_masks[0][role]}
            for role in roles
        }
        return cls(stacked, keep_ratio, mask_bias)

    @classmethod
    def discover(cls, algo: Algorithm, task_batches: Sequence[Batch], keep_ratio: float,
                 mask_bias: bool = False, roles: Sequence[str] | None = None) -> "Pathways":
        """Single-shot SNIP pathway discovery: for each task, score every role's network on that
        task's batch (dense forward) and keep the global top ``keep_ratio`` of its weights."""
        num_kept(keep_ratio, 1)  # validate early
        if not task_batches:
            raise ValueError("Pathways.discover: no task batches given")
        per_task = []
        for batch in task_batches:
            scores = snip_scores_all(algo, batch, roles, mask_bias)
            per_task.append({role: topk_masks(s, keep_ratio) for role, s in scores.items()})
        return cls.from_task_masks(per_task, keep_ratio, mask_bias)

    # ---- views -------------------------------------------------------------------------------
    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.masks)

    def subset(self, tasks: Sequence[int]) -> "Pathways":
        """Pathways of the given tasks only, in that order (a [len(tasks), ...] stack)."""
        idx = torch.as_tensor(list(tasks), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_tasks:
            raise IndexError(f"tasks {list(tasks)} out of range for {self.num_tasks} tasks")
        return Pathways({r: {k: m[idx] for k, m in d.items()} for r, d in self.masks.items()},
                        self.keep_ratio, self.mask_bias)

    def task_view(self, n: int) -> "Pathways":
        """Task n's pathway alone, as a one-task stack: attach it and feed ``[1, ...]`` inputs."""
        return self.subset([n])

    def task_masks(self, n: int) -> dict[str, dict[str, Tensor]]:
        """``{role: {name: bool tensor}}`` of task n."""
        return {r: {k: m[n] for k, m in d.items()} for r, d in self.masks.items()}

    def set_task_masks(self, n: int, masks: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Replace task n's masks (DAPD). Call :meth:`attach` again for it to take effect."""
        for role, d in masks.items():
            for name, m in d.items():
                self.masks[role][name][n] = m.to("cpu", torch.bool)

    # ---- attaching ---------------------------------------------------------------------------
    def attach(self, algo: Algorithm, backend: str = "fused") -> None:
        """Attach the N-task masks to every MaskedLinear of ``algo.networks()[role]`` and of
        ``algo.targets()[role]`` for each role. Inputs of those networks must then be ``[N, ...]``.

        ``backend``: ``"fused"`` (default) uses a custom autograd function with a leaner
        backward; ``"autograd"`` uses :class:`MaskedLinear`'s plain forward (the reference).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        nets, targets = algo.networks(), algo.targets()
        for role, d in self.masks.items():
            if role not in nets:
                raise ValueError(f"Pathways has masks for role {role!r} but {type(algo).__name__} "
                                 f"has networks {sorted(nets)}")
            for net in (nets[role], targets.get(role)):
                if net is not None:
                    self._attach_net(role, net, backend)

    def _attach_net(self, role: str, net: nn.Module, backend: str) -> None:
        d = self.masks[role]
        used = set()
        for prefix, layer in _masked_layers(net):
            wkey, bkey = prefix + "weight", prefix + "bias"
            if wkey not in d:
                raise ValueError(f"Pathways: no mask for {role}/{wkey}")
            wm = d[wkey]
            if tuple(wm.shape[1:]) != tuple(layer.weight.shape):
                raise ValueError(f"Pathways: mask {role}/{wkey} has shape {tuple(wm.shape[1:])}, "
                                 f"weight is {tuple(layer.weight.shape)}")
            bm = d.get(bkey)
            used.update({wkey} | ({bkey} if bm is not None else set()))
            layer.set_masks(wm, bm)
            layer.pathway_forward = FusedPathwayForward(layer) if backend == "fused" else None
        unused = set(d) - used
        if unused:
            raise ValueError(f"Pathways: masks {sorted(unused)} of role {role!r} match no MaskedLinear")

    @staticmethod
    def detach(algo: Algorithm) -> None:
        """Remove masks from every network and target of ``algo`` (dense single-task forward)."""
        for net in _all_modules(algo):
            for _, layer in _masked_layers(net):
                layer.set_masks(None, None)
                layer.pathway_forward = None

    # ---- statistics --------------------------------------------------------------------------
    def _flat(self, role: str) -> Tensor:
        """[N, P] bool: all masked entries of ``role`` concatenated."""
        if role not in self.masks:
            raise KeyError(f"no masks for role {role!r} (have {list(self.masks)})")
        return torch.cat([m.reshape(self.num_tasks, -1) for m in self.masks[role].values()], dim=1)

    def density(self, role: str) -> np.ndarray:
        """[N] fraction of the role's maskable entries in each task's pathway."""
        f = self._flat(role)
        return (f.sum(1).double() / f.shape[1]).numpy()

    def union_mask(self, role: str) -> dict[str, Tensor]:
        """Entries used by at least one task (the only weights NPF ever trains)."""
        return {k: m.any(0) for k, m in self.masks[role].items()}

    def union_density(self, role: str) -> float:
        """Fraction of the role's maskable entries used by any task (Table 8's share)."""
        f = self._flat(role)
        return float(f.any(0).double().mean())

    def overlap_matrix(self, role: str) -> np.ndarray:
        """[N, N] in percent (Figures 6 / 15): (i, j) = |m_i ∧ m_j| / |m_i| · 100 for i ≠ j; the
        diagonal is the share of task i's entries used by no other task."""
        f = self._flat(role)
        out = torch.stack([(f[i] & f).sum(1) for i in range(self.num_tasks)]).double()
        sizes = out.diagonal().clone()
        users = f.sum(0)  # how many tasks use each entry
        out.diagonal().copy_((f & (users == 1)).sum(1).double())
        with np.errstate(divide="ignore", invalid="ignore"):
            return (out.numpy() / sizes.numpy()[:, None]) * 100.0

    def group_grad_norms(self, role: str, grads: Mapping[str, Tensor]) -> np.ndarray:
        """[N] ‖∂L/∂w‖ restricted to each task's pathway ("task group", Figure 4), from the
        gradients ``{param_name: grad}`` of network ``role`` (entries without a mask ignored)."""
        sq = torch.zeros(self.num_tasks, dtype=torch.float64)
        for name, m in self.masks[role].items():
            g = grads.get(name)
            if g is None:
                continue
            g2 = g.detach().to("cpu", torch.float64).pow(2)
            sq += (m.to(torch.float64) * g2).reshape(self.num_tasks, -1).sum(1)
        return sq.sqrt().numpy()

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Compact form: each mask bit-packed (``np.packbits``) into a uint8 tensor plus its shape.
        Loads with ``torch.load(weights_only=True)``."""
        masks = {}
        for role, d in self.masks.items():
            masks[role] = {}
            for name, m in d.items():
                bits = np.packbits(m.numpy().reshape(-1))
                masks[role][name] = {"shape": list(m.shape), "bits": torch.from_numpy(bits)}
        return {"format": STATE_FORMAT, "num_tasks": self.num_tasks, "keep_ratio": self.keep_ratio,
                "mask_bias": self.mask_bias, "masks": masks}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "Pathways":
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a pathways state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        masks = {}
        for role, d in state["masks"].items():
            masks[role] = {}
            for name, entry in d.items():
                shape = tuple(int(s) for s in entry["shape"])
                count = int(np.prod(shape))
                bits = np.unpackbits(entry["bits"].numpy(), count=count).astype(bool)
                masks[role][name] = torch.from_numpy(bits.reshape(shape))
        return cls(masks, state.get("keep_ratio"), bool(state.get("mask_bias", False)))

    def equals(self, other: "Pathways") -> bool:
        if self.num_tasks != other.num_tasks or self.masks.keys() != other.masks.keys():
            return False
        for role, d in self.masks.items():
            if d.keys() != other.masks[role].keys():
                return False
            if not all(torch.equal(m, other.masks[role][k]) for k, m in d.items()):
                return False
        return True

    def __repr__(self) -> str:
        dens = ", ".join(f"{r}: {100 * self.density(r).mean():.2f}%" for r in self.roles)
        return f"Pathways(num_tasks={self.num_tasks}, roles={list(self.roles)}, density {dens})"


# --------------------------------------------------------------------------------------------
# Data Adaptive Pathway Discovery (online)
# --------------------------------------------------------------------------------------------
def _map_scores(fn, tree):
    if isinstance(tree, Mapping):
        return {k: _map_scores(fn, v) for k, v in tree.items()}
    return fn(tree)


class ScoreAverager:
    """DAPD score window (Eq. 2): the last ``window`` (M) SNIP score dicts of each task and their
    mean. Eq. 2 sums the scores; the top-k of a sum equals the top-k of the mean.

    Scores may be flat ``{name: Tensor}`` (one network) or nested ``{role: {name: Tensor}}``
    (as returned by :func:`snip_scores_all`). Once a task is frozen (its return or success reached
    the stop threshold T_H) it is never re-scored again: :meth:`push` ignores it and nothing
    unfreezes it.
    """

    def __init__(self, num_tasks: int, window: int = 10, keep_ratio: float = 0.05):
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks}")
        if window < 1:
            raise ValueError(f"window (M) must be ≥ 1, got {window}")
        num_kept(keep_ratio, 1)
        self.num_tasks, self.window, self.keep_ratio = num_tasks, window, keep_ratio
        self._history: list[deque] = [deque(maxlen=window) for _ in range(num_tasks)]
        self._frozen = [False] * num_tasks

    @property
    def frozen(self) -> tuple[bool, ...]:
        return tuple(self._frozen)

    def count(self, task: int) -> int:
        return len(self._history[task])

    def push(self, task: int, scores) -> bool:
        """Add one score dict of ``task``; returns False (and ignores it) when the task is frozen."""
        if self._frozen[task]:
            return False
        self._history[task].append(_map_scores(lambda t: t.detach().clone(), scores))
        return True

    def mean(self, task: int):
        """Element-wise mean of the task's last ≤ M score dicts."""
        hist = list(self._history[task])
        if not hist:
            raise ValueError(f"ScoreAverager: no scores pushed for task {task}")

        def avg(path):
            items = [h for h in hist]
            for key in path:
                items = [h[key] for h in items]
            return torch.stack(items).mean(0)

        def build(tree, path):
            if isinstance(tree, Mapping):
                return {k: build(v, path + (k,)) for k, v in tree.items()}
            return avg(path)

        return build(hist[0], ())

    def masks(self, task: int):
        """Top-k (global per network) of the mean score: ``{name: bool}`` for flat scores,
        ``{role: {name: bool}}`` for nested ones."""
        mean = self.mean(task)
        if all(isinstance(v, Tensor) for v in mean.values()):
            return topk_masks(mean, self.keep_ratio)
        return {role: topk_masks(s, self.keep_ratio) for role, s in mean.items()}

    def freeze(self, task: int) -> None:
        """Stop re-scoring ``task`` for good."""
        self._frozen[task] = True

    def maybe_freeze(self, task: int, value: float, threshold: float) -> bool:
        """Freeze ``task`` when ``value`` (episodic return or success rate) ≥ ``threshold``;
        returns the task's frozen flag."""
        if value >= threshold:
            self._frozen[task] = True
        return self._frozen[task]

    def state_dict(self) -> dict:
        return {"num_tasks": self.num_tasks, "window": self.window, "keep_ratio": self.keep_ratio,
                "frozen": list(self._frozen), "history": [list(h) for h in self._history]}

    def load_state_dict(self, state: Mapping) -> None:
        if int(state["num_tasks"]) != self.num_tasks or int(state["window"]) != self.window:
            raise ValueError("ScoreAverager: state has a different num_tasks/window")
        self._frozen = [bool(f) for f in state["frozen"]]
        self._history = [deque(h, maxlen=self.window) for h in state["history"]]
