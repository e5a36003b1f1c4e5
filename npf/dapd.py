"""Online neural pathways: Data Adaptive Pathway Discovery (DAPD, Eq. 2), per-task network copies
for MT10 pretraining, and the merge of those copies into one network (paper Section 4.3).

DAPD (:class:`DAPDController`)
    Each task n keeps a temporary buffer TD_n with only its most recent episode(s). Every
    ``interval`` episodes of task n, the SNIP saliency of every network is computed on TD_n at the
    current weights (each network's own loss, dense forward) and pushed into a window of the last
    ``M`` scores (:class:`ScoreAverager`); task n's mask becomes the global top-k of
    the window's mean (Eq. 2; the top-k of a sum equals the top-k of the mean). Once the task's
    stop statistic — episodic return (MuJoCo) or success rate (Meta-World), the mean over its last
    ``stop_window`` training episodes — reaches the threshold T_H, the task is frozen for good.
    ``mode="single_shot"`` scores once, on the first TD_n (data of the randomly initialised
    policy), and never again.

Pretraining copies (:func:`copies_factory`, :class:`~npf.nets.StackedMaskedLinear`)
    "One copy of the network per task, same initial weights, each trained on its own pathway":
    N copies are held as one network whose every linear layer has weights ``[N, out, in]``; copy
    n only ever sees task n's inputs (row n of a ``[N, B, ...]`` batch), so one batched SAC
    update trains the N copies independently (Adam/AdamW act element-wise, so one optimizer over
    the stacked weights is N independent optimizers). Copy n runs through W[n] ⊙ m_n.

Merge (:func:`merge_copies`)
    After pretraining, for each weight: in several tasks' pathways → the mean of those tasks'
    copies; in exactly one → that task's copy; in none → its initial value. Parameters that no
    mask covers (biases, unless ``mask_bias``) are used by every task: the mean of all copies.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from npf.algos.base import Algorithm, Batch
from npf.nets import StackedMaskedLinear, StackedMLP
from npf.pathways import Pathways, num_kept, snip_scores_all, topk_masks

DAPD_MODES = ("single_shot", "dapd")


# --------------------------------------------------------------------------------------------
# DAPD bookkeeping
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
                return {k: build(v, (*path, k)) for k, v in tree.items()}
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
        return {
            "num_tasks": self.num_tasks,
            "window": self.window,
            "keep_ratio": self.keep_ratio,
            "frozen": list(self._frozen),
            "history": [list(h) for h in self._history],
        }

    def load_state_dict(self, state: Mapping) -> None:
        if int(state["num_tasks"]) != self.num_tasks or int(state["window"]) != self.window:
            raise ValueError("ScoreAverager: state has a different num_tasks/window")
        self._frozen = [bool(f) for f in state["frozen"]]
        self._history = [deque(h, maxlen=self.window) for h in state["history"]]


def _cpu_scores(tree):
    """Score windows live on the CPU (top-k runs there anyway; keeps GPU memory and checkpoints
    device-independent)."""
    if isinstance(tree, Mapping):
        return {k: _cpu_scores(v) for k, v in tree.items()}
    return tree.detach().to("cpu")


class DAPDController:
    """When to (re-)score which task's pathway, the score window (Eq. 2) and the stop rule.

    ``threshold=None`` disables the stop rule (the "no threshold" ablation). The stop statistic
    of a task is the mean of its last ``stop_window`` training-episode values (return, or success
    in {0, 1} for success suites); it is tested only once ``stop_window`` episodes are in.
    """

    def __init__(
        self,
        num_tasks: int,
        mode: str = "dapd",
        window: int = 10,
        interval: int = 1,
        keep_ratio: float = 0.05,
        threshold: float | None = None,
        stop_window: int = 1,
    ):
        if mode not in DAPD_MODES:
            raise ValueError(f"DAPD mode must be one of {DAPD_MODES}, got {mode!r}")
        if interval < 1 or stop_window < 1:
            raise ValueError("DAPD interval and stop_window must be ≥ 1")
        self.num_tasks, self.mode, self.interval = num_tasks, mode, int(interval)
        self.threshold = None if threshold is None else float(threshold)
        self.stop_window = int(stop_window)
        self.averager = ScoreAverager(num_tasks, window, keep_ratio)
        self.discovered = False
        self.since = [0] * num_tasks  # episodes since the task was last scored
        self.recent: list[deque] = [deque(maxlen=self.stop_window) for _ in range(num_tasks)]
        self.rescores = [0] * num_tasks  # scoring events per task (incl. the first)
        self.frozen_at: list[int | None] = [None] * num_tasks  # env step at which the stop rule froze a task
        self.frozen_by: list[str | None] = [None] * num_tasks  # "threshold", "single_shot" or "merge"

    @property
    def frozen(self) -> tuple[bool, ...]:
        return self.averager.frozen

    def discover(self, scores: Sequence[Mapping[str, Mapping[str, Tensor]]]) -> list[dict]:
        """First scoring of every task (its TD_n holds the randomly initialised policy's data);
        returns each task's masks ``{role: {name: bool}}``. Single-shot freezes every task here."""
        if len(scores) != self.num_tasks:
            raise ValueError(f"discover: got scores of {len(scores)} tasks, expected {self.num_tasks}")
        masks = []
        for n, s in enumerate(scores):
            self.averager.push(n, _cpu_scores(s))
            self.rescores[n] += 1
            masks.append(self.averager.masks(n))
        self.discovered = True
        if self.mode == "single_shot":
            self.freeze_all("single_shot")
        return masks

    def observe(self, task: int, value: float, step: int | None = None) -> bool:
        """One finished training episode of ``task`` (its return or success); applies the stop
        rule and returns the task's frozen flag."""
        self.recent[task].append(float(value))
        self.since[task] += 1
        if (
            self.threshold is not None
            and self.discovered
            and not self.frozen[task]
            and len(self.recent[task]) >= self.stop_window
        ):
            stat = sum(self.recent[task]) / len(self.recent[task])
            if self.averager.maybe_freeze(task, stat, self.threshold):
                self.frozen_at[task], self.frozen_by[task] = step, "threshold"
        return self.frozen[task]

    def due(self, tasks: Sequence[int]) -> list[int]:
        """Of ``tasks`` (those that just finished an episode), the ones to re-score now."""
        if not self.discovered or self.mode != "dapd":
            return []
        return [n for n in dict.fromkeys(tasks) if not self.frozen[n] and self.since[n] >= self.interval]

    def rescore(self, task: int, scores: Mapping[str, Mapping[str, Tensor]]) -> dict | None:
        """Push one new score of ``task``; returns its new masks (top-k of the window mean), or
        None when the task is frozen."""
        if not self.averager.push(task, _cpu_scores(scores)):
            return None
        self.since[task] = 0
        self.rescores[task] += 1
        return self.averager.masks(task)

    def freeze_all(self, reason: str = "merge") -> None:
        """Freeze every task not frozen yet, recording ``reason`` ("merge" or "single_shot")."""
        for n in range(self.num_tasks):
            if not self.frozen[n]:
                self.frozen_by[n] = reason
            self.averager.freeze(n)

    def state_dict(self) -> dict:
        """Resumable state. The score windows of frozen tasks are never read again and are left
        out (they are the bulk of it: M × N × every maskable weight)."""
        av = self.averager.state_dict()
        av["history"] = [[] if f else h for f, h in zip(self.frozen, av["history"])]
        return {
            "averager": av,
            "discovered": self.discovered,
            "since": list(self.since),
            "recent": [list(r) for r in self.recent],
            "rescores": list(self.rescores),
            "frozen_at": [-1 if f is None else int(f) for f in self.frozen_at],
            "frozen_by": ["" if f is None else f for f in self.frozen_by],
        }

    def load_state_dict(self, s: Mapping) -> None:
        self.averager.load_state_dict(s["averager"])
        self.discovered = bool(s["discovered"])
        self.since = [int(x) for x in s["since"]]
        self.recent = [deque((float(v) for v in r), maxlen=self.stop_window) for r in s["recent"]]
        self.rescores = [int(x) for x in s["rescores"]]
        self.frozen_at = [None if int(f) < 0 else int(f) for f in s["frozen_at"]]
        if "frozen_by" in s:
            self.frozen_by = [f or None for f in s["frozen_by"]]
        else:  # a checkpoint from before frozen_by: the stop rule set frozen_at, freeze_all did the rest
            other = "single_shot" if self.mode == "single_shot" else "merge"
            self.frozen_by = [
                None if not fr else "threshold" if at is not None else other
                for fr, at in zip(self.frozen, self.frozen_at)
            ]


# --------------------------------------------------------------------------------------------
# SNIP on a shared network with per-task temperature
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def task_temperature(algo: Algorithm, task: int) -> Iterator[None]:
    """For an algorithm with one temperature per task (``log_alpha [N, 1, 1]``), make its losses
    on a single task's ``[B, ...]`` batch use task ``task``'s temperature."""
    la = getattr(algo, "log_alpha", None)
    if la is None or la.dim() < 3:
        yield
        return
    algo.log_alpha = la.detach()[task].reshape(1)
    try:
        yield
    finally:
        algo.log_alpha = la


def shared_snip_scores(
    algo: Algorithm, batch: Batch, task: int, mask_bias: bool = False
) -> dict[str, dict[str, Tensor]]:
    """SNIP scores of every role on task ``task``'s batch ``[B, ...]`` at the current shared
    weights (dense forward, the task's own temperature)."""
    with task_temperature(algo, task):
        return snip_scores_all(algo, batch, mask_bias=mask_bias)


# --------------------------------------------------------------------------------------------
# N copies of a network as one stacked network
# --------------------------------------------------------------------------------------------
def copies_factory(num_tasks: int):
    """Network factory for an algorithm whose networks are N stacked copies (pretraining)."""

    def make(in_dim, out_dim, hidden, activation="relu", output_activation=None):
        return StackedMLP(num_tasks, in_dim, out_dim, hidden, activation, output_activation)

    return make


def _stacked_layers(net: nn.Module) -> Iterator[tuple[str, StackedMaskedLinear]]:
    for name, mod in net.named_modules():
        if isinstance(mod, StackedMaskedLinear):
            yield (f"{name}." if name else ""), mod


def broadcast_state(state: Mapping[str, Tensor], num_tasks: int) -> dict[str, Tensor]:
    """A shared network's state dict → the stacked copies' state dict (every copy = ``state``)."""
    return {k: v.detach().unsqueeze(0).expand(num_tasks, *v.shape).clone() for k, v in state.items()}


def attach_copy_masks(algo: Algorithm, pathways: Pathways | None) -> None:
    """Attach task n's masks to copy n of every stacked network (and target); None removes them."""
    nets, targets = algo.networks(), algo.targets()
    for role, net in nets.items():
        for module in (net, targets.get(role)):
            if module is None:
                continue
            for prefix, layer in _stacked_layers(module):
                if pathways is None or role not in pathways.masks:
                    layer.set_masks(None, None)
                    continue
                d = pathways.masks[role]
                layer.set_masks(d[prefix + "weight"], d.get(prefix + "bias"))


@contextlib.contextmanager
def copy_masks_removed(algo: Algorithm) -> Iterator[None]:
    saved = []
    for module in list(algo.networks().values()) + list(algo.targets().values()):
        for _, layer in _stacked_layers(module):
            saved.append((layer, layer.weight_mask, layer.bias_mask))
            layer.weight_mask = layer.bias_mask = None
    try:
        yield
    finally:
        for layer, wm, bm in saved:
            layer.weight_mask, layer.bias_mask = wm, bm


def stacked_maskable(net: nn.Module, mask_bias: bool = False) -> dict[str, nn.Parameter]:
    out = {}
    for prefix, layer in _stacked_layers(net):
        out[prefix + "weight"] = layer.weight
        if mask_bias:
            out[prefix + "bias"] = layer.bias
    return out


def copies_snip_scores(algo: Algorithm, batch: Batch, mask_bias: bool = False) -> list[dict[str, dict[str, Tensor]]]:
    """SNIP scores of every copy on its own task's data, all at once: ``batch`` is ``[N, B, ...]``
    and row n only reaches copy n, so ∂L/∂W[n] is task n's gradient at copy n's weights (dense
    forward). Returns one ``{role: {name: score}}`` per task."""
    nets = algo.networks()
    params = {role: stacked_maskable(nets[role], mask_bias) for role in algo.roles}
    with copy_masks_removed(algo):
        losses = algo.losses(batch)
        per_role = {}
        for i, role in enumerate(algo.roles):
            names = list(params[role])
            tensors = [params[role][k] for k in names]
            grads = torch.autograd.grad(losses[role], tensors, retain_graph=i < len(algo.roles) - 1, allow_unused=True)
            per_role[role] = {
                k: torch.zeros_like(p) if g is None else (p.detach() * g).abs()
                for k, p, g in zip(names, tensors, grads)
            }
    n = next(iter(per_role.values()))
    num = next(iter(n.values())).shape[0]
    return [{role: {k: v[t] for k, v in d.items()} for role, d in per_role.items()} for t in range(num)]


def copies_group_grad_norms(net: nn.Module, masks: Mapping[str, Tensor]) -> Tensor:
    """[N] ‖m_n ⊙ ∂L/∂W[n]‖ of each copy over its own pathway, from the stacked ``.grad``s."""
    sq = None
    for prefix, layer in _stacked_layers(net):
        for kind in ("weight", "bias"):
            m = masks.get(prefix + kind)
            g = getattr(layer, kind).grad
            if m is None or g is None:
                continue
            v = (g.detach().double().pow(2) * m.to(g.device, torch.float64)).reshape(g.shape[0], -1).sum(1)
            sq = v if sq is None else sq + v
    return torch.zeros(0) if sq is None else sq.sqrt().cpu()


# --------------------------------------------------------------------------------------------
# Merge
# --------------------------------------------------------------------------------------------
def merge_copies(
    copies: Mapping[str, Tensor], init: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Merge N copies ``{name: [N, *shape]}`` into one state ``{name: [*shape]}``.

    For a parameter with masks ``[N, *shape]``: an entry in several tasks' pathways gets the mean
    of those tasks' copies, an entry in one pathway that task's value, an entry in none its
    initial value ``init[name]``. Parameters without masks (used by every task) get the mean of
    all copies.
    """
    out = {}
    for name, c in copies.items():
        m = masks.get(name)
        if m is None:
            out[name] = c.mean(0)
            continue
        m = m.to(c.device)
        if m.shape != c.shape:
            raise ValueError(f"merge_copies: mask {name} has shape {tuple(m.shape)}, copies {tuple(c.shape)}")
        count = m.sum(0)
        total = torch.where(m, c, torch.zeros_like(c)).sum(0)
        merged = total / count.clamp(min=1).to(c.dtype)
        out[name] = torch.where(count > 0, merged, init[name].to(c.device, c.dtype))
    return out


def merged_network_state(
    copies_net: nn.Module, init_state: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    """State dict of the merged shared network from one stacked network (see :func:`merge_copies`)."""
    return merge_copies(copies_net.state_dict(), init_state, masks or {})
