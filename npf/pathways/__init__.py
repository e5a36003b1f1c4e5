"""Neural pathways: SNIP saliency, global top-k masks, N task masks over one set of weights.

A *pathway* of task n through a network is a binary mask m_n over its weight matrices; the task
runs through θ ⊙ m_n (paper Section 4.1). The package

* scores weights on one task's batch with SNIP, S(θ_q) = |θ_q · ∂L/∂θ_q| (Eq. 1), and keeps the
  ``keep_ratio`` largest scores globally across all layers of one network (:mod:`.snip`);
* runs the masked N-task layer with one of the backends ``auto`` / ``dense`` / ``sparse`` /
  ``autograd`` (:mod:`.backends`, docs/backends.md);
* holds the masks of N tasks for every network of an algorithm and attaches them to its
  :class:`~npf.nets.MaskedLinear` layers, targets included (:class:`Pathways`, :mod:`.container`).

Only weight matrices of ``MaskedLinear`` layers are masked (:mod:`.layers`). Biases are shared by
all tasks and always trained unless ``mask_bias=True`` (the authors' code leaves biases unmasked).
Output heads of the multi-head baseline (:class:`~npf.nets.StackedLinear`) are never masked.
Masks are bool tensors ``[N, *weight.shape]`` keyed by the parameter's name inside its network
(``"0.weight"``, ``"q1.2.weight"`` …), one dict per role. DAPD's score window is
:class:`npf.dapd.ScoreAverager`.
"""

from __future__ import annotations

import sys
import types

from npf.pathways import backends
from npf.pathways.backends import (
    BACKEND_ALIASES,
    BACKENDS,
    DEFAULT_BACKEND,
    FUSABLE_ACTIVATIONS,
    FusedPathwayForward,
    LayerPlan,
    PathwayForward,
    SparseViews,
    choose_plan,
    resolve_backend,
    sparse_density_threshold,
)
from npf.pathways.container import STATE_FORMAT, Pathways
from npf.pathways.layers import all_modules, maskable_parameters, masked_layers, masks_removed
from npf.pathways.snip import Masks, Scores, num_kept, snip_scores, snip_scores_all, topk_masks

__all__ = [
    "BACKENDS",
    "BACKEND_ALIASES",
    "DEFAULT_BACKEND",
    "FUSABLE_ACTIVATIONS",
    "STATE_FORMAT",
    "FusedPathwayForward",
    "LayerPlan",
    "Masks",
    "PathwayForward",
    "Pathways",
    "Scores",
    "SparseViews",
    "all_modules",
    "choose_plan",
    "maskable_parameters",
    "masked_layers",
    "masks_removed",
    "num_kept",
    "resolve_backend",
    "snip_scores",
    "snip_scores_all",
    "sparse_density_threshold",
    "topk_masks",
]

#: The backends' speed knobs live in :mod:`npf.pathways.backends`, where the plans read them:
#: ``npf.pathways.<name>`` reads them there, and a write through the package is refused (it would
#: change nothing).
_KNOBS = frozenset(k for k in vars(backends) if k.startswith("CPU_"))


class _KnobsLiveInBackends(types.ModuleType):
    def __getattr__(self, name):
        if name in _KNOBS:
            return getattr(backends, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in _KNOBS:
            raise AttributeError(f"{name} is read by the plans from npf.pathways.backends: set it there")
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KnobsLiveInBackends
