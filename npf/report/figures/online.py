"""The online figures: DAPD against single-shot pruning (Figs. 3, 13, 14) and the gradient norm per
task group with and without pretraining (Fig. 4).

==========================  ===============================================  ==============================
figure                      data                                             file
==========================  ===============================================  ==============================
3, 13, 14 (DAPD)            ``step, variant, return|success[, seed, task]``  ``online/dapd_curves.csv``
4 (gradient norms)          ``step, task, grad_norm, variant[, seed]``       ``online/grad_norms.csv``
4 (b: performance, opt.)    ``step, task, success|return, variant[, seed]``  ``online/pretrain_curves.csv``
==========================  ===============================================  ==============================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from npf.report.figures import style  # style.save by attribute: the layout tests wrap it
from npf.report.figures.bands import plot_curves
from npf.report.figures.style import (
    ENV_STEP_LABEL,
    VALUE_LABELS,
    fig_legend,
    grid,
    legend,
    ordered,
    palette,
    value_column,
)

VARIANT_LABELS = {
    "single-shot": "Single-shot",
    "dapd": "DAPD",
    "dapd-M1": "DAPD (M=1)",
    "dapd-M5": "DAPD (M=5)",
    "dapd-M10": "DAPD (M=10)",
    "dapd-nothreshold": "DAPD, no threshold stop",
    "dense": "dense SAC",
    "sac": "dense SAC",
    "pretrain": "pathways pre-configured separately",
    "no-pretrain": "pathways configured jointly",
}
SINGLE_SHOT_VARIANTS = ("single-shot", "dapd", "dapd-M10", "dapd-nothreshold", "dense", "sac")
M_VARIANTS = ("dapd-M1", "dapd-M5", "dapd-M10")


# ------------------------------------------------------------------------------------ Fig. 3 / 13 / 14
def _pick_task(curves: pd.DataFrame, task: str | None) -> pd.DataFrame:
    if "task" not in curves.columns:
        return curves
    tasks = list(dict.fromkeys(curves["task"]))
    task = task if task is not None else ("forward" if "forward" in tasks else tasks[0])
    return curves[curves["task"] == task]


def figure3(
    curves: pd.DataFrame, stem: str | Path, band: str = "std", task: str | None = None, dense_final: float | None = None
) -> Figure:
    """Fig. 3: (a) single-shot vs DAPD (with / without the threshold stop), (b) DAPD with M = 1, 5,
    10. ``curves``: ``step, variant, return|success[, seed, task]``; with a ``task`` column, one
    task is plotted (``task``, else ``forward``, else the first). ``dense_final``: the dense SAC
    baseline's final score, drawn as a dashed line. A panel is drawn only if it has data."""
    d = _pick_task(curves, task)
    y = value_column(d)
    variants = list(dict.fromkeys(d["variant"]))
    pa = ordered([v for v in variants if v not in ("dapd-M1", "dapd-M5")], SINGLE_SHOT_VARIANTS)
    pb = [v for v in M_VARIANTS if v in variants]
    panels = [
        (t, vs)
        for t, vs in (("(a) single-shot vs DAPD", pa), ("(b) DAPD moving average M", pb))
        if vs and not (t.startswith("(b)") and len(vs) < 2)
    ]
    fig, axes = grid(len(panels), 2, (4.8, 3.4))
    colors = palette(ordered(variants, SINGLE_SHOT_VARIANTS + M_VARIANTS))
    name = d["task"].iloc[0] if "task" in d.columns and len(d) else None
    for ax, (title, vs) in zip(axes, panels):
        plot_curves(ax, d, "step", y, "variant", vs, VARIANT_LABELS, band, colors)
        if dense_final is not None:
            ax.axhline(dense_final, color="k", ls="--", lw=1, label="dense SAC (final)")
        ax.set(title=title + (f" — {name}" if name else ""), xlabel=ENV_STEP_LABEL, ylabel=VALUE_LABELS[y])
        legend(ax, band)
    style.save(fig, stem)
    return fig


def _dapd_tasks(curves: pd.DataFrame, stem, variants: Sequence[str], band: str, title: str) -> Figure:
    d = curves[curves["variant"].isin(variants)]
    if "task" not in d.columns:
        d = d.assign(task="task")
    y = value_column(d)
    tasks = list(dict.fromkeys(d["task"]))
    fig, axes = grid(len(tasks), 3)
    present = [v for v in variants if v in set(d["variant"])]
    colors = palette(present)
    for ax, t in zip(axes, tasks):
        plot_curves(ax, d[d["task"] == t], "step", y, "variant", present, VARIANT_LABELS, band, colors)
        ax.set(title=t, xlabel=ENV_STEP_LABEL, ylabel=VALUE_LABELS[y])
    fig_legend(fig, axes[0], band)
    fig.suptitle(title)
    style.save(fig, stem)
    return fig


def figure13(curves: pd.DataFrame, stem: str | Path, band: str = "std") -> Figure:
    """Fig. 13: single-shot vs DAPD (with / without threshold stop) on single tasks; one subplot
    per ``task``. ``curves``: ``task, step, variant, return|success[, seed]``."""
    return _dapd_tasks(
        curves, stem, [v for v in SINGLE_SHOT_VARIANTS], band, "Single-shot vs data-adaptive pathway discovery (DAPD)"
    )


def figure14(curves: pd.DataFrame, stem: str | Path, band: str = "std") -> Figure:
    """Fig. 14: DAPD with moving average M = 1, 5, 10 on single tasks; one subplot per task."""
    return _dapd_tasks(curves, stem, list(M_VARIANTS), band, "DAPD with different moving averages M")


# ------------------------------------------------------------------------------------ Fig. 4
def figure4(
    grad_norms: pd.DataFrame,
    stem: str | Path,
    performance: pd.DataFrame | None = None,
    band: str = "std",
    log_y: bool = True,
) -> Figure:
    """Fig. 4: gradient norm restricted to each task's pathway ("task group"), pathways
    pre-configured separately (``pretrain``) vs configured jointly (``no-pretrain``); one subplot
    per task. ``grad_norms``: ``step, task, grad_norm, variant[, seed]``. ``performance`` (optional,
    Fig. 4b): ``step, task, success|return, variant[, seed]`` — adds one subplot per task."""
    tasks = list(dict.fromkeys(grad_norms["task"]))
    blocks = [("grad_norm", grad_norms)]
    if performance is not None and not performance.empty:
        blocks.append((value_column(performance), performance))
    ncols = min(5, len(tasks))
    per_block = math.ceil(len(tasks) / ncols) * ncols
    fig, axes = grid(per_block * len(blocks), ncols)
    variants = ordered(pd.concat([b["variant"] for _, b in blocks]), ("pretrain", "no-pretrain"))
    colors = palette(variants)
    for bi, (y, d) in enumerate(blocks):
        for ti, t in enumerate(tasks):
            ax = axes[bi * per_block + ti]
            plot_curves(ax, d[d["task"] == t], "step", y, "variant", variants, VARIANT_LABELS, band, colors)
            ax.set(title=t, xlabel=ENV_STEP_LABEL, ylabel=VALUE_LABELS[y])
            if y == "grad_norm" and log_y:
                ax.set_yscale("log")
        for ax in axes[bi * per_block + len(tasks) : (bi + 1) * per_block]:
            fig.delaxes(ax)
    fig_legend(fig, axes[0], band)
    fig.suptitle("Gradient norm per task group" + (" (top) and performance (bottom)" if len(blocks) > 1 else ""))
    style.save(fig, stem)
    return fig
