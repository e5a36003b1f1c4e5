"""The online training loop: collect, train, end of episode, evaluate, checkpoint, finish.

One :class:`~npf.rollout.EnvPool` steps the ``envs_per_task`` envs of each of the N tasks in lock
step (fixed-length episodes: 150 steps MT10, 1000 cheetah) with one policy forward per step. Each
task has a replay buffer D_n and a DAPD buffer TD_n. Before ``learning_starts`` the randomly
initialised policy collects; training starts at the first episode boundary after it (NPF
discovers its pathways there, on TD_n) and every env step of a task is then followed by
``updates_per_step`` synchronous updates over all N tasks (one stacked ``[N, B]`` batch).

Resume (:mod:`~npf.online.run_state`, :mod:`~npf.online.build`): a resumed run equals an
uninterrupted one. On SIGTERM the checkpoint is written after the current env step, mid-episode if
need be (an evaluation in progress is dropped and redone on resume).

Outputs in ``out_dir`` (:mod:`~npf.online.summary`): ``final.pt``, ``metrics.csv`` (``step,
updates, score_mean, score/<task>, return/<task>``), ``grad_norms.csv`` (NPF: ‖m_n ⊙ ∂L/∂w‖ per
task), ``summary.json``, MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from npf.algos.base import check_finite
from npf.online.agent import numpy_policy
from npf.online.build import open_run
from npf.online.run_state import OnlineRun, checkpoint_state
from npf.online.settings import OnlineSettings
from npf.online.summary import finish, log_rates
from npf.online.tidy import GRAD_FIELDS, score_fields, write_csv
from npf.preemption import EvaluationCut, stoppable
from npf.progress import Progress
from npf.rollout import StepResult
from npf.tracking import stage_tracker

FREEZE_REASONS = ("threshold", "merge", "single_shot")


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
            if run.resumable.due(run.step):
                checkpoint(run)
                if run.resumable.stop_here(run.step):
                    return {"stopped_at": run.step}
        summary = finish(run)
        run.resumable.status = "FINISHED"
        return summary


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


def evaluate(run: OnlineRun) -> None:
    """``eval_episodes`` per task with the deterministic policy: a row of ``metrics.csv`` + MLflow.
    A SIGTERM cuts it short (the checkpoint comes first; the resume evaluates again)."""
    t0 = time.perf_counter()
    try:
        scores = run.evaluator(stoppable(numpy_policy(run.agent, run.device), run.resumable.guard))
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


def checkpoint(run: OnlineRun) -> None:
    """Metrics flushed first, then the replay chunks added since the last checkpoint and the state."""
    t0 = time.perf_counter()
    run.timing["wall"] = run.wall_before + (t0 - run.clock_start)
    if run.resumable.interval_due(run.step):  # not a SIGTERM's extra one
        log_rates(run)
    run.tracker.flush()  # before the checkpoint: metrics up to it are never lost (resume re-logs the rest)
    chunks = run.replay_store.save(run.replay)
    run.resumable.save(checkpoint_state(run, chunks), run.step, skip=("td",))
    run.replay_store.prune(chunks)
    if run.agent.npf:
        write_csv(run.grads_path, run.grad_rows, GRAD_FIELDS)
    run.timing["ckpt"] += time.perf_counter() - t0
