"""One synchronous multitask step over N tasks, batched over the task axis.

:class:`MultitaskLearner` wraps an :class:`~npf.algos.base.Algorithm` written for one task and
conditions it on the task in one of three ways:

``npf``
    Neural pathways: the N task masks are attached to the algorithm's networks (and targets);
    a stacked ``[N, B, ...]`` batch runs task n through θ ⊙ m_n in one batched pass, and one
    backward gives Σ_n m_n ⊙ ∇_n (Algorithm 1).
``mt``
    Offline-MT baseline: a one-hot task id is appended to ``obs`` and ``next_obs``; build the
    algorithm with ``obs_dim_for("mt", obs_dim, N)``.
``mhmt``
    Multi-head baseline: shared trunk, one output head per task; build the algorithm with
    ``factory=factory_for("mhmt", N)``.

``reduce="sum"`` (offline, Algorithm 1) sets ``algo.loss_scale = N`` so the N per-task mean losses
are summed; ``reduce="mean"`` (online, Section 4.3) sets it to 1 so they are averaged. Every
update is ONE call of ``algo.update`` on the stacked batch; there is no Python loop over tasks.

Optimizer state is global (one optimizer per network, as in Algorithm 1). A weight receives
gradient only from the tasks whose pathway contains it; on steps where its gradient is zero Adam
still decays its moments and moves it by momentum. Weights outside the union of all pathways
have zero moments and never move — unless the optimizer applies weight decay (AdamW), which
shrinks every weight; those weights are unused by every task, so results are unaffected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from npf.algos.base import Algorithm, Batch
from npf.nets import MLPFactory, mlp, multihead_factory
from npf.pathways import DEFAULT_BACKEND, Pathways, resolve_backend

METHODS = ("npf", "mt", "mhmt")
REDUCTIONS = ("sum", "mean")
OBS_KEYS = ("obs", "next_obs")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def obs_dim_for(method: str, obs_dim: int, num_tasks: int) -> int:
    """Observation size the algorithm must be built with (``mt`` appends an N-way one-hot)."""
    _check_method(method)
    return obs_dim + num_tasks if method == "mt" else obs_dim


def factory_for(method: str, num_tasks: int) -> MLPFactory:
    """Network factory the algorithm must be built with (``mhmt``: one output head per task)."""
    _check_method(method)
    return multihead_factory(num_tasks) if method == "mhmt" else mlp


def stack_batches(batches: Sequence[Batch]) -> dict[str, Tensor]:
    """Stack N per-task batches ``{key: [B, ...]}`` into one ``{key: [N, B, ...]}`` batch."""
    if not batches:
        raise ValueError("stack_batches: no batches given")
    keys = set(batches[0])
    for i, b in enumerate(batches[1:], 1):
        if set(b) != keys:
            raise ValueError(f"stack_batches: batch {i} has keys {sorted(b)}, batch 0 has {sorted(keys)}")
    out = {}
    for k in batches[0]:
        shapes = {tuple(b[k].shape) for b in batches}
        if len(shapes) != 1:
            raise ValueError(f"stack_batches: {k!r} has different shapes across tasks: {sorted(shapes)}")
        out[k] = torch.stack([b[k] for b in batches])
    return out


def append_one_hot(obs: Tensor, num_tasks: int, task: int | None = None) -> Tensor:
    """Append a one-hot task id to ``obs``. With ``task=None`` the first axis is the task axis
    (``[N, ..., d]`` → ``[N, ..., d + N]``); otherwise every row gets ``task``'s id."""
    if task is None:
        if obs.shape[0] != num_tasks:
            raise ValueError(f"obs has {obs.shape[0]} tasks on its first axis, expected {num_tasks}")
        eye = torch.eye(num_tasks, dtype=obs.dtype, device=obs.device)
        hot = eye.reshape(num_tasks, *([1] * (obs.dim() - 2)), num_tasks).expand(*obs.shape[:-1], num_tasks)
    else:
        hot = torch.zeros(*obs.shape[:-1], num_tasks, dtype=obs.dtype, device=obs.device)
        hot[..., task] = 1
    return torch.cat([obs, hot], dim=-1)


class MultitaskLearner:
    """N tasks through one algorithm with task conditioning ``method`` (see module docstring).

    ``pathways`` is required for ``npf`` and is attached to the algorithm here. ``backend`` is how
    the masked layers compute (config key ``pathway_backend``): ``"auto"`` (default), ``"dense"``,
    ``"sparse"`` or the reference ``"autograd"``; all give the same numbers (see
    :meth:`Pathways.attach`, docs/backends.md; ``"fused"`` is an old name of ``"auto"``). It is
    validated for every method but only used by ``npf``. While attached, the algorithm's networks
    expect ``[N, ...]`` inputs.
    """

    def __init__(
        self,
        algo: Algorithm,
        method: str,
        num_tasks: int,
        pathways: Pathways | None = None,
        reduce: str = "sum",
        backend: str = DEFAULT_BACKEND,
    ):
        _check_method(method)
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be ≥ 1, got {num_tasks}")
        self.algo, self.method, self.num_tasks, self.reduce = algo, method, num_tasks, reduce
        self.pathways = pathways
        self.backend = resolve_backend(backend)
        if method == "npf":
            if pathways is None:
                raise ValueError("method 'npf' needs pathways (Pathways.discover(...))")
            if pathways.num_tasks != num_tasks:
                raise ValueError(f"pathways hold {pathways.num_tasks} tasks, learner has {num_tasks}")
            pathways.attach(algo, self.backend)
        elif pathways is not None:
            raise ValueError(f"method {method!r} takes no pathways")
        algo.loss_scale = float(num_tasks) if reduce == "sum" else 1.0

    # ---- batches -----------------------------------------------------------------------------
    def prepare(self, task_batches: Sequence[Batch] | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """List of N per-task batches (or an already stacked ``[N, B, ...]`` batch) → the stacked
        batch the algorithm sees (with one-hot ids for ``mt``)."""
        if isinstance(task_batches, Mapping):
            batch = dict(task_batches)
        else:
            if len(task_batches) != self.num_tasks:
                raise ValueError(f"got {len(task_batches)} task batches, expected {self.num_tasks}")
            batch = stack_batches(task_batches)
        for k, v in batch.items():
            if v.shape[0] != self.num_tasks:
                raise ValueError(f"batch[{k!r}] has {v.shape[0]} tasks on its first axis, expected {self.num_tasks}")
        if self.method == "mt":
            for k in OBS_KEYS:
                if k in batch:
                    batch[k] = append_one_hot(batch[k], self.num_tasks)
        return batch

    def update(self, task_batches: Sequence[Batch] | Mapping[str, Tensor]) -> dict[str, float]:
        """One synchronous step of every network on all N tasks (one ``algo.update`` call)."""
        return self.algo.update(self.prepare(task_batches))

    def losses(self, task_batches: Sequence[Batch] | Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The algorithm's per-role losses on all N tasks at once (scaled by ``loss_scale``)."""
        return self.algo.losses(self.prepare(task_batches))

    # ---- acting ------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Actions of all tasks at once: ``obs [N, E, obs_dim]`` → ``[N, E, act_dim]``; task n acts
        through its pathway (npf), its one-hot id (mt) or its head (mhmt)."""
        if obs.shape[0] != self.num_tasks:
            raise ValueError(f"obs has {obs.shape[0]} tasks on its first axis, expected {self.num_tasks}")
        if self.method == "mt":
            obs = append_one_hot(obs, self.num_tasks)
        return self.algo.act(obs, deterministic=deterministic)

    @torch.no_grad()
    def act_task(self, task: int, obs: Tensor, deterministic: bool = True) -> Tensor:
        """Actions of one task: ``obs [E, obs_dim]`` → ``[E, act_dim]``."""
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task {task} out of range for {self.num_tasks} tasks")
        if self.method == "mt":
            return self.algo.act(append_one_hot(obs, self.num_tasks, task), deterministic=deterministic)
        # npf / mhmt: the attached masks (heads) need the task axis; only row `task` is used.
        # (To run one pathway alone, attach ``pathways.task_view(task)`` and feed [1, ...].)
        full = obs.new_zeros(self.num_tasks, *obs.shape)
        full[task] = obs
        return self.algo.act(full, deterministic=deterministic)[task]

    def state_dict(self) -> dict:
        return {
            "method": self.method,
            "num_tasks": self.num_tasks,
            "reduce": self.reduce,
            "pathways": None if self.pathways is None else self.pathways.state_dict(),
        }
