"""Neural pathways: SNIP saliency, global top-k masks, N task masks over one set of weights.

A *pathway* of task n through a network is a binary mask m_n over its weight matrices; the task
runs through θ ⊙ m_n (paper Section 4.1). This module

* scores weights on one task's batch with SNIP, S(θ_q) = |θ_q · ∂L/∂θ_q| (Eq. 1), where L is the
  network's own loss from :meth:`Algorithm.losses` (:func:`snip_scores`);
* keeps the ``keep_ratio`` largest scores *globally across all layers of one network*
  (:func:`topk_masks`; paper: 5 %);
* holds the masks of N tasks for every network of an algorithm and attaches them to the
  algorithm's :class:`~npf.nets.MaskedLinear` layers (online networks and their targets alike),
  so that one forward over ``[N, ...]`` inputs runs task n through θ ⊙ m_n (:class:`Pathways`),
  computed by one of the backends ``auto`` / ``dense`` / ``sparse`` / ``autograd``
  (:data:`BACKENDS`, :func:`choose_plan`, docs/backends.md);
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
# Execution backends of the masked N-task linear layer
# --------------------------------------------------------------------------------------------
#: Backends accepted by :meth:`Pathways.attach` / ``MultitaskLearner(backend=...)`` and by the
#: ``pathway_backend`` config key. All compute the same numbers (tests: 1e-10 float64, 1e-5 float32);
#: they differ in speed only (docs/backends.md, benchmarks/bench_multitask.py).
#:
#: ``dense``    masked-dense products θ ⊙ m_n, never a sparse kernel: one ``bmm`` over tasks for small
#:              layers (and every layer on CUDA); larger CPU layers task by task with cache-sized
#:              buffers.
#: ``sparse``   every task of every layer through CSR kernels: forward and ∂x with CSR × dense on the
#:              pathway's nonzeros only, ∂θ with a sampled dense × dense product at the pathway's
#:              entries (``torch.sparse.sampled_addmm``) scattered into the dense gradient.
#: ``auto``     per layer and task from measured rules of thumb (:func:`choose_plan`): CUDA → bmm;
#:              CPU → bmm for small layers, CSR for tasks whose pathway through the layer is sparse
#:              enough, masked-dense for the others.
#: ``autograd`` the reference: :class:`~npf.nets.MaskedLinear`'s plain ``bmm`` of ``θ ⊙ m`` through
#:              autograd (materialises ``[N, out, in]`` in forward and backward).
BACKENDS = ("dense", "sparse", "auto", "autograd")
#: Older names, kept working: ``fused`` was the auto-planned custom function.
BACKEND_ALIASES = {"fused": "auto"}
DEFAULT_BACKEND = "auto"

#: Rules of thumb of ``auto`` (and the bmm/loop split of ``dense``), measured on CPU with
#: benchmarks/bench_multitask.py --layers (1 thread, AVX-512 MKL; docs/backends.md). All are speed
#: knobs only. Layers whose stacked ``[N, out, in]`` masks have at most this many entries run as
#: one bmm over tasks (Python/kernel-launch overhead dominates there).
CPU_BMM_MAX_ELEMENTS = 500_000
#: In the task-by-task plan a task whose pathway keeps at most this fraction of a layer's weights
#: runs through CSR kernels, denser ones through masked-dense matmuls. ``0`` disables sparse kernels.
#: This is the large-batch threshold (more than ``CPU_LARGE_BATCH_ROWS`` rows per task: the CSR /
#: masked-dense crossover of 400²…1024² layers measured at 12-15 % density with 2560 rows).
CPU_SPARSE_MAX_DENSITY = 0.10
#: Batches of at most this many rows per task use ``CPU_SMALL_BATCH_DENSITY_FACTOR ×`` the threshold
#: above (crossover measured at ~20 % density with 16-256 rows per task).
CPU_LARGE_BATCH_ROWS = 1024
CPU_SMALL_BATCH_DENSITY_FACTOR = 1.5
#: CSR × dense on CPU runs over column blocks of the dense operand (samples R) sized so that one
#: task's block (rows/task × block × element size) stays within this many bytes of L2 cache: each
#: pathway entry re-reads a row of the block, and a block that spills to L3/DRAM halves MKL's
#: throughput (measured: 750×750 layer, R = 2560, 10 tasks: 150 ms unblocked, 60-80 ms blocked).
CPU_SPMM_BLOCK_BYTES = 1 << 20

_CSR_WARNED = False


def resolve_backend(backend: str) -> str:
    """Canonical backend name (``fused`` → ``auto``); a clear error for unknown names."""
    name = BACKEND_ALIASES.get(backend, backend)
    if name not in BACKENDS:
        raise ValueError(f"pathway backend must be one of {BACKENDS} (or {sorted(BACKEND_ALIASES)}), "
                         f"got {backend!r}")
    return name


def _silence_csr_beta_warning() -> None:
    """torch warns once per process that sparse CSR is beta; take that warning here, silently."""
    global _CSR_WARNED
    if not _CSR_WARNED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.sparse_csr_tensor(torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                                    torch.zeros(0), (1, 1), check_invariants=False)
        _CSR_WARNED = True


# Sparse views (CSR values gathered from the dense weight) are cached per layer and refreshed when
# the weight may have changed: a different tensor, its autograd version counter moved (in-place
# ops: non-fused optimizers, soft_update's lerp_, load_state_dict), or an optimizer stepped it
# (fused optimizers do not move the version counter; a global optimizer step hook counts the steps
# of every parameter in ``_npf_steps``). Writes through ``.data`` are invisible to all three: call
# :meth:`Pathways.refresh` after them.
_STEP_HOOK = None


def _count_optimizer_step(optimizer, *_args) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            p._npf_steps = getattr(p, "_npf_steps", 0) + 1


def _install_step_hook() -> None:
    global _STEP_HOOK
    if _STEP_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook
        _STEP_HOOK = register_optimizer_step_post_hook(_count_optimizer_step)


def _weight_state(w: Tensor) -> tuple:
    return (w._version, getattr(w, "_npf_steps", 0), w.dtype, w.device)


def choose_plan(num_tasks: int, out_features: int, in_features: int, task_nnz: Sequence[int],
                backend: str, device: torch.device | str = "cpu", rows: int | None = None
                ) -> tuple[str, list[bool]]:
    """The execution plan of one masked layer: ``(mode, sparse)``, ``mode`` ``"bmm"`` (one batched
    masked-dense product over tasks) or ``"loop"`` (task by task inside one autograd function),
    ``sparse[n]`` whether task n runs through CSR kernels (loop mode only).

    Rules (docs/backends.md): ``sparse`` → loop, every task CSR. ``dense`` → bmm on CUDA or when
    ``N·out·in ≤ CPU_BMM_MAX_ELEMENTS``, else loop without CSR. ``auto`` → like ``dense``, but in the
    loop a task whose density ``nnz_n / (out·in)`` is at most :func:`sparse_density_threshold`
    (``rows`` per task; None = a small batch) uses CSR.
    """
    backend = resolve_backend(backend)
    if backend == "autograd":
        raise ValueError("the autograd backend has no plan (it is MaskedLinear's own forward)")
    if backend == "sparse":
        return "loop", [True] * num_tasks
    cuda = torch.device(device).type != "cpu"
    if cuda or num_tasks * out_features * in_features <= CPU_BMM_MAX_ELEMENTS:
        return "bmm", [False] * num_tasks
    if backend == "dense" or CPU_SPARSE_MAX_DENSITY <= 0:
        return "loop", [False] * num_tasks
    limit = sparse_density_threshold(rows) * out_features * in_features
    return "loop", [int(k) <= limit for k in task_nnz]


def sparse_density_threshold(rows: int | None = None) -> float:
    """``auto``'s CPU density threshold for CSR kernels at ``rows`` samples per task (None: small)."""
    if rows is not None and rows > CPU_LARGE_BATCH_ROWS:
        return CPU_SPARSE_MAX_DENSITY
    return CPU_SPARSE_MAX_DENSITY * CPU_SMALL_BATCH_DENSITY_FACTOR


def _batch_regime(rows: int | None) -> bool:
    """True for a large batch (see ``CPU_LARGE_BATCH_ROWS``)."""
    return rows is not None and rows > CPU_LARGE_BATCH_ROWS


class _LayerPlan:
    """How one masked layer runs its N tasks (see :func:`choose_plan`).

    All CSR tasks of a layer form ONE block-diagonal CSR matrix ``diag(W_0 ⊙ m_0, …)`` of shape
    ``[N·out, N·in]`` (masked-dense tasks contribute empty rows), so that the forward is one
    CSR × dense product ``[N·out, N·in] @ [N·in, R]`` on the stacked transposed activations, ∂x one
    product with the transposed block diagonal and ∂θ one sampled product, for all tasks at once.
    ``idx`` / ``idx_t``: flat index into θ of each CSR value of the block diagonal / its transpose.
    ``sparse[n]``: task n's pathway size through the layer when it runs on CSR kernels, else None.
    """

    def __init__(self, weight_mask: Tensor, backend: str, rows: int | None = None):  # float [N, out, in]
        n, out_f, in_f = weight_mask.shape
        self.mask = weight_mask
        self.backend = backend
        self.shape = (n, out_f, in_f)
        m = weight_mask != 0
        counts = m.reshape(n, -1).sum(1).tolist()
        self.mode, flags = choose_plan(n, out_f, in_f, counts, backend, weight_mask.device, rows)
        self.flags = tuple(flags)
        self.sparse: list[int | None] = [int(c) if f else None for c, f in zip(counts, flags)]
        self.dense_tasks = [i for i, f in enumerate(flags) if not f]
        self.any_sparse = any(flags)
        self.nnz = 0
        if self.any_sparse:
            _silence_csr_beta_warning()
            _install_step_hook()
            sel = m.clone()
            if self.dense_tasks:
                sel[self.dense_tasks] = False
            t, r, c = torch.nonzero(sel, as_tuple=True)  # (task, row, col) order = block-diag CSR order
            self.nnz = int(t.numel())
            dev = weight_mask.device
            # int32 CSR indices when they fit: MKL / cuSPARSE take them without a conversion copy.
            itype = torch.int32 if max(self.nnz, n * max(out_f, in_f)) < 2 ** 31 - 1 else torch.int64
            self.idx = (r * in_f + c).to(itype if out_f * in_f < 2 ** 31 - 1 else torch.int64)
            self.col = (t * in_f + c).to(itype)
            self.crow = torch.zeros(n * out_f + 1, dtype=torch.int64, device=dev)
            self.crow[1:] = torch.bincount(t * out_f + r, minlength=n * out_f).cumsum(0)
            self.crow = self.crow.to(itype)
            tt, cc, rr = torch.nonzero(sel.transpose(1, 2), as_tuple=True)  # (task, col, row) order
            self.idx_t = (rr * in_f + cc).to(self.idx.dtype)
            self.col_t = (tt * out_f + rr).to(itype)
            self.crow_t = torch.zeros(n * in_f + 1, dtype=torch.int64, device=dev)
            self.crow_t[1:] = torch.bincount(tt * in_f + cc, minlength=n * in_f).cumsum(0)
            self.crow_t = self.crow_t.to(itype)
            self._pattern: dict[torch.dtype, Tensor] = {}

    def pattern(self, dtype: torch.dtype) -> Tensor:
        """The block diagonal's sparsity pattern (values 1), the mask of the sampled ∂θ product."""
        if dtype not in self._pattern:
            n, out_f, in_f = self.shape
            ones = torch.ones(self.nnz, dtype=dtype, device=self.idx.device)
            self._pattern[dtype] = torch.sparse_csr_tensor(self.crow, self.col, ones, (n * out_f, n * in_f),
                                                           check_invariants=False)
        return self._pattern[dtype]


class _SparseViews:
    """θ's values on one plan's block diagonal (and, on first use, on its transpose) as CSR
    tensors: the per-task sparse views of the global dense weight, valid for one weight state."""

    def __init__(self, plan: _LayerPlan, weight: Tensor):
        n, out_f, in_f = plan.shape
        self.plan = plan
        self.weight = weight
        self._flat = weight.detach().reshape(-1)
        self.csr = torch.sparse_csr_tensor(plan.crow, plan.col, self._flat.index_select(0, plan.idx),
                                           (n * out_f, n * in_f), check_invariants=False)
        self._csr_t: Tensor | None = None

    @property
    def csr_t(self) -> Tensor:
        """diag(W_n ⊙ m_n)ᵀ in CSR (for ∂x); gathered lazily, so forward-only nets never pay it."""
        if self._csr_t is None:
            p = self.plan
            n, out_f, in_f = p.shape
            self._csr_t = torch.sparse_csr_tensor(p.crow_t, p.col_t, self._flat.index_select(0, p.idx_t),
                                                  (n * in_f, n * out_f), check_invariants=False)
        return self._csr_t


def _spmm(out: Tensor, csr: Tensor, dense: Tensor, beta: float, rows_per_task: int) -> Tensor:
    """``out = beta·out + csr @ dense`` in place (``out`` [M, R], ``dense`` [K, R] row-major); on CPU
    over column blocks of R (see ``CPU_SPMM_BLOCK_BYTES``)."""
    r = dense.shape[1]
    block = r
    if dense.device.type == "cpu":
        block = max(64, CPU_SPMM_BLOCK_BYTES // (rows_per_task * dense.element_size()))
        block = 1 << (block.bit_length() - 1)  # a power of two
    if r <= block:
        return torch.addmm(out, csr, dense, beta=beta, out=out)
    for c0 in range(0, r, block):
        o = out[:, c0:c0 + block]
        torch.addmm(o, csr, dense[:, c0:c0 + block], beta=beta, out=o)
    return out


def _transposed(t: Tensor) -> Tensor:
    """``t [N, R, f]`` → ``[N, f, R]`` contiguous: free when ``t`` is already a transposed view."""
    tt = t.transpose(1, 2)
    return tt if tt.is_contiguous() else tt.contiguous()


#: Activations a masked layer can apply in place on its own output buffer (see :class:`~npf.nets.MLP`),
#: and their backward from the activation's output.
_ACT_INPLACE = {"relu": lambda t: t.clamp_(min=0), "tanh": lambda t: t.tanh_()}
_ACT_BACKWARD = {"relu": lambda g, y: torch.ops.aten.threshold_backward(g, y, 0),
                 "tanh": lambda g, y: torch.ops.aten.tanh_backward(g, y)}
FUSABLE_ACTIVATIONS = tuple(_ACT_INPLACE)


class _MaskedTaskLinear(torch.autograd.Function):
    """y[n] = act(x[n] @ (θ ⊙ M[n])ᵀ + b[n]) for all tasks of one layer (the ``dense``, ``sparse``
    and ``auto`` backends); ``act`` is None or a fused element-wise activation.

    Works in *transposed space*: yᵀ[n] = (θ ⊙ M[n]) xᵀ[n], the layout CSR × dense produces. The
    output is returned as a transposed view ``[N, R, out]`` of a contiguous ``[N, out, R]`` buffer;
    element-wise ops keep that layout, so the next masked layer finds its xᵀ contiguous and no
    activation is ever transposed by a copy (∂x is returned the same way). The bias is written into
    the output buffer before the product accumulates onto it, and a fused activation is applied in
    place on it (one allocation and one pass fewer than a separate activation module). Nothing of
    size ``[N, out, in]`` is materialised outside the bmm plan. ∂θ = Σ_n M[n] ⊙ (g[n]ᵀ x[n]) is
    masked in place (bmm), accumulated task by task (masked-dense tasks of the loop) or computed
    only at the pathway's entries and scattered (CSR tasks). See :class:`_LayerPlan`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, weight_mask, bias_mask, plan, views, activation):
        n, out_f, in_f = plan.shape
        if x.shape[0] != n:
            raise ValueError(f"input has {x.shape[0]} tasks on its first axis, masks have {n}")
        flat = x.reshape(n, -1, x.shape[-1])
        r = flat.shape[1]
        if bias is None:
            b = None
        else:
            b = bias.expand(n, -1) if bias_mask is None else bias * bias_mask  # [N, out]
        if plan.mode == "loop":
            xt = _transposed(flat)  # [N, in, R]
            yt = flat.new_empty(n, out_f, r)
            # addmm(..., out=yt) with yt as its own input: no temporary, no extra fill or copy.
            if b is not None:
                yt.copy_(b.unsqueeze(2).expand(n, out_f, r))
            elif plan.any_sparse and not plan.nnz:
                yt.zero_()  # every CSR task has an empty pathway through this layer
            beta = 0.0 if b is None else 1.0
            if plan.nnz:
                _spmm(yt.view(n * out_f, r), views.csr, xt.view(n * in_f, r), beta, in_f)
            if plan.dense_tasks:
                buf = torch.empty_like(weight)
                for i in plan.dense_tasks:
                    torch.mul(weight, weight_mask[i], out=buf)
                    torch.addmm(yt[i], buf, xt[i], beta=beta, out=yt[i])
            w = weight
        else:
            xt = flat.transpose(1, 2)  # [N, in, R] (a view: bmm takes either layout)
            w = weight * weight_mask  # [N, out, in]
            yt = torch.bmm(w, xt) if b is None else torch.baddbmm(b.unsqueeze(2), w, xt)
        if activation is not None:
            _ACT_INPLACE[activation](yt)
        y = yt.transpose(1, 2).reshape(*x.shape[:-1], out_f)
        if activation is None:
            ctx.save_for_backward(xt, w, weight_mask, bias_mask)
        else:
            ctx.save_for_backward(xt, w, weight_mask, bias_mask, y)
        ctx.plan, ctx.views, ctx.activation = plan, views, activation
        ctx.x_shape = x.shape
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        xt, w, weight_mask, bias_mask = ctx.saved_tensors[:4]
        plan = ctx.plan
        n, out_f, in_f = plan.shape
        r = xt.shape[2]
        if ctx.activation is not None:
            grad = _ACT_BACKWARD[ctx.activation](grad, ctx.saved_tensors[4])
        g = grad.reshape(n, -1, out_f)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx = gw = gb = None
        if plan.mode == "loop":  # w is θ [out, in]
            gt = _transposed(g)  # [N, out, R]
            gxt = xt.new_empty(n, in_f, r) if need_x else None
            if need_w:
                gw = torch.zeros(w.shape, dtype=w.dtype, device=w.device)
            if plan.any_sparse:
                if plan.nnz:
                    if need_x:
                        _spmm(gxt.view(n * in_f, r), ctx.views.csr_t, gt.view(n * out_f, r), 0.0, out_f)
                    if need_w:
                        sampled = torch.sparse.sampled_addmm(plan.pattern(w.dtype), gt.view(n * out_f, r),
                                                             xt.view(n * in_f, r).t(), beta=0.0)
                        gw.view(-1).index_add_(0, plan.idx, sampled.values())
                elif need_x:
                    gxt.zero_()
            if plan.dense_tasks:
                buf = torch.empty_like(w)
                buf2 = torch.empty_like(w) if need_w else None
                for i in plan.dense_tasks:
                    if need_x:
                        torch.mul(w, weight_mask[i], out=buf)
                        torch.mm(buf.t(), gt[i], out=gxt[i])
                    if need_w:
                        torch.mm(gt[i], xt[i].t(), out=buf2)
                        gw.addcmul_(buf2, weight_mask[i])
        else:  # w is θ ⊙ M [N, out, in]
            gt = g.transpose(1, 2)
            gxt = torch.bmm(w.transpose(1, 2), gt) if need_x else None
            if need_w:
                gw = torch.bmm(gt, xt.transpose(1, 2)).mul_(weight_mask).sum(0)
        if need_x:
            gx = gxt.transpose(1, 2).reshape(ctx.x_shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gbn = gt.sum(2)  # [N, out]
            gb = (gbn if bias_mask is None else gbn * bias_mask).sum(0)
        return gx, gw, gb, None, None, None, None, None


class PathwayForward:
    """``MaskedLinear.pathway_forward`` hook running :class:`_MaskedTaskLinear` on its layer with
    one backend (``dense`` / ``sparse`` / ``auto``).

    Holds a strong reference to the layer so that ``copy.deepcopy`` of a network maps the hook
    onto the copy. ``fuses_activation``: :class:`~npf.nets.MLP` may call it with the following
    activation fused in. The plan is rebuilt whenever the layer's mask tensor is replaced; the sparse
    views whenever the weight may have changed (see ``_weight_state``) or on :meth:`refresh`."""

    fuses_activation = True

    def __init__(self, layer: MaskedLinear, backend: str = DEFAULT_BACKEND):
        self.layer = layer
        self.backend = resolve_backend(backend)
        if self.backend == "autograd":
            raise ValueError("PathwayForward: the autograd backend uses MaskedLinear's own forward")
        self._mask: Tensor | None = None
        self._plans: dict[bool, _LayerPlan] = {}  # batch regime → plan (one object when they agree)
        self._views: dict[int, tuple[tuple, _SparseViews]] = {}  # id(plan) → (weight state, views)

    def plan(self, rows: int | None = None) -> _LayerPlan:
        """The layer's plan for ``rows`` samples per task (None: a small batch); rebuilt when the
        mask tensor is replaced."""
        mask = self.layer.weight_mask
        if self._mask is not mask:
            self._mask, self._plans, self._views = mask, {}, {}
        regime = _batch_regime(rows)
        plan = self._plans.get(regime)
        if plan is None:
            plan = _LayerPlan(mask, self.backend, rows)
            other = self._plans.get(not regime)
            if other is not None and other.mode == plan.mode and other.flags == plan.flags:
                plan = other
            self._plans[regime] = plan
        return plan

    def views(self, plan: _LayerPlan | None = None) -> _SparseViews | None:
        """The current sparse views of the layer's weight for ``plan`` (default: the small-batch
        plan), refreshed if the weight may have changed."""
        plan = self.plan() if plan is None else plan
        if not plan.nnz:
            return None
        w = self.layer.weight
        key = _weight_state(w)
        cached = self._views.get(id(plan))
        if cached is None or cached[1].weight is not w or cached[0] != key:
            cached = (key, _SparseViews(plan, w))
            self._views[id(plan)] = cached
        return cached[1]

    def refresh(self) -> None:
        """Rebuild the sparse views now (needed only after writes through ``weight.data``)."""
        self._views = {}
        for plan in {id(p): p for p in self._plans.values()}.values():
            views = self.views(plan)
            if views is not None:
                views.csr_t  # noqa: B018 (builds the transposed view too)

    def __call__(self, x: Tensor, activation: str | None = None) -> Tensor:
        """The layer's N-task output; ``activation`` (one of :data:`FUSABLE_ACTIVATIONS`) is applied
        in place on it (used by :class:`~npf.nets.MLP` to fuse the activation that follows)."""
        layer = self.layer
        rows = x.numel() // max(1, x.shape[0] * x.shape[-1]) if x.dim() > 1 else 1
        plan = self.plan(rows)
        return _MaskedTaskLinear.apply(x, layer.weight, layer.bias, layer.weight_mask, layer.bias_mask,
                                       plan, self.views(plan), activation)

    def __getstate__(self):  # plans and views are caches: rebuilt after copy / unpickling
        return {"layer": self.layer, "backend": self.backend, "_mask": None, "_plans": {}, "_views": {}}


#: Former name of :class:`PathwayForward`.
FusedPathwayForward = PathwayForward


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
    def attach(self, algo: Algorithm, backend: str = DEFAULT_BACKEND) -> None:
        """Attach the N-task masks to every MaskedLinear of ``algo.networks()[role]`` and of
        ``algo.targets()[role]`` for each role. Inputs of those networks must then be ``[N, ...]``.

        ``backend`` (see :data:`BACKENDS`, docs/backends.md): ``"auto"`` (default) picks per layer
        and task from measured rules of thumb, ``"dense"`` runs masked-dense products only,
        ``"sparse"`` runs every task through CSR kernels, ``"autograd"`` is
        :class:`MaskedLinear`'s plain forward (the reference). ``"fused"`` means ``"auto"``.
        Attaching again replaces masks and backend.
        """
        backend = resolve_backend(backend)
        nets, targets = algo.networks(), algo.targets()
        for role, d in self.masks.items():
            if role not in nets:
                raise ValueError(f"Pathways has masks for role {role!r} but {type(algo).__name__} "
                                 f"has networks {sorted(nets)}")
            for net in (nets[role], targets.get(role)):
                if net is not None:
                    self._attach_net(role, net, backend)

    @staticmethod
    def refresh(algo: Algorithm) -> None:
        """Rebuild every attached layer's sparse views from the current weights now. Not needed
        after optimizer steps, ``soft_update``, ``load_state_dict`` or any in-place op on the
        parameters (detected); only after writes through ``weight.data``."""
        for net in _all_modules(algo):
            for _, layer in _masked_layers(net):
                if isinstance(layer.pathway_forward, PathwayForward):
                    layer.pathway_forward.refresh()

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
            layer.pathway_forward = None if backend == "autograd" else PathwayForward(layer, backend)
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
