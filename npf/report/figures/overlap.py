"""Pathway overlap (Figs. 6, 15): the share of each task's pathway weights that another task's
pathway holds, from ``pathways/*/*/seed*/masks.json`` (an N×N frame, tasks as index and columns)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from npf import layout
from npf.report.figures import style  # style.save by attribute: the layout tests wrap it
from npf.report.figures.style import grid


def draw_overlap(ax, overlap: pd.DataFrame, title: str | None = None, digits: int = 1, colorbar: bool = True):
    """Heat map of an overlap matrix in % ((i, j) = |m_i ∧ m_j| / |m_i| · 100; diagonal: share of
    task i's pathway used by no other task), the percentage printed in every cell."""
    m = overlap.to_numpy(dtype=float)
    im = ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
    n = m.shape[0]
    ticks = range(n)
    ax.set_xticks(ticks, [str(c) for c in overlap.columns], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, [str(i) for i in overlap.index])
    fs = 8 if n <= 6 else 6
    for i in range(n):
        for j in range(m.shape[1]):
            if not np.isnan(m[i, j]):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.{digits}f}",
                    ha="center",
                    va="center",
                    fontsize=fs,
                    color="black" if m[i, j] > 60 else "white",
                )
    ax.set(xlabel="task j", ylabel="task i (pathway)")
    if title:
        ax.set_title(title)
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label("% shared (diagonal: unique)")
    return im


def figure6(overlap: pd.DataFrame, stem: str | Path, title: str | None = None) -> Figure:
    """Fig. 6: share of pathway weights between tasks (MT10, IQL policy in the paper)."""
    n = overlap.shape[0]
    fig = Figure(figsize=(1.0 + 0.75 * n, 0.6 + 0.65 * n), layout="constrained")
    draw_overlap(fig.subplots(), overlap, title or "Shared pathway weights (%)")
    style.save(fig, stem)
    return fig


def figure15(overlaps: Mapping[str, pd.DataFrame], stem: str | Path, ncols: int = 2) -> Figure:
    """Fig. 15: one overlap heat map per panel (``{panel title: N×N frame}``, e.g. one per suite ×
    algorithm)."""
    items = list(overlaps.items())
    nmax = max(df.shape[0] for _, df in items)
    s = max(3.0, 1.6 + 0.6 * nmax)  # room for a panel title over a one-task matrix
    fig, axes = grid(len(items), ncols, (s + 1.8, s + 0.4))
    for k, (ax, (title, df)) in enumerate(zip(axes, items)):
        draw_overlap(ax, df, f"({chr(ord('a') + k)}) {title}")
    style.save(fig, stem)
    return fig


def load_overlaps(results_dir: str | Path, role: str = "actor") -> dict[tuple[str, str], pd.DataFrame]:
    """``{(suite, algo): N×N overlap (%)}`` from ``pathways/*/*/seed*/masks.json``, the mean over
    seeds (cells that are NaN in a seed — an empty pathway — are skipped)."""
    acc: dict[tuple[str, str], list] = {}
    tasks: dict[tuple[str, str], list] = {}
    for p in layout.find(layout.masks_summary, results_dir):
        s = json.loads(p.read_text())
        r = s.get("roles", {}).get(role)
        if r is None or "overlap_percent" not in r:
            continue
        key = (p.parent.parent.parent.name, p.parent.parent.name)
        if key in tasks and tasks[key] != list(s["tasks"]):
            raise ValueError(f"{p}: tasks {s['tasks']} differ from other seeds' {tasks[key]}")
        tasks[key] = list(s["tasks"])
        acc.setdefault(key, []).append(np.asarray(r["overlap_percent"], dtype=float))
    out = {}
    for key, ms in acc.items():
        with np.errstate(all="ignore"):
            mean = np.nanmean(np.stack(ms), axis=0) if len(ms) > 1 else ms[0]
        out[key] = pd.DataFrame(mean, index=tasks[key], columns=tasks[key])
        out[key].attrs["n_seeds"] = len(ms)
    return out
