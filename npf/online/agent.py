"""The networks of one online run: how they act, learn, get their pathways (DAPD) and merge.

NPF phases: ``pretrain`` (N stacked per-task copies with the same initial weights, each trained
on its own pathway) then ``shared`` (the copies merged into one network with N frozen pathways,
task gradients averaged). Baselines are ``shared`` from the start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from npf.algos.sac import SAC
from npf.baselines import PCGradSAC
from npf.dapd import (
    DAPDController,
    attach_copy_masks,
    broadcast_state,
    copies_factory,
    copies_group_grad_norms,
    copies_snip_scores,
    merge_copies,
    shared_snip_scores,
)
from npf.multitask import MultitaskLearner, factory_for, obs_dim_for
from npf.online.settings import CONDITIONING, METHODS, OnlineSettings
from npf.online_buffers import TaskReplay
from npf.pathways import Pathways


class OnlineAgent:
    """The networks of one online run and how they act, learn and get their pathways.

    Phases of NPF: ``pretrain`` (N stacked per-task copies, each on its own pathway) then
    ``shared`` (one network, N pathways). Baselines are always ``shared``.
    """

    def __init__(
        self,
        method: str,
        num_tasks: int,
        obs_dim: int,
        act_dim: int,
        settings: OnlineSettings,
        device: torch.device,
        seed: int,
        dapd_threshold: float | None,
        backend: str | None = None,
    ):
        if method not in CONDITIONING:
            raise ValueError(f"online method must be one of {METHODS}, got {method!r}")
        self.method, self.n, self.settings, self.device = method, num_tasks, settings, device
        self._backend = {} if backend is None else {"backend": backend}  # masked-layer compute backend
        self.cond = CONDITIONING[method]
        self.npf = self.cond == "npf"
        self.pretrain_steps = settings.pretrain_steps if method == "sac-npf" else 0
        cls = PCGradSAC if method == "pcgrad" else SAC
        self.shared: SAC = cls(
            obs_dim_for(self.cond, obs_dim, num_tasks),
            act_dim,
            settings.sac,
            device,
            factory=factory_for(self.cond, num_tasks),
            num_temperatures=num_tasks,
            seed=seed,
        )
        self.copies: SAC | None = None
        self.phase = "shared"
        if self.npf and self.pretrain_steps > 0:
            self.phase = "pretrain"
            self.copies = SAC(
                obs_dim,
                act_dim,
                settings.sac,
                device,
                factory=copies_factory(num_tasks),
                num_temperatures=num_tasks,
                seed=seed,
            )
            for role, net in self.shared.networks().items():
                self.copies.networks()[role].load_state_dict(broadcast_state(net.state_dict(), num_tasks))
            for role, tgt in self.shared.targets().items():
                self.copies.targets()[role].load_state_dict(broadcast_state(tgt.state_dict(), num_tasks))
            self.copies.loss_scale = 1.0  # mean over tasks, as after the merge
        self.pathways: Pathways | None = None
        self.learner: MultitaskLearner | None = None
        if not self.npf:
            self.learner = MultitaskLearner(self.shared, self.cond, num_tasks, reduce="mean", **self._backend)
        self.dapd = (
            DAPDController(
                num_tasks,
                settings.dapd_mode,
                settings.dapd_M,
                settings.dapd_interval,
                settings.keep_ratio,
                dapd_threshold,
                settings.stop_window,
            )
            if self.npf
            else None
        )
        self.merged_at: int | None = None  # update count at the merge
        self.merged_at_step: int | None = None  # env step of the merge

    # ---- acting / learning -------------------------------------------------------------------
    @property
    def algo(self) -> SAC:
        return self.copies if self.phase == "pretrain" else self.shared

    @property
    def num_updates(self) -> int:
        return self.algo.num_updates

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """``obs [N, E, obs_dim]`` → ``[N, E, act_dim]``."""
        if self.learner is not None:
            return self.learner.act(obs, deterministic=deterministic)
        return self.algo.act(obs, deterministic=deterministic)  # copies, or the dense network before pathways

    def update(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """One synchronous update over all tasks (``batch``: stacked ``[N, B, ...]``)."""
        if self.phase == "pretrain":
            return self.copies.update(batch)
        return self.learner.update(batch)

    def maybe_merge(self, step: int | None = None) -> bool:
        """Merge the copies once ``pretrain_steps`` updates are done (at env ``step``); True when
        it happened."""
        if self.phase == "pretrain" and self.copies.num_updates >= self.pretrain_steps:
            self.merge(step)
            return True
        return False

    # ---- pathways ----------------------------------------------------------------------------
    def scores(self, dapd_buffer: TaskReplay, tasks: Sequence[int]) -> dict[int, dict]:
        """SNIP scores of the given tasks on their TD_n at the current weights."""
        if self.phase == "pretrain":
            every = copies_snip_scores(self.copies, dapd_buffer.contents(), self.settings.mask_bias)
            return {n: every[n] for n in tasks}
        return {
            n: shared_snip_scores(self.shared, dapd_buffer.task_contents(n), n, self.settings.mask_bias) for n in tasks
        }

    def discover(self, dapd_buffer: TaskReplay) -> None:
        masks = self.dapd.discover([self.scores(dapd_buffer, range(self.n))[n] for n in range(self.n)])
        self.pathways = Pathways.from_task_masks(masks, self.settings.keep_ratio, self.settings.mask_bias)
        self._attach()

    def rescore(self, dapd_buffer: TaskReplay, tasks: Sequence[int]) -> list[int]:
        """DAPD re-scoring of ``tasks``; returns those whose masks were replaced."""
        if not tasks:
            return []
        changed = []
        for n, s in self.scores(dapd_buffer, tasks).items():
            m = self.dapd.rescore(n, s)
            if m is not None:
                self.pathways.set_task_masks(n, m)
                changed.append(n)
        if changed:
            self._attach()
        return changed

    def set_pathways(self, pathways: Pathways) -> None:
        """Act and learn through ``pathways`` (e.g. those of a finished run's final.pt)."""
        self.pathways = pathways
        self._attach()

    def _npf_learner(self) -> MultitaskLearner:
        return MultitaskLearner(self.shared, "npf", self.n, self.pathways, reduce="mean", **self._backend)

    def _attach(self) -> None:
        if self.phase == "pretrain":
            attach_copy_masks(self.copies, self.pathways)
        elif self.learner is None:
            self.learner = self._npf_learner()
        else:
            self.pathways.attach(self.shared, self.learner.backend)

    def merge(self, step: int | None = None) -> None:
        """End of pretraining (at env ``step``): merge the copies into the shared network, freeze
        the pathways."""
        copies, shared = self.copies, self.shared
        with torch.no_grad():
            for role, net in shared.networks().items():
                init = {k: v.detach().clone() for k, v in net.state_dict().items()}  # still θ0
                masks = self.pathways.masks.get(role, {})
                net.load_state_dict(merge_copies(copies.networks()[role].state_dict(), init, masks))
                tgt = shared.targets().get(role)
                if tgt is not None:
                    tgt.load_state_dict(merge_copies(copies.targets()[role].state_dict(), init, masks))
            shared.log_alpha.copy_(copies.log_alpha.detach())
        shared.num_updates = copies.num_updates
        shared.generator.set_state(copies.generator.get_state())
        self.merged_at, self.merged_at_step = copies.num_updates, step
        self.copies = None
        self.phase = "shared"
        self.dapd.freeze_all("merge")
        self.learner = self._npf_learner()

    def finalize(self, step: int | None = None) -> None:
        """Before writing final.pt (at env ``step``): a run stopped during pretraining is merged."""
        if self.npf and self.pathways is None:
            raise RuntimeError(
                "no pathways were discovered: total_steps must exceed learning_starts by at least one episode"
            )
        if self.phase == "pretrain":
            self.merge(step)

    def group_grad_norms(self) -> dict[str, np.ndarray]:
        """role → [N] ‖m_n ⊙ ∂L/∂w‖ of the last update's gradient over each task's pathway."""
        out = {}
        for role, net in self.algo.networks().items():
            if self.phase == "pretrain":
                out[role] = copies_group_grad_norms(net, self.pathways.masks[role]).numpy()
            else:
                grads = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
                out[role] = self.pathways.group_grad_norms(role, grads)
        return out

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "method": self.method,
            "phase": self.phase,
            "shared": self.shared.state_dict(),
            "copies": None if self.copies is None else self.copies.state_dict(),
            "pathways": None if self.pathways is None else self.pathways.state_dict(),
            "dapd": None if self.dapd is None else self.dapd.state_dict(),
            "merged_at": -1 if self.merged_at is None else self.merged_at,
            "merged_at_step": -1 if self.merged_at_step is None else self.merged_at_step,
        }

    def load_state_dict(self, state: Mapping) -> None:
        if state["method"] != self.method:
            raise ValueError(f"checkpoint is of method {state['method']!r}, not {self.method!r}")
        self.shared.load_state_dict(cpu_generators(state["shared"]))
        self.phase = state["phase"]
        if self.phase == "pretrain":
            self.copies.load_state_dict(cpu_generators(state["copies"]))
        else:
            self.copies = None
        if self.dapd is not None and state["dapd"] is not None:
            self.dapd.load_state_dict(state["dapd"])
        self.merged_at = None if int(state["merged_at"]) < 0 else int(state["merged_at"])
        self.merged_at_step = None if int(state.get("merged_at_step", -1)) < 0 else int(state["merged_at_step"])
        if state["pathways"] is not None:
            self.pathways = Pathways.from_state_dict(state["pathways"])
            if self.phase == "pretrain":
                attach_copy_masks(self.copies, self.pathways)
            else:
                self.learner = self._npf_learner()


def cpu_generators(state: Mapping) -> dict:
    s = dict(state)
    for k in ("generator", "pc_generator"):
        if k in s and isinstance(s[k], torch.Tensor):
            s[k] = s[k].cpu()
    return s


def numpy_policy(agent: OnlineAgent, device: torch.device, deterministic: bool = True):
    """``agent`` as a function of numpy observations ``[N, E, obs_dim]`` → actions."""

    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic).cpu().numpy()

    return policy
