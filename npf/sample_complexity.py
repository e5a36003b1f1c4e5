"""Fig. 5's input: the sample-complexity runs' final evaluations as one tidy CSV.

``offline.dataset_sizes`` trains every configured run again on only the first K trajectories per
task (``sample_complexity/runs/{suite}/{method}-{algo}/n{K}/seed{s}``); their evaluation JSONs
(:func:`npf.stages.offline.evaluate_run`, with ``dataset_size``), and the main runs' for a K equal
to ``datasets.episodes``, become
``sample_complexity/scores.csv``, one row per run × task, which :func:`npf.report.figures.offline.figure5` reads.
``score`` is the task's mean normalized score (gym suites) or its success rate in % (MT10),
as in :func:`npf.report.tables.scores.load_eval_results`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

COLUMNS = ["dataset_size", "method", "algo", "seed", "task", "score", "suite", "metric"]


def tidy_scores(eval_paths: Sequence[str | Path], sizes: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per (run, task) of the given evaluation JSONs. ``sizes``: each run's trajectories per
    task, needed for a main run (trained on the whole dataset, its JSON has no ``dataset_size``);
    a sample-complexity run's JSON carries its own, which must agree."""
    if sizes is not None and len(sizes) != len(eval_paths):
        raise ValueError(f"{len(eval_paths)} evaluation files but {len(sizes)} dataset sizes")
    rows = []
    for i, path in enumerate(eval_paths):
        ev = json.loads(Path(path).read_text())
        size = ev.get("dataset_size", None if sizes is None else sizes[i])
        if size is None:
            raise ValueError(f"{path}: not a sample-complexity evaluation (no 'dataset_size') and no size given")
        if sizes is not None and int(size) != int(sizes[i]):
            raise ValueError(f"{path}: trained on {size} trajectories per task, listed as {sizes[i]}")
        metric = ev.get("metric", "normalized")
        key = "normalized_mean" if metric == "normalized" else "success"
        for task, r in ev["tasks"].items():
            rows.append(
                {
                    "dataset_size": int(size),
                    "method": ev["method"],
                    "algo": ev["algo"],
                    "seed": int(ev["seed"]),
                    "task": task,
                    "score": float(r[key]),
                    "suite": ev["suite"],
                    "metric": metric,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["suite", "dataset_size", "method", "algo", "seed"], kind="stable").reset_index(drop=True)


def write_scores(
    eval_paths: Sequence[str | Path], out_csv: str | Path, sizes: Sequence[int] | None = None
) -> pd.DataFrame:
    """:func:`tidy_scores` written atomically to ``out_csv``; returns the frame."""
    from npf.data import atomic_write_bytes

    frame = tidy_scores(eval_paths, sizes)
    atomic_write_bytes(Path(out_csv), lambda tmp: frame.to_csv(tmp, index=False))
    return frame
