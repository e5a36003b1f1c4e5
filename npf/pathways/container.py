"""The :class:`Pathways` container: N task masks per network of one algorithm, attached to its
:class:`~npf.nets.MaskedLinear` layers with one backend, their statistics and their bit-packed state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from npf.algos.base import Algorithm, Batch
from npf.pathways.backends import DEFAULT_BACKEND, PathwayForward, resolve_backend
from npf.pathways.layers import all_modules, masked_layers
from npf.pathways.snip import num_kept, snip_scores_all, topk_masks

STATE_FORMAT = "npf.pathways/1"


class Pathways:
    """Masks of N tasks for each network (role) of one algorithm.

    ``masks[role][param_name]`` is a bool tensor ``[N, *param.shape]``; task n's pathway through
    that network is ``{name: masks[role][name][n]}``.
    """

    def __init__(
        self, masks: Mapping[str, Mapping[str, Tensor]], keep_ratio: float | None = None, mask_bias: bool = False
    ):
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
    def from_task_masks(
        cls,
        task_masks: Sequence[Mapping[str, Mapping[str, Tensor]]],
        keep_ratio: float | None = None,
        mask_bias: bool = False,
    ) -> Pathways:
        """Stack per-task ``{role: {name: bool tensor}}`` dicts into one Pathways."""
        if not task_masks:
            raise ValueError("Pathways: no tasks given")
        roles = list(task_masks[0])
        stacked = {
            role: {
                name: torch.stack([tm[role][name].to("cpu", torch.bool) for tm in task_masks])
                for name in task_masks[0][role]
            }
            for role in roles
        }
        return cls(stacked, keep_ratio, mask_bias)

    @classmethod
    def discover(
        cls,
        algo: Algorithm,
        task_batches: Sequence[Batch],
        keep_ratio: float,
        mask_bias: bool = False,
        roles: Sequence[str] | None = None,
    ) -> Pathways:
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

    def subset(self, tasks: Sequence[int]) -> Pathways:
        """Pathways of the given tasks only, in that order (a [len(tasks), ...] stack)."""
        idx = torch.as_tensor(list(tasks), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_tasks:
            raise IndexError(f"tasks {list(tasks)} out of range for {self.num_tasks} tasks")
        return Pathways(
            {r: {k: m[idx] for k, m in d.items()} for r, d in self.masks.items()}, self.keep_ratio, self.mask_bias
        )

    def task_view(self, n: int) -> Pathways:
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
        Attaching again replaces masks and backend. Every network of ``algo`` with masked layers
        must have masks (a ValueError names the one that has none).
        """
        backend = resolve_backend(backend)
        nets, targets = algo.networks(), algo.targets()
        for role in self.masks:
            if role not in nets:
                raise ValueError(
                    f"Pathways has masks for role {role!r} but {type(algo).__name__} has networks {sorted(nets)}"
                )
        self._check_covers(algo)
        for role in self.masks:
            for net in (nets[role], targets.get(role)):
                if net is not None:
                    self._attach_net(role, net, backend)

    @staticmethod
    def refresh(algo: Algorithm) -> None:
        """Rebuild every attached layer's sparse views from the current weights now. Not needed
        after optimizer steps, ``soft_update``, ``load_state_dict`` or any in-place op on the
        parameters (detected); only after writes through ``weight.data``."""
        for net in all_modules(algo):
            for _, layer in masked_layers(net):
                if isinstance(layer.pathway_forward, PathwayForward):
                    layer.pathway_forward.refresh()

    def _attach_net(self, role: str, net: nn.Module, backend: str) -> None:
        d = self.masks[role]
        used = set()
        for prefix, layer in masked_layers(net):
            wkey, bkey = prefix + "weight", prefix + "bias"
            if wkey not in d:
                raise ValueError(f"Pathways: no mask for {role}/{wkey}")
            wm = d[wkey]
            if tuple(wm.shape[1:]) != tuple(layer.weight.shape):
                raise ValueError(
                    f"Pathways: mask {role}/{wkey} has shape {tuple(wm.shape[1:])}, "
                    f"weight is {tuple(layer.weight.shape)}"
                )
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
        for net in all_modules(algo):
            for _, layer in masked_layers(net):
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
        return {
            "format": STATE_FORMAT,
            "num_tasks": self.num_tasks,
            "keep_ratio": self.keep_ratio,
            "mask_bias": self.mask_bias,
            "masks": masks,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> Pathways:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a pathways state (format {state.get('format')!r}, expected {STATE_FORMAT!r})")
        masks = {}
        for role, d in state["masks"].items():
            masks[role] = {}
            for name, entry in d.items():
                shape = tuple(int(s) for s in entry["shape"])
                count = int(np.prod(shape))
                packed = entry["bits"].numpy()
                if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (count + 7) // 8:
                    raise ValueError(
                        f"mask {role}/{name}: bit array holds {packed.size} {packed.dtype} values, "
                        f"shape {list(shape)} needs {(count + 7) // 8} uint8 (truncated or foreign)"
                    )
                bits = np.unpackbits(packed, count=count).astype(bool)
                masks[role][name] = torch.from_numpy(bits.reshape(shape))
        return cls(masks, state.get("keep_ratio"), bool(state.get("mask_bias", False)))

    def check(self, algo: Algorithm | None = None, tasks: Sequence[str] | None = None) -> None:
        """Raise a one-line ValueError when a task's pathway through some network is empty (every
        mask entry false: the network would give that task its biases only) or, given ``algo``,
        when a network of ``algo`` with masked layers has no masks (it would run unmasked and be
        shared by all tasks). ``tasks``: the task names, for the message."""
        for role in self.masks:
            empty = (~self._flat(role).any(1)).nonzero().flatten().tolist()
            if empty:
                n = empty[0]
                name = f"task {tasks[n]!r}" if tasks is not None and n < len(tasks) else f"task {n}"
                raise ValueError(f"{name} has an empty pathway through network {role!r} (every mask entry false)")
        if algo is not None:
            self._check_covers(algo)

    def _check_covers(self, algo: Algorithm) -> None:
        for role, net in algo.networks().items():
            if role not in self.masks and next(masked_layers(net), None) is not None:
                raise ValueError(
                    f"no masks for network {role!r} of {type(algo).__name__} (masks cover {sorted(self.masks)})"
                )

    def equals(self, other: Pathways) -> bool:
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
