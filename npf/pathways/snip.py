"""SNIP saliency S(θ_q) = |θ_q · ∂L/∂θ_q| (Eq. 1) of each network's maskable weights on one task's
batch, L the network's own loss from :meth:`Algorithm.losses`, and the global top-k that keeps the
``keep_ratio`` largest scores across all layers of one network (paper: 5 %)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import torch
from torch import Tensor

from npf.algos.base import Algorithm, Batch
from npf.pathways.layers import maskable_parameters, masks_removed

Scores = dict[str, Tensor]
Masks = dict[str, Tensor]


def snip_scores_all(
    algo: Algorithm, batch: Batch, roles: Sequence[str] | None = None, mask_bias: bool = False
) -> dict[str, Scores]:
    """SNIP saliency |θ · ∂L_role/∂θ| of every role's maskable parameters on ONE task's batch.

    ``algo.losses(batch)`` is evaluated once, densely (any attached masks are removed for the
    call and restored after). Gradients come from :func:`torch.autograd.grad` restricted to each
    network's own parameters: no ``.grad`` field and no optimizer is touched.
    """
    nets = algo.networks()
    roles = tuple(algo.roles if roles is None else roles)
    for role in roles:
        if role not in nets:
            raise ValueError(f"role {role!r} is not a network of {type(algo).__name__} (has {sorted(nets)})")
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
                grads = torch.autograd.grad(loss, tensors, retain_graph=i < len(roles) - 1, allow_unused=True)
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
        out[name] = keep[start : start + n].reshape(scores[name].shape)
        start += n
    return out
