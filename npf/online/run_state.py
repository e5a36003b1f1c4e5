"""What one online run holds, and its checkpoint: the state written to ``checkpoint.pt`` and how a
resume restores it.

``checkpoint.pt`` (every ``checkpoint_every`` env steps) holds the networks,
optimizers, temperatures, pathways, DAPD state and buffers TD_n, the env pool's episode counters,
every RNG and the CSV rows so far; the replay buffers are stored incrementally under ``replay/``
(:class:`~npf.online_buffers.ChunkStore`). A checkpoint written mid-episode also holds each env's
actions since its episode began, which a resume replays from the episode's seeded reset to rebuild
the simulators (:meth:`~npf.rollout.EnvPool.restore_mid_episode`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from npf import checkpoint as ckpt
from npf.envs import is_success_suite
from npf.online.agent import OnlineAgent
from npf.online.evaluate import PeriodicEvaluator
from npf.online.settings import STATE_FORMAT, OnlineSettings
from npf.online_buffers import ChunkStore, TaskReplay
from npf.preemption import ResumableRun
from npf.progress import Progress
from npf.rollout import EnvPool

TIMERS = ("act", "env", "store", "update", "dapd", "eval", "ckpt", "wall")


@dataclass
class OnlineRun:
    """One online run: its settings, live objects and the counters a checkpoint keeps."""

    suite: str
    tasks: list[str]
    method: str
    seed: int
    settings: OnlineSettings
    out_dir: Path
    device: torch.device
    obs_dim: int
    act_dim: int
    agent: OnlineAgent
    replay: TaskReplay
    dapd_buffer: TaskReplay
    replay_store: ChunkStore
    sampler: torch.Generator  # draws the replay batches
    resumable: ResumableRun
    envs: list = field(default_factory=list)
    step: int = 0  # env steps per env
    update_debt: float = 0.0
    training_started: bool = False
    episodes: list[int] = field(default_factory=list)  # per env: episodes begun (their reset seeds)
    eval_rows: list[dict] = field(default_factory=list)
    grad_rows: list[dict] = field(default_factory=list)
    recent_returns: list[list[float]] = field(default_factory=list)  # last 10 training returns per task
    mid_episode: dict = field(default_factory=dict)  # a mid-episode checkpoint's episodes so far (replayed)
    timing: dict = field(default_factory=lambda: {**{k: 0.0 for k in TIMERS}, "transitions": 0, "updates": 0})
    pool: EnvPool | None = None
    obs: np.ndarray | None = None
    evaluator: PeriodicEvaluator | None = None
    tracker: object = None
    progress: Progress | None = None
    clock_start: float = 0.0
    wall_before: float = 0.0  # wall time of the run's earlier attempts

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def envs_per_task(self) -> int:
        return self.settings.envs_per_task

    @property
    def success_suite(self) -> bool:
        return is_success_suite(self.suite)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.csv"

    @property
    def grads_path(self) -> Path:
        return self.out_dir / "grad_norms.csv"


def checkpoint_state(run: OnlineRun, replay_chunks: list[str]) -> dict:
    state = {
        "format": STATE_FORMAT,
        "tasks": run.tasks,
        "method": run.method,
        "step": run.step,
        "update_debt": run.update_debt,
        "started": run.training_started,
        "episodes": list(run.pool.episodes),
        "agent": run.agent.state_dict(),
        "replay_chunks": replay_chunks,
        "td": run.dapd_buffer.state_dict(),
        "gen": run.sampler.get_state(),
        "global_rng": ckpt.rng_state(),
        "eval_rows": run.eval_rows,
        "grad_rows": run.grad_rows,
        "recent": run.recent_returns,
        "timing": run.timing,
    }
    state.update(run.pool.mid_episode_state())  # a resume replays the episodes so far
    return state


def restore(run: OnlineRun, state: dict) -> None:
    """Continue from a checkpoint written by :func:`checkpoint_state`."""
    path, total = run.checkpoint_path, run.settings.total_steps
    if state.get("format") != STATE_FORMAT or state.get("tasks") != run.tasks:
        raise ValueError(f"{path}: not a checkpoint of this run (tasks {state.get('tasks')}, expected {run.tasks})")
    run.agent.load_state_dict(state["agent"])
    if not state.get("replay_dropped"):
        run.replay_store.restore(run.replay, state["replay_chunks"])
        run.replay_store.prune(state["replay_chunks"])
    elif int(state["step"]) < total:
        raise ValueError(
            f"{path}: this run finished at {state['step']} steps and its replay buffers were deleted; "
            f"it cannot be extended to total_steps {total}"
        )
    run.dapd_buffer.load_state_dict(state["td"])
    run.sampler.set_state(state["gen"].cpu())
    ckpt.set_rng_state(state["global_rng"])
    run.step, run.update_debt = int(state["step"]), float(state["update_debt"])
    run.training_started = bool(state["started"])
    run.episodes = [int(e) for e in state["episodes"]]
    run.eval_rows, run.grad_rows = list(state["eval_rows"]), list(state["grad_rows"])
    run.recent_returns = [list(r) for r in state["recent"]]
    run.timing.update(state["timing"])
    run.mid_episode = {k: state[k] for k in ("episode_actions", "obs") if k in state}
    run.resumable.resumed(run.step)
