"""Evaluation of multitask policies: all tasks' envs step together, one forward pass per step.

Normalized score = (score − random) / (expert − random) · 100, with the random and expert scores
measured by the datasets stage (manifest ``scores``). Success suites (MT10) report success %.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from npf.envs import is_success_suite, make_env
from npf.rollout import evaluate_policy


def normalized_score(score: float | np.ndarray, random: float, expert: float) -> float | np.ndarray:
    return (np.asarray(score) - random) / (expert - random) * 100.0


def weak_expert(scores: dict) -> str | None:
    """Why normalized scores of a task mean little, or None: the expert's data score must exceed
    the random policy's by more than one standard deviation of the random returns (else the
    denominator of :func:`normalized_score` is noise and the scores explode or flip sign), and,
    where the manifest has it, the score of the constant mid-range action (``scores["neutral"]``:
    the A1 standing still, the cheetah applying no torque) by more than its standard deviation.
    A uniformly random A1 falls within ~150 steps while standing still earns 35-50 % of the
    maximum return, so beating random alone does not show that an expert learned its task."""
    for name, label in (("random", "random"), ("neutral", "the constant mid-range action")):
        if name not in scores:
            continue
        gap, spread = scores["expert"] - scores[name], scores.get(f"{name}_std", 0.0)
        if gap <= max(spread, 1e-6):
            return (
                f"the expert ({scores['expert']:.1f}) is not clearly better than {label} ({scores[name]:.1f} ± "
                f"{spread:.1f}): normalized scores of this task are not meaningful; train the expert longer "
                "(experts.total_steps)"
            )
    return None


def publish_evaluation(tracker, ev: dict, out_json) -> None:
    """The final evaluation's JSON (what the tables read), its ``final/...`` metrics and the JSON
    as an artifact of the job's MLflow run."""
    from npf.data import write_json

    write_json(out_json, ev)
    tracker.log_metrics(final_metrics(ev), 0)
    tracker.log_artifact(out_json)


def final_metrics(ev: dict) -> dict[str, float]:
    """The ``final/...`` MLflow metrics of an :func:`evaluate_tasks` result: return and success
    means, and the normalized score wherever the result has one (overall and per task)."""
    em = {"final/return_mean": ev["return_mean"], "final/success_mean": ev["success_mean"]}
    if "normalized_mean" in ev:
        em["final/normalized_mean"] = ev["normalized_mean"]
    for t, r in ev["tasks"].items():
        em[f"final/return/{t}"] = r["return_mean"]
        if "normalized_mean" in r:
            em[f"final/normalized/{t}"] = r["normalized_mean"]
        em[f"final/success/{t}"] = r["success"]
    return em


def evaluate_tasks(
    policy: Callable[[np.ndarray], np.ndarray],
    suite: str,
    tasks: Sequence[str],
    episodes: int,
    seed: int,
    ref_scores: Sequence[dict] | None = None,
    envs_per_task: int | None = None,
) -> dict:
    """``policy`` maps observations [N, E, obs_dim] (task-major) to actions [N, E, act_dim].

    Returns per-task mean/std of return, normalized score (when ``ref_scores`` are given: one
    manifest ``scores`` dict per task) and success rate, plus their means over tasks.
    """
    n = len(tasks)
    e = envs_per_task if envs_per_task and episodes % envs_per_task == 0 else episodes
    envs = [make_env(suite, t) for t in tasks for _ in range(e)]

    def flat_policy(obs: np.ndarray) -> np.ndarray:
        act = policy(obs.reshape(n, e, -1))
        return np.asarray(act).reshape(n * e, -1)

    ev = evaluate_policy(flat_policy, envs, episodes * n, seed)
    out: dict = {"tasks": {}}
    for i, task in enumerate(tasks):
        sel = (ev["env"] // e) == i
        rets, succ = ev["returns"][sel], ev["success"][sel]
        row = {
            "return_mean": float(rets.mean()),
            "return_std": float(rets.std()),
            "episodes": int(sel.sum()),
            "success": float(succ.mean() * 100.0),
        }
        if ref_scores is not None:
            ns = normalized_score(rets, ref_scores[i]["random"], ref_scores[i]["expert"])
            row["normalized_mean"], row["normalized_std"] = float(ns.mean()), float(ns.std())
        out["tasks"][task] = row
    rows = out["tasks"].values()
    out["return_mean"] = float(np.mean([r["return_mean"] for r in rows]))
    out["success_mean"] = float(np.mean([r["success"] for r in rows]))
    if ref_scores is not None:
        out["normalized_mean"] = float(np.mean([r["normalized_mean"] for r in rows]))
    out["metric"] = "success" if is_success_suite(suite) else "normalized"
    for env in envs:
        env.close()
    return out
