"""Aggregate statistics of a score matrix over seeds and tasks, as ``rliable`` computes them.

A score matrix has one row per run (seed) and one column per task (Agarwal et al., 2021,
"Deep RL at the edge of the statistical precipice"):

- :func:`mean_std`: per seed the mean over tasks, then mean ± std over seeds (population std,
  ``ddof`` = :data:`npf.report.tables.scores.STD_DDOF`) and the seed count: the convention of
  :mod:`npf.report.tables.scores`;
- :func:`iqm`: the interquartile mean of all run × task scores, the mean of the middle 50 %
  (``scipy.stats.trim_mean(scores, 0.25, axis=None)``, rliable's ``metrics.aggregate_iqm``);
- :func:`stratified_bootstrap_ci`: a 95 % percentile bootstrap confidence interval of a statistic
  in which every bootstrap sample redraws, for each task separately, that task's runs with
  replacement (rliable's ``StratifiedBootstrap`` with ``task_bootstrap=False``, the interval of
  ``library.get_interval_estimates``). This is ``scipy.stats.bootstrap`` with one sample per
  task: scipy resamples each sample independently, which is exactly the stratification.

``rliable`` itself is not used: ``pip install rliable`` (1.2.0) installs beside the pinned stack
(it adds arch 7.2.0, statsmodels, seaborn and changes no pinned package), but ``import
rliable.library`` fails: arch 7.2.0 calls pandas' ``deprecate_kwarg`` with the signature pandas 3
removed (``TypeError: deprecate_kwarg() missing 1 required positional argument``). The tests
check the interval against a direct loop over rliable's resampling scheme instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CI_LEVEL = 0.95
RESAMPLES = 10_000
SEED = 0  # fixed: a rebuilt page must show the same interval


def _matrix(scores) -> np.ndarray:
    m = np.asarray(scores, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"scores must be a non-empty runs × tasks matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("scores contain NaN or inf (a run without a score for some task?)")
    return m


def iqm(scores, axis=None) -> float | np.ndarray:
    """Interquartile mean: the mean of the scores after cutting the lowest and the highest 25 %."""
    return sps.trim_mean(scores, proportiontocut=0.25, axis=axis)


def _flat_iqm(*task_columns: np.ndarray, axis: int = -1):
    """IQM over all runs and tasks; each argument is one task's runs (vectorised: ``axis`` is runs)."""
    cols = np.stack([np.moveaxis(np.asarray(c), axis, -1) for c in task_columns], axis=-1)  # [..., runs, tasks]
    return iqm(cols.reshape(*cols.shape[:-2], -1), axis=-1)


def _flat_mean(*task_columns: np.ndarray, axis: int = -1):
    cols = np.stack([np.moveaxis(np.asarray(c), axis, -1) for c in task_columns], axis=-1)
    return cols.reshape(*cols.shape[:-2], -1).mean(axis=-1)


STATISTICS: dict[str, Callable] = {"iqm": _flat_iqm, "mean": _flat_mean}


def stratified_bootstrap_ci(
    scores, statistic: str = "iqm", level: float = CI_LEVEL, n_resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """``level`` percentile-bootstrap interval of ``statistic`` (``iqm`` or ``mean`` of all
    scores), runs resampled with replacement within each task. One run per task has nothing to
    resample: the interval is the point itself."""
    m = _matrix(scores)
    fn = STATISTICS[statistic]
    if m.shape[0] == 1:
        point = float(fn(*m.T))
        return point, point
    res = sps.bootstrap(
        tuple(m.T),
        fn,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Summary:
    """What a results table shows for one run group (one score matrix)."""

    mean: float
    std: float
    seeds: int
    tasks: int
    iqm: float
    ci_low: float
    ci_high: float

    def contains(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high


def mean_std(scores, ddof: int = 0) -> tuple[float, float, int]:
    """Per seed the mean over tasks; then mean, std (``ddof``) and count over seeds."""
    per_seed = _matrix(scores).mean(axis=1)
    std = float(np.std(per_seed, ddof=ddof)) if len(per_seed) > ddof else math.nan
    return float(per_seed.mean()), std, len(per_seed)


def summarize_matrix(
    scores, ddof: int = 0, level: float = CI_LEVEL, n_resamples: int = RESAMPLES, seed: int = SEED
) -> Summary:
    m = _matrix(scores)
    mean, std, n = mean_std(m, ddof)
    lo, hi = stratified_bootstrap_ci(m, "iqm", level, n_resamples, seed)
    return Summary(mean, std, n, m.shape[1], float(iqm(m)), lo, hi)
