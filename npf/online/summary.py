"""The end of an online run: throughput rates, ``final.pt``, ``summary.json`` (with DAPD's
record for NPF), the MLflow artifacts, and the replay chunks dropped."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict

from npf import checkpoint as ckpt
from npf.data import write_json
from npf.online.run_state import OnlineRun
from npf.online.settings import STATE_FORMAT
from npf.online.tidy import GRAD_FIELDS, write_csv
from npf.preemption import save_checkpoint


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
