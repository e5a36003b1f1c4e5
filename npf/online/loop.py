"""The online training loop: collect, train, end of episode, evaluate, checkpoint, finish.

One :class:`~npf.rollout.EnvPool` steps the ``envs_per_task`` envs of each of the N tasks in lock
step (fixed-length episodes: 150 steps MT10, 1000 cheetah) with one policy forward per step. Each
task has a replay buffer D_n and a DAPD buffer TD_n. Before ``learning_starts`` the randomly
initialised policy collects; training starts at the first episode boundary after it (NPF
discovers its pathways there, on TD_n) and every env step of a task is then followed by
``updates_per_step`` synchronous updates over all N tasks (one stacked ``[N, B]`` batch).

Resume: ``checkpoint.pt`` (at episode boundaries, every ``checkpoint_every`` env steps) holds the
networks, optimizers, temperatures, pathways, DAPD state and buffers TD_n, the env pool's episode
counters, every RNG and the CSV rows so far; the replay buffers are stored incrementally under
``replay/`` (:class:`~npf.online_buffers.ChunkStore`). A resumed run equals an uninterrupted one.
On SIGTERM the checkpoint is written after the current env step, mid-episode if need be (an
evaluation in progress is dropped and redone on resume): it then also holds the actions of the
episode so far, which a resume replays from the episode's seeded reset to rebuild the simulators.

Outputs in ``out_dir``: ``final.pt``, ``metrics.csv`` (``step, updates, score_mean, score/<task>,
return/<task>``), ``grad_norms.csv`` (NPF: ‖m_n ⊙ ∂L/∂w‖ per task), ``summary.json``, MLflow run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from npf import checkpoint as ckpt
from npf.algos.base import check_finite
from npf.checkpoint import CheckpointError
from npf.config import pathway_backend
from npf.data import write_json
from npf.envs import episode_length, is_success_suite, make_env
from npf.nets import resolve_device
from npf.online.agent import OnlineAgent, numpy_policy
from npf.online.evaluate import PeriodicEvaluator
from npf.online.settings import STATE_FORMAT, OnlineSettings
from npf.online.tidy import GRAD_FIELDS, score_fields, write_csv
from npf.online_buffers import ChunkStore, TaskReplay
from npf.preemption import ResumableRun, save_checkpoint
from npf.progress import Progress
from npf.rollout import EnvPool, StepResult
from npf.tracking import stage_tracker

FREEZE_REASONS = ("threshold", "merge", "single_shot")
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
    episode_actions: list[np.ndarray] = field(default_factory=list)  # actions of the current episodes so far
    mid_episode_obs: np.ndarray | None = None  # a mid-episode checkpoint's observation (checks the replay)
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


# ------------------------------------------------------------------------------------ the loop
def run_online(
    cfg: Mapping,
    suite: str,
    tasks: Sequence[str],
    method: str,
    seed: int,
    settings: OnlineSettings,
    out_dir: str | Path,
    *,
    stage: str,
    run_name: str,
    wildcards: dict,
    stop_after_steps: int | None = None,
) -> dict:
    """Train (or resume) one online multitask run. ``stop_after_steps`` simulates a kill after the
    first checkpoint at or past that step (tests)."""
    run = open_run(cfg, suite, tasks, method, seed, settings, out_dir, run_name, stop_after_steps)
    run.tracker = stage_tracker(
        cfg, stage, suite, run_name, run.out_dir / "mlflow_run_id.txt", wildcards, fresh=run.resumable.last_good is None
    )
    run.progress = Progress(settings.total_steps, run_name, initial=run.step)
    run.clock_start, run.wall_before = time.perf_counter(), run.timing["wall"]
    stop_asked = run.resumable.guard
    with run.resumable.running(run.tracker, lambda: run.step, closing=(run.pool, run.evaluator)):
        if evaluation_due(run) and not evaluated(run):
            evaluate(run)  # the randomly initialised policy, or an evaluation a SIGTERM cut short
        while run.step < settings.total_steps:
            result = collect(run)
            if run.training_started:
                train(run)
            run.progress.update(1)
            if result.finished:
                end_of_episodes(run, result)
            if evaluation_due(run):
                evaluate(run)
            if stop_asked.requested or (run.pool.at_episode_start and run.resumable.due(run.step)):
                checkpoint(run)
                if run.resumable.stop_here(run.step):
                    return {"stopped_at": run.step}
        summary = finish(run)
        run.resumable.status = "FINISHED"
        return summary


# ------------------------------------------------------------------------------------ set-up
def open_run(
    cfg: Mapping,
    suite: str,
    tasks: Sequence[str],
    method: str,
    seed: int,
    settings: OnlineSettings,
    out_dir: str | Path,
    run_name: str,
    stop_after_steps: int | None,
) -> OnlineRun:
    """Build a run's envs, agent and buffers; continue from ``checkpoint.pt`` when there is one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.get("device", "auto"))
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    ckpt.seed_everything(seed)
    tasks = list(tasks)
    per_task = settings.envs_per_task
    envs = [make_env(suite, t) for t in tasks for _ in range(per_task)]
    dims = {(e.observation_space.shape[0], e.action_space.shape[0]) for e in envs}
    if len(dims) != 1:
        raise ValueError(f"suite {suite}: tasks have different observation/action sizes {sorted(dims)}")
    obs_dim, act_dim = dims.pop()
    n = len(tasks)
    agent = OnlineAgent(
        method, n, obs_dim, act_dim, settings, device, seed, settings.threshold(suite), pathway_backend(cfg)
    )
    agent.shared.set_compile(cfg.get("compile", "off"))
    replay = TaskReplay(n, min(settings.buffer_size, settings.total_steps * per_task), obs_dim, act_dim, device)
    dapd_buffer = TaskReplay(n, settings.td_episodes * episode_length(suite) * per_task, obs_dim, act_dim, device)
    sampler = torch.Generator(device=device)
    sampler.manual_seed(seed + 17)
    run = OnlineRun(
        suite=suite,
        tasks=tasks,
        method=method,
        seed=seed,
        settings=settings,
        out_dir=out_dir,
        device=device,
        obs_dim=obs_dim,
        act_dim=act_dim,
        agent=agent,
        replay=replay,
        dapd_buffer=dapd_buffer,
        replay_store=ChunkStore(out_dir / "replay"),
        sampler=sampler,
        resumable=ResumableRun(
            run_name,
            out_dir / "checkpoint.pt",
            settings.checkpoint_every,
            settings.total_steps,
            stop_after=stop_after_steps,
        ),
        envs=envs,
        episodes=[0] * (n * per_task),
        recent_returns=[[] for _ in range(n)],
    )
    if run.checkpoint_path.exists():
        restore(run, ckpt.load(run.checkpoint_path, map_location="cpu"))
    else:
        run.replay_store.prune([])
    run.pool = EnvPool(envs, seed, run.episodes)
    run.obs = run.pool.reset()
    if run.episode_actions:
        replay_episode_so_far(run)
    run.evaluator = PeriodicEvaluator(
        suite, tasks, settings.eval_episodes, 1000 + seed, int(cfg.get("evaluation", {}).get("envs_per_task", 10))
    )
    write_csv(run.metrics_path, run.eval_rows, score_fields(tasks))
    if agent.npf:
        write_csv(run.grads_path, run.grad_rows, GRAD_FIELDS)
    return run


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
    if not run.pool.at_episode_start:  # SIGTERM mid-episode: what rebuilds the simulators
        state["episode_actions"] = torch.from_numpy(np.stack(run.episode_actions))
        state["obs"] = torch.from_numpy(run.obs.copy())
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
    if "episode_actions" in state:  # written mid-episode
        run.episode_actions = list(state["episode_actions"].numpy())
        run.mid_episode_obs = state["obs"].numpy()
    run.resumable.resumed(run.step)


def replay_episode_so_far(run: OnlineRun) -> None:
    """Bring the simulators of a mid-episode checkpoint back: reset each env with its episode's
    seed and step it with the recorded actions; the observation must come out as saved."""
    for actions in run.episode_actions:
        if run.pool.step(actions).finished:
            raise CheckpointError(f"{run.checkpoint_path}: an episode ended while replaying its recorded actions")
    if not np.array_equal(run.pool.obs, run.mid_episode_obs):
        raise CheckpointError(
            f"{run.checkpoint_path}: replaying the episode's actions did not reproduce its "
            "observations (the environment is not deterministic); delete the checkpoint to "
            "start over"
        )
    run.obs = run.pool.obs


# ------------------------------------------------------------------------------------ the steps
def collect(run: OnlineRun) -> StepResult:
    """One env step of every env with the stochastic policy; the transitions go to D_n and TD_n."""
    n, per_task, obs_dim, act_dim = run.num_tasks, run.envs_per_task, run.obs_dim, run.act_dim
    t0 = time.perf_counter()
    obs = torch.as_tensor(run.obs, device=run.device).reshape(n, per_task, obs_dim)
    actions = run.agent.act(obs, deterministic=False).reshape(n * per_task, act_dim).cpu().numpy()
    t1 = time.perf_counter()
    result = run.pool.step(actions)
    t2 = time.perf_counter()
    rows = dict(
        obs=run.obs.reshape(n, per_task, obs_dim),
        act=actions.reshape(n, per_task, act_dim),
        rew=result.reward.reshape(n, per_task),
        next_obs=result.final_obs.reshape(n, per_task, obs_dim),
        done=result.terminated.reshape(n, per_task).astype(np.float32),
    )
    rows = {k: torch.as_tensor(v, dtype=torch.float32, device=run.device) for k, v in rows.items()}  # once, for both
    run.replay.add(**rows)
    run.dapd_buffer.add(**rows)
    run.obs = result.next_obs
    if run.pool.at_episode_start:
        run.episode_actions.clear()
    else:
        run.episode_actions.append(actions)
    run.step += 1
    t3 = time.perf_counter()
    run.timing["act"] += t1 - t0
    run.timing["env"] += t2 - t1
    run.timing["store"] += t3 - t2
    run.timing["transitions"] += n * per_task
    return result


def train(run: OnlineRun) -> None:
    """The updates this env step pays for (``updates_per_step`` per env), their logs, the merge."""
    settings, agent, tracker = run.settings, run.agent, run.tracker
    t0 = time.perf_counter()
    run.update_debt += run.envs_per_task * settings.updates_per_step
    while run.update_debt >= 1:
        losses = agent.update(run.replay.sample(settings.batch_size, run.sampler))
        run.update_debt -= 1
        run.timing["updates"] += 1
        updates = agent.num_updates
        check_finite(losses, updates)  # stop at the first NaN/inf loss, before it reaches a checkpoint
        if agent.npf and updates % settings.grad_norm_every == 0:
            log_grad_norms(run, updates)
        if updates % settings.log_every == 0:
            tracker.log_metrics(losses, run.step)
        if agent.maybe_merge(run.step):
            tracker.log_metrics({"dapd/merged_at_update": updates, "dapd/merged_at_step": run.step}, run.step)
    run.timing["update"] += time.perf_counter() - t0


def log_grad_norms(run: OnlineRun, updates: int) -> None:
    norms = run.agent.group_grad_norms()
    logged = {}
    for i, task in enumerate(run.tasks):
        run.grad_rows.append(
            {
                "step": run.step,
                "updates": updates,
                "phase": run.agent.phase,
                "task": task,
                "grad_norm": float(norms["actor"][i]),
                "grad_norm_critic": float(norms["critic"][i]),
            }
        )
        logged[f"grad_norm/{task}"] = float(norms["actor"][i])
        logged[f"grad_norm/critic/{task}"] = float(norms["critic"][i])
    run.tracker.log_metrics(logged, run.step)


def end_of_episodes(run: OnlineRun, result: StepResult) -> None:
    """Episodes of every env ended together: training returns, DAPD's stop rule and re-scoring,
    and, at the first boundary after ``learning_starts``, the start of training (NPF: discovery)."""
    n, per_task, agent = run.num_tasks, run.envs_per_task, run.agent
    if len(result.finished) != n * per_task:
        raise RuntimeError(
            f"{run.suite}: episodes of different tasks ended at different steps; online training "
            "needs fixed-length episodes (lock step)"
        )
    t0 = time.perf_counter()
    logged = {}
    by_task: dict[int, list[tuple[float, bool]]] = {}
    for env, episode_return, _, success in result.finished:
        by_task.setdefault(env // per_task, []).append((episode_return, success))
    dapd_on = agent.npf and run.training_started
    for task, episodes in by_task.items():
        for episode_return, success in episodes:
            run.recent_returns[task] = (run.recent_returns[task] + [episode_return])[-10:]
            if dapd_on:
                agent.dapd.observe(task, float(success) if run.success_suite else episode_return, run.step)
        logged[f"train/return/{run.tasks[task]}"] = float(np.mean([r for r, _ in episodes]))
        if run.success_suite:
            logged[f"train/success/{run.tasks[task]}"] = float(np.mean([s for _, s in episodes]))
    if dapd_on:
        changed = agent.rescore(run.dapd_buffer, agent.dapd.due(sorted(by_task)))
        logged["dapd/rescored_tasks"] = len(changed)
        logged["dapd/frozen_tasks"] = sum(agent.dapd.frozen)
        for reason in FREEZE_REASONS:  # the stop rule and the merge told apart
            logged[f"dapd/frozen_by_{reason}"] = agent.dapd.frozen_by.count(reason)
    if not run.training_started and run.step >= run.settings.learning_starts:
        run.training_started = True
        if agent.npf:
            agent.discover(run.dapd_buffer)
            logged["dapd/discovered"] = 1
    run.tracker.log_metrics(logged, run.step)
    run.progress.update(0, ret=float(np.mean([np.mean(r) for r in run.recent_returns if r])))
    run.timing["dapd"] += time.perf_counter() - t0


def evaluation_due(run: OnlineRun) -> bool:
    return run.step % run.settings.eval_interval == 0 or run.step == run.settings.total_steps


def evaluated(run: OnlineRun) -> bool:
    return bool(run.eval_rows) and run.eval_rows[-1]["step"] == run.step


class EvaluationCut(Exception):
    """A stop was asked during an evaluation: it is dropped (redone on resume)."""


def evaluate(run: OnlineRun) -> None:
    """``eval_episodes`` per task with the deterministic policy: a row of ``metrics.csv`` + MLflow.
    A SIGTERM cuts it short (the checkpoint comes first; the resume evaluates again)."""
    t0 = time.perf_counter()
    act = numpy_policy(run.agent, run.device)
    stop_asked = run.resumable.guard

    def policy(obs: np.ndarray) -> np.ndarray:
        if stop_asked.requested:
            raise EvaluationCut
        return act(obs)

    try:
        scores = run.evaluator(policy)
    except EvaluationCut:
        return
    key = "success" if run.success_suite else "return"
    row = {
        "step": run.step,
        "updates": run.agent.num_updates,
        "score_mean": float(np.mean([scores[t][key] for t in run.tasks])),
    }
    row.update({f"score/{t}": scores[t][key] for t in run.tasks})
    row["return_mean"] = float(np.mean([scores[t]["return"] for t in run.tasks]))
    row.update({f"return/{t}": scores[t]["return"] for t in run.tasks})
    run.eval_rows.append(row)
    write_csv(run.metrics_path, run.eval_rows, score_fields(run.tasks))
    logged = {"eval/score_mean": row["score_mean"], "eval/return_mean": row["return_mean"]}
    for t in run.tasks:
        logged[f"eval/score/{t}"] = row[f"score/{t}"]
        logged[f"eval/return/{t}"] = scores[t]["return"]
        if run.success_suite:
            logged[f"eval/success/{t}"] = scores[t]["success"]
    run.tracker.log_metrics(logged, run.step)
    run.progress.update(0, score=row["score_mean"])
    run.timing["eval"] += time.perf_counter() - t0


def rates(run: OnlineRun) -> dict:
    timing = run.timing
    wall = run.wall_before + (time.perf_counter() - run.clock_start)
    transitions = timing["transitions"]
    return {
        "env_steps_per_s": transitions / max(wall, 1e-9),
        "collect_env_steps_per_s": transitions / max(timing["act"] + timing["env"] + timing["store"], 1e-9),
        "raw_env_steps_per_s": transitions / max(timing["env"], 1e-9),
        "updates_per_s": timing["updates"] / max(timing["update"], 1e-9),
        "loop_updates_per_s": timing["updates"] / max(wall, 1e-9),
        "wall_s": wall,
    }


def log_rates(run: OnlineRun) -> None:
    run.tracker.log_metrics({f"rate/{k}": v for k, v in rates(run).items() if k != "wall_s"}, run.step)


def checkpoint(run: OnlineRun) -> None:
    """Metrics flushed first, then the replay chunks added since the last checkpoint and the state."""
    t0 = time.perf_counter()
    run.timing["wall"] = run.wall_before + (t0 - run.clock_start)
    if run.pool.at_episode_start and run.resumable.interval_due(run.step):  # not a SIGTERM's extra one
        log_rates(run)
    run.tracker.flush()  # before the checkpoint: metrics up to it are never lost (resume re-logs the rest)
    chunks = run.replay_store.save(run.replay)
    run.resumable.save(checkpoint_state(run, chunks), run.step, skip=("td",))
    run.replay_store.prune(chunks)
    if run.agent.npf:
        write_csv(run.grads_path, run.grad_rows, GRAD_FIELDS)
    run.timing["ckpt"] += time.perf_counter() - t0


def finish(run: OnlineRun) -> dict:
    """``final.pt`` (the shared network after any merge, pathways), ``summary.json``, artifacts;
    the replay chunks are deleted (the checkpoint says so)."""
    run.progress.close()
    agent, settings = run.agent, run.settings
    agent.finalize(run.step)
    run.timing["wall"] = run.wall_before + (time.perf_counter() - run.clock_start)
    final = {
        "format": STATE_FORMAT,
        "algo": agent.shared.state_dict(),
        "method": run.method,
        "suite": run.suite,
        "tasks": run.tasks,
        "seed": run.seed,
        "obs_dim": run.obs_dim,
        "act_dim": run.act_dim,
        "sac": asdict(settings.sac),
        "conditioning": agent.cond,
        "steps": run.step,
        "updates": agent.num_updates,
    }
    if agent.pathways is not None:
        final["pathways"] = agent.pathways.state_dict()
    save_checkpoint(final, run.out_dir / "final.pt", run.step)
    if agent.npf:
        write_csv(run.grads_path, run.grad_rows, GRAD_FIELDS)
    summary = {
        "suite": run.suite,
        "tasks": run.tasks,
        "method": run.method,
        "seed": run.seed,
        "env_steps_per_task": run.step,
        "updates": agent.num_updates,
        "final_score_mean": run.eval_rows[-1]["score_mean"],
        "rates": rates(run),
        "timing_s": {k: v for k, v in run.timing.items() if k not in ("transitions", "updates")},
        "transitions": run.timing["transitions"],
    }
    if agent.npf:
        summary["dapd"] = dapd_summary(run)
    write_json(run.out_dir / "summary.json", summary)
    log_rates(run)
    for path in (run.metrics_path, run.out_dir / "summary.json") + ((run.grads_path,) if agent.npf else ()):
        run.tracker.log_artifact(path)
    drop_replay(run)
    return summary


def dapd_summary(run: OnlineRun) -> dict:
    dapd, agent, tasks = run.agent.dapd, run.agent, run.tasks
    return {
        "mode": run.settings.dapd_mode,
        "M": run.settings.dapd_M,
        "threshold": run.settings.threshold(run.suite),
        "rescores": dict(zip(tasks, dapd.rescores)),
        "frozen": dict(zip(tasks, dapd.frozen)),
        "frozen_at_step": dict(zip(tasks, dapd.frozen_at)),
        "frozen_by": dict(zip(tasks, dapd.frozen_by)),
        "merged_at_update": agent.merged_at,
        "merged_at_step": agent.merged_at_step,
        "density": {role: [float(x) for x in agent.pathways.density(role)] for role in agent.pathways.roles},
    }


def drop_replay(run: OnlineRun) -> None:
    """The run is complete: its replay chunks are no longer needed."""
    state = ckpt.load(run.checkpoint_path, map_location="cpu") if run.checkpoint_path.exists() else None
    if state is not None and not state.get("replay_dropped"):
        state["replay_dropped"], state["replay_chunks"] = True, []
        ckpt.save(state, run.checkpoint_path)
    shutil.rmtree(run.out_dir / "replay", ignore_errors=True)
