"""npf.stats against hand-computed values and a direct loop over rliable's resampling scheme."""

from __future__ import annotations

import numpy as np
import pytest

from npf import stats

# 3 seeds × 4 tasks; sorted: 0 1 2 | 3 4 5 6 7 8 | 9 10 100 → IQM = mean(3..8) = 5.5
HAND = np.array([[10.0, 0.0, 7.0, 3.0], [1.0, 100.0, 4.0, 9.0], [2.0, 5.0, 6.0, 8.0]])


def test_iqm_of_a_hand_made_matrix():
    assert stats.iqm(HAND) == pytest.approx(5.5)
    # the outlier 100 moves the mean, not the IQM
    assert HAND.mean() == pytest.approx(155 / 12)
    worse = HAND.copy()
    worse[1, 1] = 1e6
    assert stats.iqm(worse) == pytest.approx(5.5)


def test_mean_std_over_seeds_of_the_mean_over_tasks():
    mean, std, n = stats.mean_std(HAND)
    per_seed = [20 / 4, 114 / 4, 21 / 4]  # 5, 28.5, 5.25
    assert n == 3
    assert mean == pytest.approx(sum(per_seed) / 3)
    m = sum(per_seed) / 3
    assert std == pytest.approx((sum((x - m) ** 2 for x in per_seed) / 3) ** 0.5)
    assert stats.mean_std(HAND, ddof=1)[1] == pytest.approx((sum((x - m) ** 2 for x in per_seed) / 2) ** 0.5)


def _loop_ci(m: np.ndarray, reps: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """rliable's StratifiedBootstrap (task_bootstrap=False) + percentile interval, written out:
    each replicate redraws every task's runs with replacement, independently per task."""
    rng = np.random.default_rng(seed)
    n, k = m.shape
    samples = np.stack([m[rng.integers(0, n, (reps, n)), j] for j in range(k)], axis=2)  # [reps, runs, tasks]
    flat = np.sort(samples.reshape(reps, -1), axis=1)
    cut = flat.shape[1] // 4  # 15 scores: trim 3 each side, as trim_mean(0.25) does
    vals = flat[:, cut : flat.shape[1] - cut].mean(axis=1)
    a = (1 - level) / 2
    return tuple(np.quantile(vals, [a, 1 - a]))


def test_bootstrap_interval_matches_a_direct_loop_over_rliables_scheme():
    m = np.random.default_rng(3).normal(50.0, 10.0, size=(5, 3))
    lo, hi = stats.stratified_bootstrap_ci(m, n_resamples=20_000, seed=1)
    rlo, rhi = _loop_ci(m, 20_000, seed=2)
    width = rhi - rlo
    assert width > 1.0
    assert lo == pytest.approx(rlo, abs=0.05 * width)
    assert hi == pytest.approx(rhi, abs=0.05 * width)


def test_stratified_not_pooled():
    """Two tasks on very different scales: a pooled bootstrap can draw every run from one task;
    the stratified one always keeps each task's share, so its interval is much narrower."""
    rng = np.random.default_rng(0)
    m = np.stack([rng.normal(0.0, 1.0, 4), rng.normal(100.0, 1.0, 4)], axis=1)
    lo, hi = stats.stratified_bootstrap_ci(m, "mean", n_resamples=5000)
    pooled = rng.choice(m.ravel(), size=(5000, m.size)).mean(axis=1)
    plo, phi = np.quantile(pooled, [0.025, 0.975])
    assert (hi - lo) < 0.2 * (phi - plo)


def test_interval_brackets_the_point_and_shrinks_with_more_runs():
    rng = np.random.default_rng(7)
    widths = []
    for runs in (5, 20, 80):
        m = rng.normal(80.0, 15.0, size=(runs, 5))
        s = stats.summarize_matrix(m)
        assert s.ci_low <= s.iqm <= s.ci_high
        assert s.seeds == runs and s.tasks == 5
        widths.append(s.ci_high - s.ci_low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.5 * widths[0]


def test_interval_is_reproducible_and_one_run_is_its_point():
    assert stats.stratified_bootstrap_ci(HAND) == stats.stratified_bootstrap_ci(HAND)
    one = HAND[:1]  # 10, 0, 7, 3 → IQM over 4 values = mean(3, 7) = 5
    assert stats.stratified_bootstrap_ci(one) == (5.0, 5.0)
    assert stats.stratified_bootstrap_ci(one, "mean") == (5.0, 5.0)


@pytest.mark.parametrize("bad, match", [(np.array([1.0, 2.0]), "runs × tasks"), (np.array([[1.0, np.nan]]), "NaN")])
def test_bad_score_matrix(bad, match):
    with pytest.raises(ValueError, match=match):
        stats.summarize_matrix(bad)
