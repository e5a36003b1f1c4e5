"""Curves over seeds: a solid line for the centre and a shaded band. ``band`` picks both:

- ``"std"`` (default): mean ± 1 std over seeds (population std, ddof = 0, as in
  :mod:`npf.report.tables.scores`);
- ``"ci95"``: mean ± 1.96 · SEM (normal approximation; SEM with ddof = 1);
- ``"iqr"``: median and the 25–75 % quantiles;
- ``"minmax"``: mean and the min–max range (the paper's "100 % confidence interval").

The legend title states which band is drawn. When a frame has a ``seed`` column, values are first
averaged within each seed (over tasks, for instance) and the band is taken over seeds; without it,
the band is over all rows at that x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from npf.report.figures.style import BANDS


def center_band(values: np.ndarray, band: str) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if band == "std":
        m, s = v.mean(), v.std(ddof=0)
        return m, m - s, m + s
    if band == "ci95":
        m = v.mean()
        h = 1.96 * v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else 0.0
        return m, m - h, m + h
    if band == "iqr":
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        return med, q1, q3
    if band == "minmax":
        return v.mean(), v.min(), v.max()
    raise ValueError(f"band must be one of {sorted(BANDS)}, got {band!r}")


def curve_stats(df: pd.DataFrame, x: str, y: str, keys: Sequence[str] = (), band: str = "std") -> pd.DataFrame:
    """Per (``keys``, ``x``): ``center, lo, hi, n`` over seeds (values averaged within a seed first)."""
    keys = list(keys)
    d = df.dropna(subset=[y])
    if "seed" in d.columns:
        d = d.groupby([*keys, x, "seed"], as_index=False, sort=False)[y].mean()
    rows = []
    for k, g in d.groupby([*keys, x], sort=False):
        k = k if isinstance(k, tuple) else (k,)
        c, lo, hi = center_band(g[y].to_numpy(), band)
        rows.append(dict(zip([*keys, x], k)) | {"center": c, "lo": lo, "hi": hi, "n": len(g)})
    out = pd.DataFrame(rows, columns=[*keys, x, "center", "lo", "hi", "n"])
    return out.sort_values([*keys, x], kind="stable").reset_index(drop=True)


def plot_curves(
    ax,
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    order: Sequence,
    labels: Mapping,
    band: str,
    colors: Mapping | None = None,
    markers: Mapping | None = None,
    **line_kw,
) -> None:
    """One line per ``hue`` value (mean over seeds) with its band; ``markers`` (hue → marker) marks
    every point, which tells apart runs whose lines coincide (success rates at 0 or 100 %)."""
    st = curve_stats(df, x, y, [hue], band)
    for _i, h in enumerate(order):
        s = st[st[hue] == h]
        if s.empty:
            continue
        color = None if colors is None else colors.get(h)
        kw = dict(line_kw, marker=markers[h]) if markers and h in markers else line_kw
        if len(s) == 1 and "marker" not in kw:  # one point: no line to draw
            kw = dict(kw, marker="o")
        (line,) = ax.plot(s[x], s["center"], label=labels.get(h, str(h)), color=color, **kw)
        ax.fill_between(s[x], s["lo"], s["hi"], color=line.get_color(), alpha=0.2, linewidth=0)
