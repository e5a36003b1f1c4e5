"""Execution backends of the masked N-task linear layer (``dense`` / ``sparse`` / ``auto``; the
``autograd`` reference is :class:`~npf.nets.MaskedLinear`'s own forward). docs/backends.md describes
the plans and the measured rules of thumb behind them.

Public API: :data:`BACKENDS`, :func:`resolve_backend`, :func:`choose_plan`,
:func:`sparse_density_threshold`, :class:`LayerPlan` (one layer's plan and CSR structure),
:class:`SparseViews` (θ's values on a plan's CSR structure), :class:`PathwayForward` (the hook a
:class:`~npf.nets.MaskedLinear` runs) and the ``CPU_*`` speed knobs below, read at plan time.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from npf.nets import MaskedLinear

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
        raise ValueError(f"pathway backend must be one of {BACKENDS} (or {sorted(BACKEND_ALIASES)}), got {backend!r}")
    return name


def _silence_csr_beta_warning() -> None:
    """torch warns once per process that sparse CSR is beta; take that warning here, silently."""
    global _CSR_WARNED
    if not _CSR_WARNED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.sparse_csr_tensor(
                torch.zeros(2, dtype=torch.int64),
                torch.zeros(0, dtype=torch.int64),
                torch.zeros(0),
                (1, 1),
                check_invariants=False,
            )
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


def choose_plan(
    num_tasks: int,
    out_features: int,
    in_features: int,
    task_nnz: Sequence[int],
    backend: str,
    device: torch.device | str = "cpu",
    rows: int | None = None,
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


class LayerPlan:
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
        #: bool [N, out, in]: the masked-dense products select θ where it is set (θ ⊙ m by selection,
        #: so a non-finite weight outside a pathway stays out of it, as on CSR kernels).
        self.keep = m
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
            itype = torch.int32 if max(self.nnz, n * max(out_f, in_f)) < 2**31 - 1 else torch.int64
            self.idx = (r * in_f + c).to(itype if out_f * in_f < 2**31 - 1 else torch.int64)
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
            self._pattern[dtype] = torch.sparse_csr_tensor(
                self.crow, self.col, ones, (n * out_f, n * in_f), check_invariants=False
            )
        return self._pattern[dtype]


class SparseViews:
    """θ's values on one plan's block diagonal (and, on first use, on its transpose) as CSR
    tensors: the per-task sparse views of the global dense weight, valid for one weight state."""

    def __init__(self, plan: LayerPlan, weight: Tensor):
        n, out_f, in_f = plan.shape
        self.plan = plan
        self.weight = weight
        self._flat = weight.detach().reshape(-1)
        self.csr = torch.sparse_csr_tensor(
            plan.crow, plan.col, self._flat.index_select(0, plan.idx), (n * out_f, n * in_f), check_invariants=False
        )
        self._csr_t: Tensor | None = None

    @property
    def csr_t(self) -> Tensor:
        """diag(W_n ⊙ m_n)ᵀ in CSR (for ∂x); gathered lazily, so forward-only nets never pay it."""
        if self._csr_t is None:
            p = self.plan
            n, out_f, in_f = p.shape
            self._csr_t = torch.sparse_csr_tensor(
                p.crow_t, p.col_t, self._flat.index_select(0, p.idx_t), (n * in_f, n * out_f), check_invariants=False
            )
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
        o = out[:, c0 : c0 + block]
        torch.addmm(o, csr, dense[:, c0 : c0 + block], beta=beta, out=o)
    return out


def _transposed(t: Tensor) -> Tensor:
    """``t [N, R, f]`` → ``[N, f, R]`` contiguous: free when ``t`` is already a transposed view."""
    tt = t.transpose(1, 2)
    return tt if tt.is_contiguous() else tt.contiguous()


#: Activations a masked layer can apply in place on its own output buffer (see :class:`~npf.nets.MLP`),
#: and their backward from the activation's output.
_ACT_INPLACE = {"relu": lambda t: t.clamp_(min=0), "tanh": lambda t: t.tanh_()}
_ACT_BACKWARD = {
    "relu": lambda g, y: torch.ops.aten.threshold_backward(g, y, 0),
    "tanh": lambda g, y: torch.ops.aten.tanh_backward(g, y),
}
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
    only at the pathway's entries and scattered (CSR tasks). See :class:`LayerPlan`.
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
                buf, zero = torch.empty_like(weight), weight.new_zeros(())
                for i in plan.dense_tasks:
                    torch.where(plan.keep[i], weight, zero, out=buf)
                    torch.addmm(yt[i], buf, xt[i], beta=beta, out=yt[i])
            w = weight
        else:
            xt = flat.transpose(1, 2)  # [N, in, R] (a view: bmm takes either layout)
            w = torch.where(plan.keep, weight, 0.0)  # θ ⊙ M [N, out, in]
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
                        sampled = torch.sparse.sampled_addmm(
                            plan.pattern(w.dtype), gt.view(n * out_f, r), xt.view(n * in_f, r).t(), beta=0.0
                        )
                        gw.view(-1).index_add_(0, plan.idx, sampled.values())
                elif need_x:
                    gxt.zero_()
            if plan.dense_tasks:
                buf, zero = torch.empty_like(w), w.new_zeros(())
                buf2 = torch.empty_like(w) if need_w else None
                for i in plan.dense_tasks:
                    if need_x:
                        torch.where(plan.keep[i], w, zero, out=buf)
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
        self._plans: dict[bool, LayerPlan] = {}  # batch regime → plan (one object when they agree)
        self._views: dict[int, tuple[tuple, SparseViews]] = {}  # id(plan) → (weight state, views)

    def plan(self, rows: int | None = None) -> LayerPlan:
        """The layer's plan for ``rows`` samples per task (None: a small batch); rebuilt when the
        mask tensor is replaced."""
        mask = self.layer.weight_mask
        if self._mask is not mask:
            self._mask, self._plans, self._views = mask, {}, {}
        regime = _batch_regime(rows)
        plan = self._plans.get(regime)
        if plan is None:
            plan = LayerPlan(mask, self.backend, rows)
            other = self._plans.get(not regime)
            if other is not None and other.mode == plan.mode and other.flags == plan.flags:
                plan = other
            self._plans[regime] = plan
        return plan

    def pin_plan(self, plan: LayerPlan) -> None:
        """Run every batch size with ``plan`` (built for the layer's current mask) until the mask
        tensor is replaced; benchmarks use it to time one plan."""
        self._mask, self._plans, self._views = self.layer.weight_mask, {False: plan, True: plan}, {}

    def views(self, plan: LayerPlan | None = None) -> SparseViews | None:
        """The current sparse views of the layer's weight for ``plan`` (default: the small-batch
        plan), refreshed if the weight may have changed."""
        plan = self.plan() if plan is None else plan
        if not plan.nnz:
            return None
        w = self.layer.weight
        key = _weight_state(w)
        cached = self._views.get(id(plan))
        if cached is None or cached[1].weight is not w or cached[0] != key:
            cached = (key, SparseViews(plan, w))
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
        return _MaskedTaskLinear.apply(
            x, layer.weight, layer.bias, layer.weight_mask, layer.bias_mask, plan, self.views(plan), activation
        )

    def __getstate__(self):  # plans and views are caches: rebuilt after copy / unpickling
        return {"layer": self.layer, "backend": self.backend, "_mask": None, "_plans": {}, "_views": {}}


#: Former name of :class:`PathwayForward`.
FusedPathwayForward = PathwayForward
