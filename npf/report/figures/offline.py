"""The offline figures: learning curves (Figs. 10–12, from ``runs/*/*/seed*/metrics.csv``: ``method,
algo, seed, step, task, score``) and sample complexity (Fig. 5, from
``sample_complexity/scores.csv``: ``dataset_size, method, score[, algo, seed, task]``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from npf import layout
from npf.report.figures import style  # style.save by attribute: the layout tests wrap it
from npf.report.figures.bands import plot_curves
from npf.report.figures.style import STEP_LABEL, VALUE_LABELS, fig_legend, grid, legend, ordered, palette
from npf.report.labels import METHOD_LABELS, run_label


def figure5(scores: pd.DataFrame, stem: str | Path, band: str = "std", log_x: bool | None = None) -> Figure:
    """Fig. 5: sample complexity — final normalized score vs dataset size for NPF, MT and MHMT.
    ``scores``: ``dataset_size, method, score[, algo, seed, task]`` (tasks averaged per seed)."""
    d = scores.copy()
    d["label"] = (
        [run_label(m, a) for m, a in zip(d["method"], d["algo"])]
        if "algo" in d.columns
        else [METHOD_LABELS.get(m, m) for m in d["method"]]
    )
    order = ordered(
        d["label"],
        [run_label(m, a) for m in ("npf", "mt", "mhmt") for a in ("bcq", "iql")]
        + [METHOD_LABELS[m] for m in ("npf", "mt", "mhmt")],
    )
    fig = Figure(figsize=(5.2, 3.6), layout="constrained")
    ax = fig.subplots()
    plot_curves(ax, d, "dataset_size", "score", "label", order, {}, band, marker="o")
    sizes = d["dataset_size"].astype(float)
    if log_x if log_x is not None else (sizes.min() > 0 and sizes.max() / sizes.min() >= 10):
        ax.set_xscale("log")
    ax.set(title="Sample complexity", xlabel="dataset size (trajectories per task)", ylabel=VALUE_LABELS["score"])
    legend(ax, band)
    style.save(fig, stem)
    return fig


def _scored_by_success(suite: str) -> bool:
    """MT10 and config-declared success suites (``success_metric``); unknown suites: score."""
    from npf.envs import is_success_suite

    try:
        return is_success_suite(suite)
    except (KeyError, ValueError):
        return False


def figure_learning_curves(
    curves: pd.DataFrame,
    stem: str | Path,
    title: str | None = None,
    band: str = "std",
    ylabel: str | None = None,
    ncols: int = 3,
) -> Figure:
    """Figs. 10–12: score vs gradient updates, one subplot per task, one line per run type
    (``NPF-BCQ``, ``NPF-IQL``, ``MT-BCQ``, …). ``curves``: ``method, algo, seed, step, task, score``
    (as from :func:`load_learning_curves`, one suite)."""
    d = curves.copy()
    d["label"] = [run_label(m, a) for m, a in zip(d["method"], d["algo"])]
    pref = [run_label(m, a) for m in ("npf", "mt", "mhmt") for a in ("bcq", "iql")]
    labels = ordered(d["label"], pref)
    colors = palette(labels)
    tasks = list(dict.fromkeys(d["task"]))
    fig, axes = grid(len(tasks), ncols, size=(3.6, 3.3))  # taller rows: stacked y labels stay apart
    suites = set(d["suite"]) if "suite" in d.columns else set()
    success = bool(suites) and all(map(_scored_by_success, suites))
    if ylabel is None:
        ylabel = VALUE_LABELS["success" if success else "score"]
    # success rates: the full 0-100 % axis, and a marker per run (their lines often coincide at 0 or 100)
    markers = dict(zip(labels, "osD^vP*X")) if success else None
    ncols_used = max(1, min(ncols, len(tasks)))
    for k, (ax, t) in enumerate(zip(axes, tasks)):
        plot_curves(ax, d[d["task"] == t], "step", "score", "label", labels, {}, band, colors, markers, markersize=4)
        ax.set(title=t, xlabel=STEP_LABEL, ylabel=ylabel if k % ncols_used == 0 else None)
        if success:
            ax.set_ylim(-5, 105)
    fig_legend(fig, axes[0], band)
    if title:
        fig.suptitle(title)
    style.save(fig, stem)
    return fig


# ------------------------------------------------------------------------------------ loading
def _split_run(name: str) -> tuple[str, str]:
    method, _, algo = name.rpartition("-")
    return method, algo


def load_learning_curves(results_dir: str | Path) -> pd.DataFrame:
    """All ``runs/{suite}/{method}-{algo}/seed{s}/metrics.csv`` as ``suite, method, algo, seed,
    step, task, score`` (one row per evaluation × task); empty when there are none."""
    frames = []
    for p in layout.find(layout.offline_curve, results_dir):
        seed = p.parent.name[len("seed") :]
        if not seed.isdigit():
            continue
        raw = pd.read_csv(p)
        tcols = [c for c in raw.columns if c.startswith("score/")]
        if raw.empty or not tcols or "step" not in raw.columns:
            continue
        long = raw.melt(id_vars=["step"], value_vars=tcols, var_name="task", value_name="score")
        long["task"] = long["task"].str.slice(len("score/"))
        method, algo = _split_run(p.parent.parent.name)
        long = long.assign(suite=p.parent.parent.parent.name, method=method, algo=algo, seed=int(seed))
        frames.append(long)
    cols = ["suite", "method", "algo", "seed", "step", "task", "score"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
