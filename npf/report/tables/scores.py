"""The final scores of a results directory's runs, and their statistics over seeds.

Input: ``eval/{suite}/{method}-{algo}/seed{s}.json``, the final evaluation of one run (see
:func:`npf.evaluate.evaluate_tasks`); :func:`load_eval_results` reads them into a tidy frame
``suite, method, algo, seed, task, score, metric`` where ``score`` is the task's mean normalized
score (``metric == "normalized"``, gym suites) or its success rate in % (``"success"``, MT10).

Statistics (one convention everywhere):

- A run's score is the **mean over its tasks** (per seed); a table cell is the **mean ± std over
  seeds** of that per-seed value. Per-task cells (Tables 6, 7) are mean ± std over seeds of that
  task's score.
- ``std`` is the population standard deviation over seeds, ``ddof = 0`` (:data:`STD_DDOF`): numpy's
  default, the one :mod:`npf.evaluate` uses for per-episode stds, and defined (= 0) for a single
  seed, which the small default config produces. Pass ``ddof=1`` for the sample std.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from npf import layout

STD_DDOF = 0
EVAL_COLUMNS = ["suite", "method", "algo", "seed", "task", "score", "metric"]


def load_eval_results(results_dir: str | Path) -> pd.DataFrame:
    """All ``eval/*/*/seed*.json`` as one tidy frame (one row per run × task); empty if none."""
    rows = []
    for path in layout.find(layout.eval_json, results_dir):
        ev = json.loads(path.read_text())
        metric = ev.get("metric", "normalized")
        key = "normalized_mean" if metric == "normalized" else "success"
        for task, r in ev["tasks"].items():
            rows.append(
                {
                    "suite": ev["suite"],
                    "method": ev["method"],
                    "algo": ev["algo"],
                    "seed": int(ev["seed"]),
                    "task": task,
                    "score": float(r[key]),
                    "metric": metric,
                }
            )
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def per_seed_means(df: pd.DataFrame, by: Iterable[str] = ("suite", "method", "algo")) -> pd.DataFrame:
    """Mean over tasks for each run: columns ``*by, seed, score``."""
    by = list(by)
    return df.groupby([*by, "seed"], sort=False, as_index=False)["score"].mean()


def mean_std_count(values: pd.Series, ddof: int) -> pd.Series:
    """``mean``, ``std`` (NaN with ``ddof`` or fewer values) and ``n`` of ``values``."""
    v = values.to_numpy(dtype=float)
    std = float(np.std(v, ddof=ddof)) if len(v) > ddof else math.nan
    return pd.Series({"mean": float(np.mean(v)), "std": std, "n": len(v)})


def summarize(df: pd.DataFrame, by: Iterable[str] = ("suite", "method", "algo"), ddof: int = STD_DDOF) -> pd.DataFrame:
    """Mean over tasks per seed, then ``mean, std, n`` over seeds, per ``by`` group."""
    by = list(by)
    seeds = per_seed_means(df, by)
    out = seeds.groupby(by, sort=False)["score"].apply(lambda s: mean_std_count(s, ddof)).unstack()
    out["n"] = out["n"].astype(int)
    return out.reset_index()


def summarize_tasks(df: pd.DataFrame, ddof: int = STD_DDOF) -> pd.DataFrame:
    """Per task: ``mean, std, n`` over seeds."""
    return summarize(df, ("suite", "method", "algo", "task"), ddof)
