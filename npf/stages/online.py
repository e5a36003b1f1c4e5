"""Stages ``train_online``, ``online_evaluate`` and ``dapd_ablation``: online multitask SAC with
neural pathways (SAC+NPF) and its baselines (paper Section 4.3, Table 4, Figs. 3, 4, 13, 14).

Methods (``online.methods``)
    ``sac-npf``  SAC+NPF: pathways found online with DAPD; on MT10 with ``pretrain_steps > 0``,
                 one copy of the networks per task (same initial weights) is first trained on its
                 own pathway with DAPD, then the copies are merged and the pathways frozen; after
                 that the N tasks share one network and their gradients are averaged.
    ``sac-npf-nopretrain``  the same with ``pretrain_steps = 0``: pathways configured jointly on
                 the shared network from the start (Fig. 4's "no-pretrain"; run when
                 ``online.grad_norm_ablation``).
    ``mt-sac``   one-hot task id appended to the observation, one temperature per task.
    ``mh-sac``   shared trunk, one output head per task, one temperature per task.
    ``pcgrad``   MT-SAC whose actor/critic steps use PCGrad (:mod:`npf.baselines`).

Loop. One :class:`~npf.rollout.EnvPool` steps the envs of all N tasks (``envs_per_task`` each)
with one policy forward per step; every task has its own replay buffer D_n and DAPD buffer TD_n
(:class:`~npf.online_buffers.TaskReplay`); once training has started, every env step of each task
is followed by ``updates_per_step`` synchronous updates over all N tasks (one stacked ``[N, B]``
batch, :meth:`~npf.multitask.MultitaskLearner.update`, ``reduce="mean"``). Before
``learning_starts`` env steps the randomly initialised policy collects (stochastic actions, dense
network): "we collect samples using a randomly parameterized policy". Training starts at the first
episode boundary at or after ``learning_starts``; NPF scores its first pathways there, on TD_n.
``step`` counts env steps per task; with one update per env step it equals gradient updates
(plus ``learning_starts``).

All envs run in lock step (fixed-length episodes: 150 steps MT10, 1000 cheetah), so episodes of
every task end together. Checkpoints are written only at those boundaries: the env pool restarts
its next episodes from their deterministic seeds and a resumed run continues exactly.

Resume. ``checkpoint.pt`` (every ``checkpoint_every`` env steps, at a boundary) holds the
networks, optimizers, temperatures, pathways, DAPD state (score windows, counters, frozen flags),
the DAPD buffers TD_n, the episode counters of the env pool, every RNG state and the CSV rows so
far. The replay buffers are stored incrementally under ``replay/`` (only rows added since the
previous checkpoint; :class:`~npf.online_buffers.ChunkStore`), so every checkpoint includes the
buffers exactly and a resumed run is identical to an uninterrupted one; a kill loses at most the
env steps and updates since the last checkpoint (≤ ``checkpoint_every`` + one episode), which are
recomputed.

Outputs (run dir ``out_dir``): ``final.pt`` (the shared network after any merge, pathways),
``metrics.csv`` (``step, updates, score_mean, score/<task>, return/<task>`` every ``eval_interval``
env steps: success % for Meta-World, return otherwise), ``grad_norms.csv`` (NPF: ``step, updates,
phase, task, grad_norm, grad_norm_critic`` — ‖m_n ⊙ ∂L/∂w‖ of the actor / critic restricted to
task n's pathway, L the loss of that update, averaged over tasks), ``summary.json`` (rates, DAPD
statistics), MLflow run (losses, ``grad_norm/<task>``, ``eval/…``, ``rate/…``).
"""
from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from npf import checkpoint as ckpt
from npf.algos.base import check_finite
from npf.algos.sac import SAC, SACConfig
from npf.baselines import PCGradSAC
from npf.config import deep_merge, pathway_backend, suite_tasks
from npf.dapd import (DAPDController, attach_copy_masks, broadcast_state, copies_factory, copies_group_grad_norms,
                      copies_snip_scores, merge_copies, shared_snip_scores)
from npf.data import atomic_write_bytes, write_json
from npf.envs import episode_length, is_success_suite, make_env
from npf.evaluate import evaluate_tasks, publish_evaluation
from npf.multitask import MultitaskLearner, factory_for, obs_dim_for
from npf.nets import resolve_device
from npf.online_buffers import ChunkStore, TaskReplay
from npf.pathways import Pathways
from npf.progress import Progress
from npf.rollout import EnvPool, evaluate_policy
from npf.preemption import preemption_guard, save_checkpoint
from npf.tracking import stage_tracker

METHODS = ("sac-npf", "sac-npf-nopretrain", "mt-sac", "mh-sac", "pcgrad")
#: methods with a final evaluation (Table 4); the no-pretrain run only feeds Fig. 4
EVAL_METHODS = ("sac-npf", "mt-sac", "mh-sac", "pcgrad")
NPF_METHODS = ("sac-npf", "sac-npf-nopretrain")
CONDITIONING = {"sac-npf": "npf", "sac-npf-nopretrain": "npf", "mt-sac": "mt", "pcgrad": "mt", "mh-sac": "mhmt",
                "sac": "mhmt"}  # "sac": dense single-task SAC (one head) for the DAPD ablation
VARIANT_RE = re.compile(r"^(?:(single-shot)|(dense)|dapd(?:-M(\d+))?(-nothreshold)?)$")
STATE_FORMAT = "npf.online/1"


# ------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class OnlineSettings:
    total_steps: int
    learning_starts: int
    envs_per_task: int
    updates_per_step: float
    batch_size: int
    buffer_size: int
    eval_interval: int
    eval_episodes: int
    checkpoint_every: int
    log_every: int
    grad_norm_every: int
    pretrain_steps: int
    keep_ratio: float
    mask_bias: bool
    dapd_mode: str
    dapd_M: int
    dapd_interval: int
    td_episodes: int
    stop_window: int
    return_threshold: float | None
    success_threshold: float | None
    sac: SACConfig

    def threshold(self, suite: str) -> float | None:
        return self.success_threshold if is_success_suite(suite) else self.return_threshold


def _sac_config(d: Mapping, batch_size: int, where: str) -> SACConfig:
    d = dict(d)
    if "batch_size" in d and int(d["batch_size"]) != int(batch_size):
        raise ValueError(f"{where}.batch_size: set the batch size with the block's batch_size key, not in sac")
    d["batch_size"] = int(batch_size)
    return SACConfig.from_dict(d, where)


def online_settings(cfg: Mapping) -> OnlineSettings:
    """The ``online`` block of a validated config as :class:`OnlineSettings`."""
    o, d = cfg["online"], cfg["online"]["dapd"]
    return OnlineSettings(
        total_steps=int(o["total_steps"]), learning_starts=int(o["learning_starts"]),
        envs_per_task=int(o["envs_per_task"]), updates_per_step=float(o["updates_per_step"]),
        batch_size=int(o["batch_size"]), buffer_size=int(o["buffer_size"]), eval_interval=int(o["eval_interval"]),
        eval_episodes=int(o["eval_episodes"]), checkpoint_every=int(o["checkpoint_every"]),
        log_every=int(o["log_every"]), grad_norm_every=int(o["grad_norm_every"]),
        pretrain_steps=int(o["pretrain_steps"]), keep_ratio=float(cfg["pathways"]["keep_ratio"]),
        mask_bias=bool(cfg["pathways"]["mask_bias"]), dapd_mode=d["mode"], dapd_M=int(d["M"]),
        dapd_interval=int(d["interval"]), td_episodes=int(d["td_episodes"]), stop_window=int(d["stop_window"]),
        return_threshold=None if d["return_threshold"] is None else float(d["return_threshold"]),
        success_threshold=None if d["success_threshold"] is None else float(d["success_threshold"]),
        sac=_sac_config(o["sac"], int(o["batch_size"]), "online.sac"),
    )


def parse_variant(variant: str, default_M: int) -> dict:
    """DAPD-ablation variant name → ``{method, mode, M, threshold}``. Names: ``single-shot``,
    ``dense`` (SAC without pathways), ``dapd`` / ``dapd-M<k>`` (M = k; default ``dapd.M``), and
    either with ``-nothreshold`` (no stop rule), e.g. ``dapd-nothreshold``, ``dapd-M10-nothreshold``."""
    m = VARIANT_RE.match(variant)
    if not m:
        raise ValueError(f"unknown DAPD ablation variant {variant!r} (use single-shot, dense, dapd-M<k>, "
                         f"dapd-nothreshold or dapd-M<k>-nothreshold)")
    single, dense, M, nothr = m.groups()
    if dense:
        return {"method": "sac", "mode": "dapd", "M": default_M, "threshold": True}
    if single:
        return {"method": "sac-npf", "mode": "single_shot", "M": 1, "threshold": True}
    M = default_M if M is None else int(M)
    if M < 1:
        raise ValueError(f"DAPD ablation variant {variant!r}: M must be ≥ 1")
    return {"method": "sac-npf", "mode": "dapd", "M": M, "threshold": nothr is None}


def dapd_ablation_settings(cfg: Mapping, variant: str) -> tuple[str, OnlineSettings]:
    """``(method, settings)`` of one DAPD-ablation variant: the ``online`` settings overridden by
    the non-null keys of ``online.dapd_ablation`` (its ``sac`` merged over ``online.sac``);
    single task, so no pretraining."""
    a = cfg["online"]["dapd_ablation"]
    base = online_settings(cfg)
    over = {k: a[k] for k in ("total_steps", "learning_starts", "batch_size", "buffer_size", "eval_interval",
                              "eval_episodes", "checkpoint_every") if a.get(k) is not None}
    batch = int(over.get("batch_size", base.batch_size))
    sac = _sac_config(deep_merge(cfg["online"]["sac"], a["sac"]), batch, "online.dapd_ablation.sac")
    v = parse_variant(variant, base.dapd_M)
    st = replace(base, **over, sac=sac, pretrain_steps=0, dapd_mode=v["mode"], dapd_M=v["M"],
                 keep_ratio=float(a["keep_ratio"]) if a.get("keep_ratio") is not None else base.keep_ratio,
                 return_threshold=(None if a["return_threshold"] is None else float(a["return_threshold"]))
                 if v["threshold"] else None,
                 success_threshold=base.success_threshold if v["threshold"] else None)
    return v["method"], st


def online_tasks(cfg: Mapping, suite: str) -> list[str]:
    return suite_tasks(cfg, suite)


def online_runs(cfg: Mapping) -> list[tuple[str, str, int]]:
    """``(suite, method, seed)`` of every online training run the config asks for (the no-pretrain
    SAC+NPF run is added for Fig. 4 when ``grad_norm_ablation`` and ``pretrain_steps > 0``)."""
    o = cfg["online"]
    runs = []
    for suite in o["suites"]:
        for seed in o["seeds"]:
            runs += [(suite, m, seed) for m in o["methods"]]
            if "sac-npf" in o["methods"] and o["grad_norm_ablation"] and o["pretrain_steps"] > 0:
                runs.append((suite, "sac-npf-nopretrain", seed))
    return runs


def online_target_files(cfg: Mapping) -> list[str]:
    """Every final output of the online stages: eval JSONs (Table 4), Fig. 4 gradient norms and
    curves, DAPD-ablation curves (Figs. 3, 13, 14)."""
    r = cfg["results_dir"]
    out = []
    for suite, method, seed in online_runs(cfg):
        if method in EVAL_METHODS:
            out.append(f"{r}/eval/{suite}/{method}-sac/seed{seed}.json")
        if method in NPF_METHODS:
            out += [f"{r}/online/grad_norms/{suite}/{method}/seed{seed}.csv",
                    f"{r}/online/pretrain_curves/{suite}/{method}/seed{seed}.csv"]
    a = cfg["online"]["dapd_ablation"]
    out += [f"{r}/online/dapd_curves/{task}/{variant}/seed{seed}.csv"
            for task in a["tasks"] for variant in a["variants"] for seed in a["seeds"]]
    return out


# ------------------------------------------------------------------------------------ the agent
class OnlineAgent:
    """The networks of one online run and how they act, learn and get their pathways.

    Phases of NPF: ``pretrain`` (N stacked per-task copies, each on its own pathway) then
    ``shared`` (one network, N pathways). Baselines are always ``shared``.
    """

    def __init__(self, method: str, num_tasks: int, obs_dim: int, act_dim: int, st: OnlineSettings,
                 device: torch.device, seed: int, dapd_threshold: float | None, backend: str | None = None):
        if method not in CONDITIONING:
            raise ValueError(f"online method must be one of {METHODS}, got {method!r}")
        self.method, self.n, self.st, self.device = method, num_tasks, st, device
        self._backend = {} if backend is None else {"backend": backend}  # masked-layer compute backend
        self.cond = CONDITIONING[method]
        self.npf = self.cond == "npf"
        self.pretrain_steps = st.pretrain_steps if method == "sac-npf" else 0
        cls = PCGradSAC if method == "pcgrad" else SAC
        self.shared: SAC = cls(obs_dim_for(self.cond, obs_dim, num_tasks), act_dim, st.sac, device,
                               factory=factory_for(self.cond, num_tasks), num_temperatures=num_tasks, seed=seed)
        self.copies: SAC | None = None
        self.phase = "shared"
        if self.npf and self.pretrain_steps > 0:
            self.phase = "pretrain"
            self.copies = SAC(obs_dim, act_dim, st.sac, device, factory=copies_factory(num_tasks),
                              num_temperatures=num_tasks, seed=seed)
            for role, net in self.shared.networks().items():
                self.copies.networks()[role].load_state_dict(broadcast_state(net.state_dict(), num_tasks))
            for role, tgt in self.shared.targets().items():
                self.copies.targets()[role].load_state_dict(broadcast_state(tgt.state_dict(), num_tasks))
            self.copies.loss_scale = 1.0  # mean over tasks, as after the merge
        self.pathways: Pathways | None = None
        self.learner: MultitaskLearner | None = None
        if not self.npf:
            self.learner = MultitaskLearner(self.shared, self.cond, num_tasks, reduce="mean", **self._backend)
        self.dapd = DAPDController(num_tasks, st.dapd_mode, st.dapd_M, st.dapd_interval, st.keep_ratio,
                                   dapd_threshold, st.stop_window) if self.npf else None
        self.merged_at: int | None = None

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

    def maybe_merge(self) -> bool:
        """Merge the copies once ``pretrain_steps`` updates are done; True when it happened."""
        if self.phase == "pretrain" and self.copies.num_updates >= self.pretrain_steps:
            self.merge()
            return True
        return False

    # ---- pathways ----------------------------------------------------------------------------
    def scores(self, td: TaskReplay, tasks: Sequence[int]) -> dict[int, dict]:
        """SNIP scores of the given tasks on their TD_n at the current weights."""
        if self.phase == "pretrain":
            every = copies_snip_scores(self.copies, td.contents(), self.st.mask_bias)
            return {n: every[n] for n in tasks}
        return {n: shared_snip_scores(self.shared, td.task_contents(n), n, self.st.mask_bias) for n in tasks}

    def discover(self, td: TaskReplay) -> None:
        masks = self.dapd.discover([self.scores(td, range(self.n))[n] for n in range(self.n)])
        self.pathways = Pathways.from_task_masks(masks, self.st.keep_ratio, self.st.mask_bias)
        self._attach()

    def rescore(self, td: TaskReplay, tasks: Sequence[int]) -> list[int]:
        """DAPD re-scoring of ``tasks``; returns those whose masks were replaced."""
        if not tasks:
            return []
        changed = []
        for n, s in self.scores(td, tasks).items():
            m = self.dapd.rescore(n, s)
            if m is not None:
                self.pathways.set_task_masks(n, m)
                changed.append(n)
        if changed:
            self._attach()
        return changed

    def _npf_learner(self) -> MultitaskLearner:
        return MultitaskLearner(self.shared, "npf", self.n, self.pathways, reduce="mean", **self._backend)

    def _attach(self) -> None:
        if self.phase == "pretrain":
            attach_copy_masks(self.copies, self.pathways)
        elif self.learner is None:
            self.learner = self._npf_learner()
        else:
            self.pathways.attach(self.shared, self.learner.backend)

    def merge(self) -> None:
        """End of pretraining: merge the copies into the shared network, freeze the pathways."""
        c, s = self.copies, self.shared
        with torch.no_grad():
            for role, net in s.networks().items():
                init = {k: v.detach().clone() for k, v in net.state_dict().items()}  # still θ0
                masks = self.pathways.masks.get(role, {})
                net.load_state_dict(merge_copies(c.networks()[role].state_dict(), init, masks))
                tgt = s.targets().get(role)
                if tgt is not None:
                    tgt.load_state_dict(merge_copies(c.targets()[role].state_dict(), init, masks))
            s.log_alpha.copy_(c.log_alpha.detach())
        s.num_updates = c.num_updates
        s.generator.set_state(c.generator.get_state())
        self.merged_at = c.num_updates
        self.copies = None
        self.phase = "shared"
        self.dapd.freeze_all()
        self.learner = self._npf_learner()

    def finalize(self) -> None:
        """Before writing final.pt: a run stopped during pretraining is merged."""
        if self.npf and self.pathways is None:
            raise RuntimeError("no pathways were discovered: total_steps must exceed learning_starts by at "
                               "least one episode")
        if self.phase == "pretrain":
            self.merge()

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
        return {"method": self.method, "phase": self.phase, "shared": self.shared.state_dict(),
                "copies": None if self.copies is None else self.copies.state_dict(),
                "pathways": None if self.pathways is None else self.pathways.state_dict(),
                "dapd": None if self.dapd is None else self.dapd.state_dict(),
                "merged_at": -1 if self.merged_at is None else self.merged_at}

    def load_state_dict(self, s: Mapping) -> None:
        if s["method"] != self.method:
            raise ValueError(f"checkpoint is of method {s['method']!r}, not {self.method!r}")
        self.shared.load_state_dict(_cpu_generators(s["shared"]))
        self.phase = s["phase"]
        if self.phase == "pretrain":
            self.copies.load_state_dict(_cpu_generators(s["copies"]))
        else:
            self.copies = None
        if self.dapd is not None and s["dapd"] is not None:
            self.dapd.load_state_dict(s["dapd"])
        self.merged_at = None if int(s["merged_at"]) < 0 else int(s["merged_at"])
        if s["pathways"] is not None:
            self.pathways = Pathways.from_state_dict(s["pathways"])
            if self.phase == "pretrain":
                attach_copy_masks(self.copies, self.pathways)
            else:
                self.learner = self._npf_learner()


def _cpu_generators(state: Mapping) -> dict:
    s = dict(state)
    for k in ("generator", "pc_generator"):
        if k in s and isinstance(s[k], torch.Tensor):
            s[k] = s[k].cpu()
    return s


# ------------------------------------------------------------------------------------ helpers
def write_csv(path: Path, rows: Sequence[Mapping], fields: Sequence[str] | None = None) -> None:
    fields = list(fields or (rows[0].keys() if rows else []))

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write_bytes(Path(path), write)


def _score_fields(tasks: Sequence[str]) -> list[str]:
    return (["step", "updates", "score_mean"] + [f"score/{t}" for t in tasks] + ["return_mean"]
            + [f"return/{t}" for t in tasks])


GRAD_FIELDS = ["step", "updates", "phase", "task", "grad_norm", "grad_norm_critic"]


class _Evaluator:
    """Periodic evaluation with persistent envs (``eval_episodes`` per task, deterministic policy)."""

    def __init__(self, suite: str, tasks: Sequence[str], episodes: int, seed: int, envs_per_task: int = 10):
        self.suite, self.tasks, self.episodes, self.seed = suite, list(tasks), episodes, seed
        e = min(episodes, envs_per_task)
        self.e = e if episodes % e == 0 else episodes
        self.envs = None

    def __call__(self, policy: Callable[[np.ndarray], np.ndarray]) -> dict:
        n, e = len(self.tasks), self.e
        if self.envs is None:
            self.envs = [make_env(self.suite, t) for t in self.tasks for _ in range(e)]
        ev = evaluate_policy(lambda o: np.asarray(policy(o.reshape(n, e, -1))).reshape(n * e, -1), self.envs,
                             self.episodes * n, self.seed)
        out = {}
        for i, task in enumerate(self.tasks):
            sel = (ev["env"] // e) == i
            out[task] = {"return": float(ev["returns"][sel].mean()), "success": float(ev["success"][sel].mean() * 100)}
        return out

    def close(self) -> None:
        for env in self.envs or []:
            env.close()


def _policy(agent: OnlineAgent, device: torch.device, deterministic: bool = True):
    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic).cpu().numpy()
    return policy


# ------------------------------------------------------------------------------------ the loop
def run_online(cfg: Mapping, suite: str, tasks: Sequence[str], method: str, seed: int, st: OnlineSettings,
               out_dir: str | Path, *, stage: str, run_name: str, wildcards: dict,
               stop_after_steps: int | None = None) -> dict:
    """Train (or resume) one online multitask run; see the module docstring. ``stop_after_steps``
    simulates a kill after the first checkpoint at or past that step (tests)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.get("device", "auto"))
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    ckpt.seed_everything(seed)
    tasks = list(tasks)
    n, E = len(tasks), st.envs_per_task
    envs = [make_env(suite, t) for t in tasks for _ in range(E)]
    dims = {(e.observation_space.shape[0], e.action_space.shape[0]) for e in envs}
    if len(dims) != 1:
        raise ValueError(f"suite {suite}: tasks have different observation/action sizes {sorted(dims)}")
    obs_dim, act_dim = dims.pop()
    ep_len = episode_length(suite)
    success_suite = is_success_suite(suite)

    agent = OnlineAgent(method, n, obs_dim, act_dim, st, device, seed, st.threshold(suite), pathway_backend(cfg))
    replay = TaskReplay(n, min(st.buffer_size, st.total_steps * E), obs_dim, act_dim, device)
    td = TaskReplay(n, st.td_episodes * ep_len * E, obs_dim, act_dim, device)
    store = ChunkStore(out_dir / "replay")
    gen = torch.Generator(device=device)
    gen.manual_seed(seed + 17)
    step, update_debt, started = 0, 0.0, False
    eval_rows: list[dict] = []
    grad_rows: list[dict] = []
    recent: list[list[float]] = [[] for _ in range(n)]  # last 10 training returns per task
    timing = {"act": 0.0, "env": 0.0, "store": 0.0, "update": 0.0, "dapd": 0.0, "eval": 0.0, "ckpt": 0.0,
              "wall": 0.0, "transitions": 0, "updates": 0}
    episodes = [0] * (n * E)
    ckpt_path = out_dir / "checkpoint.pt"
    resuming = ckpt_path.exists()
    last_good = None
    if resuming:
        state = ckpt.load(ckpt_path, map_location="cpu")
        if state.get("format") != STATE_FORMAT or state.get("tasks") != tasks:
            raise ValueError(f"{ckpt_path}: not a checkpoint of this run (tasks {state.get('tasks')}, "
                             f"expected {tasks})")
        agent.load_state_dict(state["agent"])
        if not state.get("replay_dropped"):
            store.restore(replay, state["replay_chunks"])
            store.prune(state["replay_chunks"])
        elif int(state["step"]) < st.total_steps:
            raise ValueError(f"{ckpt_path}: this run finished at {state['step']} steps and its replay buffers "
                             f"were deleted; it cannot be extended to total_steps {st.total_steps}")
        td.load_state_dict(state["td"])
        gen.set_state(state["gen"].cpu())
        ckpt.set_rng_state(state["global_rng"])
        step, update_debt, started = int(state["step"]), float(state["update_debt"]), bool(state["started"])
        episodes = [int(e) for e in state["episodes"]]
        eval_rows, grad_rows = list(state["eval_rows"]), list(state["grad_rows"])
        recent = [list(r) for r in state["recent"]]
        timing.update(state["timing"])
        last_good = step
    else:
        store.prune([])
    pool = EnvPool(envs, seed, episodes)
    obs = pool.reset()
    evaluator = _Evaluator(suite, tasks, st.eval_episodes, 1000 + seed,
                           int(cfg.get("evaluation", {}).get("envs_per_task", 10)))
    metrics_path, grads_path = out_dir / "metrics.csv", out_dir / "grad_norms.csv"
    write_csv(metrics_path, eval_rows, _score_fields(tasks))
    if agent.npf:
        write_csv(grads_path, grad_rows, GRAD_FIELDS)

    tracker = stage_tracker(cfg, stage, suite, run_name, out_dir / "mlflow_run_id.txt", wildcards,
                            fresh=not resuming)
    progress = Progress(st.total_steps, run_name, initial=step)
    next_ckpt = (step // st.checkpoint_every + 1) * st.checkpoint_every
    status = "FAILED"
    t_start = time.perf_counter()
    wall0 = timing["wall"]

    def do_eval() -> None:
        t0 = time.perf_counter()
        res = evaluator(_policy(agent, device))
        key = "success" if success_suite else "return"
        row = {"step": step, "updates": agent.num_updates}
        row["score_mean"] = float(np.mean([res[t][key] for t in tasks]))
        for t in tasks:
            row[f"score/{t}"] = res[t][key]
        row["return_mean"] = float(np.mean([res[t]["return"] for t in tasks]))
        for t in tasks:
            row[f"return/{t}"] = res[t]["return"]
        eval_rows.append(row)
        write_csv(metrics_path, eval_rows, _score_fields(tasks))
        em = {"eval/score_mean": row["score_mean"], "eval/return_mean": row["return_mean"]}
        for t in tasks:
            em[f"eval/score/{t}"] = row[f"score/{t}"]
            em[f"eval/return/{t}"] = res[t]["return"]
            if success_suite:
                em[f"eval/success/{t}"] = res[t]["success"]
        tracker.log_metrics(em, step)
        progress.update(0, score=row["score_mean"])
        timing["eval"] += time.perf_counter() - t0

    def rates() -> dict:
        wall = wall0 + (time.perf_counter() - t_start)
        tr = timing["transitions"]
        return {"env_steps_per_s": tr / max(wall, 1e-9),
                "collect_env_steps_per_s": tr / max(timing["act"] + timing["env"] + timing["store"], 1e-9),
                "raw_env_steps_per_s": tr / max(timing["env"], 1e-9),
                "updates_per_s": timing["updates"] / max(timing["update"], 1e-9),
                "loop_updates_per_s": timing["updates"] / max(wall, 1e-9),
                "wall_s": wall}

    guard = preemption_guard().install()  # SIGTERM/SIGUSR1 → checkpoint at the next boundary, exit 75
    try:
        if step == 0 and not eval_rows:
            do_eval()  # the randomly initialised policy
        while step < st.total_steps:
            t0 = time.perf_counter()
            o = torch.as_tensor(obs, device=device).reshape(n, E, obs_dim)
            actions = agent.act(o, deterministic=False).reshape(n * E, act_dim).cpu().numpy()
            t1 = time.perf_counter()
            res = pool.step(actions)
            t2 = time.perf_counter()
            rows = dict(obs=obs.reshape(n, E, obs_dim), act=actions.reshape(n, E, act_dim),
                        rew=res.reward.reshape(n, E), next_obs=res.final_obs.reshape(n, E, obs_dim),
                        done=res.terminated.reshape(n, E).astype(np.float32))
            replay.add(**rows)
            td.add(**rows)
            obs = res.next_obs
            step += 1
            t3 = time.perf_counter()
            timing["act"] += t1 - t0
            timing["env"] += t2 - t1
            timing["store"] += t3 - t2
            timing["transitions"] += n * E
            metrics: dict[str, float] = {}
            if started:
                update_debt += E * st.updates_per_step
                while update_debt >= 1:
                    metrics = agent.update(replay.sample(st.batch_size, gen))
                    update_debt -= 1
                    timing["updates"] += 1
                    u = agent.num_updates
                    check_finite(metrics, u)  # stop at the first NaN/inf loss, before it reaches a checkpoint
                    if agent.npf and u % st.grad_norm_every == 0:
                        gn = agent.group_grad_norms()
                        gm = {}
                        for i, t in enumerate(tasks):
                            grad_rows.append({"step": step, "updates": u, "phase": agent.phase, "task": t,
                                              "grad_norm": float(gn["actor"][i]),
                                              "grad_norm_critic": float(gn["critic"][i])})
                            gm[f"grad_norm/{t}"] = float(gn["actor"][i])
                            gm[f"grad_norm/critic/{t}"] = float(gn["critic"][i])
                        tracker.log_metrics(gm, step)
                    if u % st.log_every == 0:
                        tracker.log_metrics(metrics, step)
                    if agent.maybe_merge():
                        tracker.log_metrics({"dapd/merged_at_update": u}, step)
                timing["update"] += time.perf_counter() - t3
            progress.update(1)

            if res.finished:
                if len(res.finished) != n * E:
                    raise RuntimeError(f"{suite}: episodes of different tasks ended at different steps; online "
                                       "training needs fixed-length episodes (lock step)")
                t4 = time.perf_counter()
                em = {}
                per_task: dict[int, list[tuple[float, bool]]] = {}
                for (i, ret, _, succ) in res.finished:
                    per_task.setdefault(i // E, []).append((ret, succ))
                for k, eps in per_task.items():
                    for ret, succ in eps:
                        recent[k] = (recent[k] + [ret])[-10:]
                        if agent.npf and started:
                            agent.dapd.observe(k, float(succ) if success_suite else ret, step)
                    em[f"train/return/{tasks[k]}"] = float(np.mean([r for r, _ in eps]))
                    if success_suite:
                        em[f"train/success/{tasks[k]}"] = float(np.mean([s for _, s in eps]))
                if agent.npf and started:
                    changed = agent.rescore(td, agent.dapd.due(sorted(per_task)))
                    em["dapd/rescored_tasks"] = len(changed)
                    em["dapd/frozen_tasks"] = sum(agent.dapd.frozen)
                if not started and step >= st.learning_starts:
                    started = True
                    if agent.npf:
                        agent.discover(td)
                        em["dapd/discovered"] = 1
                tracker.log_metrics(em, step)
                progress.update(0, ret=float(np.mean([np.mean(r) for r in recent if r])))
                timing["dapd"] += time.perf_counter() - t4

            if step % st.eval_interval == 0 or step == st.total_steps:
                do_eval()

            if res.finished and pool.at_episode_start and (step >= next_ckpt or step >= st.total_steps
                                                           or guard.requested):
                t5 = time.perf_counter()
                timing["wall"] = wall0 + (t5 - t_start)
                r = rates()
                tracker.log_metrics({f"rate/{k}": v for k, v in r.items() if k != "wall_s"}, step)
                tracker.flush()  # before the checkpoint: metrics up to it are never lost (resume re-logs the rest)
                names = store.save(replay)
                save_checkpoint({"format": STATE_FORMAT, "tasks": tasks, "method": method, "step": step,
                           "update_debt": update_debt, "started": started, "episodes": list(pool.episodes),
                           "agent": agent.state_dict(), "replay_chunks": names, "td": td.state_dict(),
                           "gen": gen.get_state(), "global_rng": ckpt.rng_state(), "eval_rows": eval_rows,
                           "grad_rows": grad_rows, "recent": recent, "timing": timing}, ckpt_path, step,
                                skip=("td",))
                last_good = step
                store.prune(names)
                if agent.npf:
                    write_csv(grads_path, grad_rows, GRAD_FIELDS)
                timing["ckpt"] += time.perf_counter() - t5
                next_ckpt = (step // st.checkpoint_every + 1) * st.checkpoint_every
                if guard.requested and step < st.total_steps:
                    status = "PREEMPTED"
                    raise guard.preempted(step, ckpt_path)
                if stop_after_steps is not None and step >= stop_after_steps and step < st.total_steps:
                    status = "KILLED"
                    return {"stopped_at": step}
        progress.close()

        agent.finalize()
        timing["wall"] = wall0 + (time.perf_counter() - t_start)
        r = rates()
        final = {"format": STATE_FORMAT, "algo": agent.shared.state_dict(), "method": method, "suite": suite,
                 "tasks": tasks, "seed": seed, "obs_dim": obs_dim, "act_dim": act_dim, "sac": asdict(st.sac),
                 "conditioning": agent.cond, "steps": step, "updates": agent.num_updates}
        if agent.pathways is not None:
            final["pathways"] = agent.pathways.state_dict()
        save_checkpoint(final, out_dir / "final.pt", step)
        if agent.npf:
            write_csv(grads_path, grad_rows, GRAD_FIELDS)
        summary = {"suite": suite, "tasks": tasks, "method": method, "seed": seed, "env_steps_per_task": step,
                   "updates": agent.num_updates, "final_score_mean": eval_rows[-1]["score_mean"],
                   "rates": r, "timing_s": {k: v for k, v in timing.items() if k not in ("transitions", "updates")},
                   "transitions": timing["transitions"]}
        if agent.npf:
            d = agent.dapd
            summary["dapd"] = {"mode": st.dapd_mode, "M": st.dapd_M, "threshold": st.threshold(suite),
                               "rescores": dict(zip(tasks, d.rescores)), "frozen": dict(zip(tasks, d.frozen)),
                               "frozen_at_step": dict(zip(tasks, d.frozen_at)), "merged_at_update": agent.merged_at,
                               "density": {role: [float(x) for x in agent.pathways.density(role)]
                                           for role in agent.pathways.roles}}
        write_json(out_dir / "summary.json", summary)
        tracker.log_metrics({f"rate/{k}": v for k, v in r.items() if k != "wall_s"}, step)
        for p in (metrics_path, out_dir / "summary.json") + ((grads_path,) if agent.npf else ()):
            tracker.log_artifact(p)
        # the run is complete: the replay chunks are no longer needed
        state = ckpt.load(ckpt_path, map_location="cpu") if ckpt_path.exists() else None
        if state is not None and not state.get("replay_dropped"):
            state["replay_dropped"], state["replay_chunks"] = True, []
            ckpt.save(state, ckpt_path)
        shutil.rmtree(out_dir / "replay", ignore_errors=True)
        status = "FINISHED"
        return summary
    except FloatingPointError as e:
        kept = f"{ckpt_path} (step {last_good}) kept" if last_good is not None else "no checkpoint yet"
        msg = (str(e).strip().splitlines() or ["FloatingPointError"])[0][:300]
        raise FloatingPointError(f"{run_name}: {msg} (env step {step}); last good checkpoint: {kept}") from None
    finally:
        guard.restore()
        pool.close()
        evaluator.close()
        tracker.close(status, step, error=sys.exc_info()[1])


# ------------------------------------------------------------------------------------ stages
def train_online(cfg: Mapping, suite: str, method: str, seed: int, out_dir: str | Path,
                 stop_after_steps: int | None = None, grad_norms_out: str | Path | None = None,
                 curves_out: str | Path | None = None) -> dict:
    """Stage ``train_online``: one method on the ``suite``'s tasks (global ``tasks:`` subset).
    ``grad_norms_out`` / ``curves_out``: tidy CSVs for Fig. 4 (a) / (b) (NPF methods)."""
    if method not in METHODS:
        raise ValueError(f"online method must be one of {METHODS}, got {method!r}")
    if method not in NPF_METHODS and (grad_norms_out is not None or curves_out is not None):
        raise ValueError(f"{method}: gradient norms per pathway and Fig. 4 curves exist only for {NPF_METHODS}")
    st = online_settings(cfg)
    if method == "sac-npf-nopretrain":
        st = replace(st, pretrain_steps=0)
    tasks = online_tasks(cfg, suite)
    out = run_online(cfg, suite, tasks, method, seed, st, out_dir, stage="train_online",
                     run_name=f"online/{suite}/{method}/seed{seed}",
                     wildcards={"suite": suite, "method": method, "algo": "sac", "seed": seed},
                     stop_after_steps=stop_after_steps)
    if "stopped_at" in out:
        return out
    variant = "pretrain" if method == "sac-npf" and st.pretrain_steps > 0 else "no-pretrain"
    if grad_norms_out is not None:
        export_grad_norms(Path(out_dir) / "grad_norms.csv", grad_norms_out, variant, seed)
    if curves_out is not None:
        export_curves(Path(out_dir) / "metrics.csv", curves_out, variant, seed, suite)
    return out


def train_dapd_variant(cfg: Mapping, task: str, variant: str, seed: int, out_dir: str | Path,
                       curves_out: str | Path | None = None, stop_after_steps: int | None = None) -> dict:
    """Stage ``dapd_ablation``: single-task SAC+NPF on ``online.dapd_ablation.suite``/``task`` with
    one DAPD variant (Figs. 3, 13, 14). ``curves_out``: tidy ``step, task, variant, seed,
    return|success`` CSV."""
    suite = cfg["online"]["dapd_ablation"]["suite"]
    method, st = dapd_ablation_settings(cfg, variant)
    out = run_online(cfg, suite, [task], method, seed, st, out_dir, stage="dapd_ablation",
                     run_name=f"dapd/{suite}/{task}/{variant}/seed{seed}",
                     wildcards={"suite": suite, "task": task, "variant": variant, "seed": seed},
                     stop_after_steps=stop_after_steps)
    if "stopped_at" not in out and curves_out is not None:
        export_curves(Path(out_dir) / "metrics.csv", curves_out, variant, seed, suite)
    return out


# ------------------------------------------------------------------------------------ tidy exports
def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def export_curves(metrics_csv: str | Path, out_csv: str | Path, variant: str, seed: int, suite: str) -> None:
    """``metrics.csv`` → tidy ``step, task, variant, seed, success|return`` (Figs. 3, 13, 14, 4b)."""
    key = "success" if is_success_suite(suite) else "return"
    rows = []
    for r in _read_csv(Path(metrics_csv)):
        for col, v in r.items():
            if col.startswith("score/"):
                rows.append({"step": int(r["step"]), "task": col[len("score/"):], "variant": variant, "seed": seed,
                             key: float(v)})
    write_csv(Path(out_csv), rows, ["step", "task", "variant", "seed", key])


def export_grad_norms(grad_csv: str | Path, out_csv: str | Path, variant: str, seed: int) -> None:
    """``grad_norms.csv`` → tidy ``step, task, grad_norm, variant, seed`` (+ critic, updates, phase)."""
    rows = [{"step": int(r["step"]), "task": r["task"], "grad_norm": float(r["grad_norm"]), "variant": variant,
             "seed": seed, "grad_norm_critic": float(r["grad_norm_critic"]), "updates": int(r["updates"]),
             "phase": r["phase"]} for r in _read_csv(Path(grad_csv))]
    write_csv(Path(out_csv), rows, ["step", "task", "grad_norm", "variant", "seed", "grad_norm_critic", "updates",
                                    "phase"])


# ------------------------------------------------------------------------------------ evaluation
def load_online_agent(cfg: Mapping, final_path: str | Path, device: torch.device) -> tuple[OnlineAgent, dict]:
    saved = ckpt.load(final_path, map_location="cpu")
    st = replace(online_settings(cfg), sac=SACConfig(**saved["sac"]), pretrain_steps=0)
    agent = OnlineAgent(saved["method"], len(saved["tasks"]), saved["obs_dim"], saved["act_dim"], st, device,
                        int(saved["seed"]), None, pathway_backend(cfg))
    agent.shared.load_state_dict(_cpu_generators(saved["algo"]))
    if "pathways" in saved:
        agent.pathways = Pathways.from_state_dict(saved["pathways"])
        agent.learner = agent._npf_learner()
    return agent, saved


def evaluate_online_run(cfg: Mapping, suite: str, method: str, seed: int, final_path: str | Path,
                        out_json: str | Path) -> dict:
    """Stage ``online_evaluate``: ``evaluation.episodes`` per task with the deterministic policy;
    writes the same JSON as :func:`npf.stages.offline.evaluate_run` (``algo = "sac"``). Return
    suites are normalized with the datasets' reference scores when their manifests exist."""
    device = resolve_device(cfg["device"])
    torch.set_num_threads(int(cfg["torch_threads"]))
    agent, saved = load_online_agent(cfg, final_path, device)
    tasks = saved["tasks"]
    if tasks != online_tasks(cfg, suite) or saved["method"] != method:
        raise ValueError(f"{final_path}: a {saved['method']} run on tasks {tasks}, config asks {method} on "
                         f"{online_tasks(cfg, suite)}")
    refs = None
    if not is_success_suite(suite):
        root = Path(cfg["results_dir"]) / "datasets" / suite
        paths = [root / f"{t}.json" for t in tasks]
        if all(p.exists() for p in paths):
            refs = [json.loads(p.read_text())["scores"] for p in paths]
    episodes = int(cfg["evaluation"]["episodes"])
    tracker = stage_tracker(cfg, "online_evaluate", suite, f"eval/{suite}/{method}-sac/seed{seed}",
                            Path(out_json).with_suffix(".mlflow_run_id.txt"),
                            {"suite": suite, "method": method, "algo": "sac", "seed": seed}, fresh=True)
    status = "FAILED"
    try:
        ev = evaluate_tasks(_policy(agent, device), suite, tasks, episodes,
                            seed=int(cfg["evaluation"]["seed"]) + seed, ref_scores=refs,
                            envs_per_task=min(episodes, int(cfg["evaluation"]["envs_per_task"])))
        if ev["metric"] == "normalized" and refs is None:
            ev["metric"] = "return"  # no reference scores: raw returns (not comparable to normalized tables)
        ev.update({"suite": suite, "method": method, "algo": "sac", "seed": seed, "episodes_per_task": episodes,
                   "env_steps_per_task": saved["steps"], "updates": saved["updates"]})
        publish_evaluation(tracker, ev, out_json)
        status = "FINISHED"
        return ev
    finally:
        tracker.close(status, error=sys.exc_info()[1])
