"""Fig. 5's input: the sample-complexity runs' final evaluations as one tidy CSV.

``offline.dataset_sizes`` trains every configured run again on only the first K trajectories per
task (``sample_complexity/runs/{suite}/{method}-{algo}/n{K}/seed{s}``); their evaluation JSONs
(:func:`npf.stages.offline.evaluate_run`, with ``dataset_size``) become
``sample_complexity/scores.csv``, one row per run × task, which :func:`npf.figures.figure5` reads.
``score`` is the task's mean normalized score (gym suites) or its success rate in % (MT10),
as in :func:`npf.tables.load_eval_results`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

COLUMNS = ["dataset_size", "method", "algo", "seed", "task", "score", "suite", "metric"]


def tidy_scores(eval_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per (run, task) of the given evaluation JSONs; each must carry ``dataset_size``."""
    rows = []
    for path in eval_paths:
        ev = json.loads(Path(path).read_text())
        if "dataset_size" not in ev:
            raise ValueError(f"{path}: not a sample-complexity evaluation (no 'dataset_size')")
        metric = ev.get("metric", "normalized")
        key = "normalized_mean" if metric == "normalized" else "success"
        for task, r in ev["tasks"].items():
            rows.append({"dataset_size": int(ev["dataset_size"]), "method": ev["method"], "algo": ev["algo"],
                         "seed": int(ev["seed"]), "task": task, "score": float(r[key]), "suite": ev["suite"],
                         "metric": metric})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["suite", "dataset_size", "method", "algo", "seed"], kind="stable").reset_index(drop=True)


def write_scores(eval_paths: Iterable[str | Path], out_csv: str | Path) -> pd.DataFrame:
    """:func:`tidy_scores` written atomically to ``out_csv``; returns the frame."""
    from npf.data import atomic_write_bytes

    frame = tidy_scores(eval_paths)
    atomic_write_bytes(Path(out_csv), lambda tmp: frame.to_csv(tmp, index=False))
    return frame
