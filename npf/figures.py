"""The paper's figures from tidy DataFrames (matplotlib, Agg; PNG + PDF).

Every ``figureN(data, stem, …)`` takes a DataFrame (or arrays), writes ``stem.png`` and
``stem.pdf`` and returns the :class:`matplotlib.figure.Figure`. Figures are built without pyplot:
``Figure.savefig`` renders PNG through the Agg canvas and PDF through matplotlib's PDF backend
whatever backend is configured, so no display is needed and no global figure is kept alive.

Curves: a solid line for the centre and a shaded band over seeds. ``band`` picks both:

- ``"std"`` (default): mean ± 1 std over seeds (population std, ddof = 0, as in :mod:`npf.tables`);
- ``"ci95"``: mean ± 1.96 · SEM (normal approximation; SEM with ddof = 1);
- ``"iqr"``: median and the 25–75 % quantiles;
- ``"minmax"``: mean and the min–max range (the paper's "100 % confidence interval").

The legend title states which band is drawn. When a frame has a ``seed`` column, values are first
averaged within each seed (over tasks, for instance) and the band is taken over seeds; without it,
the band is over all rows at that x.

Inputs and the figures they feed (``write_figures`` reads these under ``results_dir``):

==========================  ===========================================  ======================
figure                      data                                         file
==========================  ===========================================  ======================
3, 13, 14 (DAPD)            ``step, variant, return|success[, seed, task]``  ``online/dapd_curves.csv``
4 (gradient norms)          ``step, task, grad_norm, variant[, seed]``   ``online/grad_norms.csv``
4 (b: performance, opt.)    ``step, task, success|return, variant[, seed]``  ``online/pretrain_curves.csv``
5 (sample complexity)       ``dataset_size, method, score[, algo, seed, task]``  ``sample_complexity/scores.csv``
6, 15 (pathway overlap)     N×N DataFrame (tasks as index and columns)   ``pathways/*/*/seed*/masks.json``
10–12 (learning curves)     ``method, algo, seed, step, task, score``    ``runs/*/*/seed*/metrics.csv``
==========================  ===========================================  ======================

A tidy-CSV input may also be a directory of that name (without ``.csv``) holding several CSVs
with the same columns; they are concatenated.
"""

from __future__ import annotations

import contextvars
import json
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from npf import layout
from npf.tables import METHOD_LABELS, SUITE_ORDER, run_label, suite_label

BANDS = {
    "std": "shaded: mean ± 1 std over seeds",
    "ci95": "shaded: mean ± 95% CI over seeds",
    "iqr": "line: median; shaded: IQR over seeds",
    "minmax": "shaded: min–max over seeds",
}
CURVE_FIGURES = {
    "cheetah": "fig10_curves_cheetah",
    "cheetah_velocity": "fig11_curves_cheetah_velocity",
    "quadruped": "fig12_curves_quadruped",
}
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
STEP_LABEL = "gradient updates"
ENV_STEP_LABEL = "env steps per task"  # online figures (3, 4, 13, 14): the loop counts env steps
DPI = 150
VALUE_LABELS = {
    "return": "episodic return",
    "success": "success rate (%)",
    "score": "normalized score (100 = expert)",
    "grad_norm": "‖∂L/∂w‖₂ over the task's pathway",
}


# the config's scale_caption while write_figures builds the figures: a last line of every suptitle
SCALE_CAPTION: contextvars.ContextVar[str] = contextvars.ContextVar("scale_caption", default="")


# ------------------------------------------------------------------------------------ helpers
FORMATS = ("png", "pdf")
_OUTPUT = {"dpi": DPI, "formats": FORMATS}  # what _save writes; write_figures(dpi=, formats=) sets it per call


def _wrap_to(text: Text, width_px: float, renderer, vertical: bool = False) -> bool:
    """Re-wrap ``text`` so that it is at most ``width_px`` long (its height when ``vertical``: a
    y label); True when it changed."""
    box = text.get_window_extent(renderer)
    have = box.height if vertical else box.width
    if not text.get_text() or have <= width_px:
        return False
    lines = text.get_text().split("\n")
    chars = max(8, int(max(map(len, lines)) * width_px / have) - 1)
    text.set_text("\n".join(textwrap.fill(line, chars) for line in lines))
    return True


def drawn_texts(fig: Figure) -> list[Text]:
    """Every non-empty text the figure draws: titles, labels, legends, annotations, and the tick
    labels of ticks inside the axes' view."""
    out = []
    for t in fig.findobj(Text):
        if not (t.get_visible() and t.get_text().strip()):
            continue
        out.append(t)
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo):
                    hidden |= {id(tick.label1), id(tick.label2)}
    return [t for t in out if id(t) not in hidden]


def fit_texts(fig: Figure) -> None:
    """Wrap titles wider than their axes (a long panel title would run over its neighbour or a
    colour-bar label) or than the figure, then grow the figure until no text lies outside it."""
    if not hasattr(fig.canvas, "get_renderer"):  # a Figure made without pyplot has no renderer yet
        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        _wrap_to(ax.title, box.width, renderer)
        if ax.get_label() != "<colorbar>":  # a y label longer than its axes runs into the legend below
            _wrap_to(ax.yaxis.label, box.height, renderer, vertical=True)
    if fig._suptitle is not None:
        _wrap_to(fig._suptitle, 0.95 * fig.bbox.width, renderer)
    for _ in range(4):
        renderer = fig.canvas.get_renderer()  # (a new one after a resize)
        fig.draw_without_rendering()
        fb = fig.bbox
        boxes = [t.get_window_extent(renderer) for t in drawn_texts(fig)]
        dx = max([0.0] + [fb.x0 - b.x0 for b in boxes]) + max([0.0] + [b.x1 - fb.x1 for b in boxes])
        dy = max([0.0] + [fb.y0 - b.y0 for b in boxes]) + max([0.0] + [b.y1 - fb.y1 for b in boxes])
        if dx <= 0.5 and dy <= 0.5:
            return
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + (dx + 8 if dx > 0.5 else 0) / fig.dpi, h + (dy + 8 if dy > 0.5 else 0) / fig.dpi)


def _save(fig: Figure, stem: str | Path) -> list[Path]:
    scale = SCALE_CAPTION.get()
    if scale:
        title = fig.get_suptitle()
        fig.suptitle(f"{title}\n{scale}" if title else scale)
    fit_texts(fig)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in _OUTPUT["formats"]:
        p = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(p, dpi=_OUTPUT["dpi"])
        out.append(p)
    return out


def _center_band(values: np.ndarray, band: str) -> tuple[float, float, float]:
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
        c, lo, hi = _center_band(g[y].to_numpy(), band)
        rows.append(dict(zip([*keys, x], k)) | {"center": c, "lo": lo, "hi": hi, "n": len(g)})
    out = pd.DataFrame(rows, columns=[*keys, x, "center", "lo", "hi", "n"])
    return out.sort_values([*keys, x], kind="stable").reset_index(drop=True)


def _plot_curves(
    ax,
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    order: Sequence,
    labels: Mapping,
    band: str,
    colors: Mapping | None = None,
    **line_kw,
) -> None:
    st = curve_stats(df, x, y, [hue], band)
    for _i, h in enumerate(order):
        s = st[st[hue] == h]
        if s.empty:
            continue
        color = None if colors is None else colors.get(h)
        kw = dict(line_kw, marker=line_kw.get("marker", "o")) if len(s) == 1 else line_kw  # one point: no line to draw
        (line,) = ax.plot(s[x], s["center"], label=labels.get(h, str(h)), color=color, **kw)
        ax.fill_between(s[x], s["lo"], s["hi"], color=line.get_color(), alpha=0.2, linewidth=0)


def _grid(n: int, ncols: int, size: tuple[float, float] = (3.6, 2.8)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _ordered(values: Iterable, preferred: Sequence = ()) -> list:
    values = list(dict.fromkeys(values))
    return [v for v in preferred if v in values] + [v for v in values if v not in preferred]


def _value_column(df: pd.DataFrame, candidates=("return", "success", "score")) -> str:
    for c in candidates:
        if c in df.columns:
            return c
    raise ValueError(f"no value column among {candidates} in {list(df.columns)}")


def _legend(ax, band: str, **kw) -> None:
    ax.legend(title=BANDS[band], fontsize="small", title_fontsize="small", **kw)


def _fig_legend(fig: Figure, ax, band: str) -> None:
    """One legend for a grid of subplots, below them (outside the data)."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncols=min(len(labels), 4),
        title=BANDS[band],
        fontsize="small",
        title_fontsize="small",
    )


def _palette(keys: Sequence) -> dict:
    cmap = matplotlib.colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}


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
    y = _value_column(d)
    variants = list(dict.fromkeys(d["variant"]))
    pa = _ordered([v for v in variants if v not in ("dapd-M1", "dapd-M5")], SINGLE_SHOT_VARIANTS)
    pb = [v for v in M_VARIANTS if v in variants]
    panels = [
        (t, vs)
        for t, vs in (("(a) single-shot vs DAPD", pa), ("(b) DAPD moving average M", pb))
        if vs and not (t.startswith("(b)") and len(vs) < 2)
    ]
    fig, axes = _grid(len(panels), 2, (4.8, 3.4))
    colors = _palette(_ordered(variants, SINGLE_SHOT_VARIANTS + M_VARIANTS))
    name = d["task"].iloc[0] if "task" in d.columns and len(d) else None
    for ax, (title, vs) in zip(axes, panels):
        _plot_curves(ax, d, "step", y, "variant", vs, VARIANT_LABELS, band, colors)
        if dense_final is not None:
            ax.axhline(dense_final, color="k", ls="--", lw=1, label="dense SAC (final)")
        ax.set(title=title + (f" — {name}" if name else ""), xlabel=ENV_STEP_LABEL, ylabel=VALUE_LABELS[y])
        _legend(ax, band)
    _save(fig, stem)
    return fig


def _dapd_tasks(curves: pd.DataFrame, stem, variants: Sequence[str], band: str, title: str) -> Figure:
    d = curves[curves["variant"].isin(variants)]
    if "task" not in d.columns:
        d = d.assign(task="task")
    y = _value_column(d)
    tasks = list(dict.fromkeys(d["task"]))
    fig, axes = _grid(len(tasks), 3)
    present = [v for v in variants if v in set(d["variant"])]
    colors = _palette(present)
    for ax, t in zip(axes, tasks):
        _plot_curves(ax, d[d["task"] == t], "step", y, "variant", present, VARIANT_LABELS, band, colors)
        ax.set(title=t, xlabel=ENV_STEP_LABEL, ylabel=VALUE_LABELS[y])
    _fig_legend(fig, axes[0], band)
    fig.suptitle(title)
    _save(fig, stem)
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
        blocks.append((_value_column(performance), performance))
    ncols = min(5, len(tasks))
    per_block = math.ceil(len(tasks) / ncols) * ncols
    fig, axes = _grid(per_block * len(blocks), ncols)
    variants = _ordered(pd.concat([b["variant"] for _, b in blocks]), ("pretrain", "no-pretrain"))
    colors = _palette(variants)
    for bi, (y, d) in enumerate(blocks):
        for ti, t in enumerate(tasks):
            ax = axes[bi * per_block + ti]
            _plot_curves(ax, d[d["task"] == t], "step", y, "variant", variants, VARIANT_LABELS, band, colors)
            ax.set(title=t, xlabel=ENV_STEP_LABEL, ylabel=VALUE_LABELS[y])
            if y == "grad_norm" and log_y:
                ax.set_yscale("log")
        for ax in axes[bi * per_block + len(tasks) : (bi + 1) * per_block]:
            fig.delaxes(ax)
    _fig_legend(fig, axes[0], band)
    fig.suptitle("Gradient norm per task group" + (" (top) and performance (bottom)" if len(blocks) > 1 else ""))
    _save(fig, stem)
    return fig


# ------------------------------------------------------------------------------------ Fig. 5
def figure5(scores: pd.DataFrame, stem: str | Path, band: str = "std", log_x: bool | None = None) -> Figure:
    """Fig. 5: sample complexity — final normalized score vs dataset size for NPF, MT and MHMT.
    ``scores``: ``dataset_size, method, score[, algo, seed, task]`` (tasks averaged per seed)."""
    d = scores.copy()
    d["label"] = (
        [run_label(m, a) for m, a in zip(d["method"], d["algo"])]
        if "algo" in d.columns
        else [METHOD_LABELS.get(m, m) for m in d["method"]]
    )
    order = _ordered(
        d["label"],
        [run_label(m, a) for m in ("npf", "mt", "mhmt") for a in ("bcq", "iql")]
        + [METHOD_LABELS[m] for m in ("npf", "mt", "mhmt")],
    )
    fig = Figure(figsize=(5.2, 3.6), layout="constrained")
    ax = fig.subplots()
    _plot_curves(ax, d, "dataset_size", "score", "label", order, {}, band, marker="o")
    sizes = d["dataset_size"].astype(float)
    if log_x if log_x is not None else (sizes.min() > 0 and sizes.max() / sizes.min() >= 10):
        ax.set_xscale("log")
    ax.set(title="Sample complexity", xlabel="dataset size (trajectories per task)", ylabel=VALUE_LABELS["score"])
    _legend(ax, band)
    _save(fig, stem)
    return fig


# ------------------------------------------------------------------------------------ Fig. 6 / 15
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
    _save(fig, stem)
    return fig


def figure15(overlaps: Mapping[str, pd.DataFrame], stem: str | Path, ncols: int = 2) -> Figure:
    """Fig. 15: one overlap heat map per panel (``{panel title: N×N frame}``, e.g. one per suite ×
    algorithm)."""
    items = list(overlaps.items())
    nmax = max(df.shape[0] for _, df in items)
    s = max(3.0, 1.6 + 0.6 * nmax)  # room for a panel title over a one-task matrix
    fig, axes = _grid(len(items), ncols, (s + 1.8, s + 0.4))
    for k, (ax, (title, df)) in enumerate(zip(axes, items)):
        draw_overlap(ax, df, f"({chr(ord('a') + k)}) {title}")
    _save(fig, stem)
    return fig


# ------------------------------------------------------------------------------------ Figs. 10–12
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
    labels = _ordered(d["label"], pref)
    colors = _palette(labels)
    tasks = list(dict.fromkeys(d["task"]))
    fig, axes = _grid(len(tasks), ncols, size=(3.6, 3.3))  # taller rows: stacked y labels stay apart
    if ylabel is None:
        suites = set(d["suite"]) if "suite" in d.columns else set()
        ylabel = VALUE_LABELS["success"] if suites and all(map(_scored_by_success, suites)) else VALUE_LABELS["score"]
    ncols_used = max(1, min(ncols, len(tasks)))
    for k, (ax, t) in enumerate(zip(axes, tasks)):
        _plot_curves(ax, d[d["task"] == t], "step", "score", "label", labels, {}, band, colors)
        ax.set(title=t, xlabel=STEP_LABEL, ylabel=ylabel if k % ncols_used == 0 else None)
    _fig_legend(fig, axes[0], band)
    if title:
        fig.suptitle(title)
    _save(fig, stem)
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


def read_tidy(path: str | Path) -> pd.DataFrame | None:
    """``path`` (a CSV), or every ``*.csv`` under ``path`` without its suffix, concatenated;
    None when neither exists or all are empty."""
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(path.with_suffix("").rglob("*.csv"))
        if path.with_suffix("").is_dir()
        else []
    )
    frames = [f for f in (pd.read_csv(p) for p in files) if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else None


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


# ------------------------------------------------------------------------------------ driver
def write_figures(
    results_dir: str | Path,
    out_dir: str | Path,
    band: str = "std",
    dpi: int = DPI,
    formats: Sequence[str] = FORMATS,
    scale: str = "",
) -> list[Path]:
    """Build every figure whose inputs exist under ``results_dir``; returns the written files
    (``formats``, PNG and PDF by default; raster at ``dpi``). Nothing is written — not even
    ``out_dir`` — when there are no inputs. ``scale`` (the config's ``scale_caption``) is added as
    the last line of every figure's title."""
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    jobs: list[tuple[str, callable]] = []

    curves = load_learning_curves(results_dir)
    for suite in _ordered(curves["suite"], SUITE_ORDER):
        name = CURVE_FIGURES.get(suite, f"curves_{suite}")
        title = f"{suite_label(suite, curves.loc[curves['suite'] == suite, 'task'])}: evaluation during training"
        jobs.append(
            (
                name,
                lambda s, c=curves[curves["suite"] == suite], t=title: figure_learning_curves(c, s, title=t, band=band),
            )
        )

    overlaps = load_overlaps(results_dir)
    if ("mt10", "iql") in overlaps:
        ov = overlaps[("mt10", "iql")]
        jobs.append(
            (
                "fig06_overlap_mt10_iql",
                lambda s: figure6(
                    ov, s, f"MT10, IQL policy: shared pathway weights (%), mean over {ov.attrs['n_seeds']} seed(s)"
                ),
            )
        )
    if overlaps:
        keys = sorted(overlaps, key=lambda k: (SUITE_ORDER.index(k[0]) if k[0] in SUITE_ORDER else 99, k))
        panels = {}
        for su, al in keys:
            seeds = _seeds(overlaps[(su, al)].attrs["n_seeds"])
            panels[f"{suite_label(su, overlaps[(su, al)].index)}, {al.upper()} ({seeds})"] = overlaps[(su, al)]
        jobs.append(("fig15_overlap", lambda s: figure15(panels, s)))

    dapd = read_tidy(layout.dapd_curves_table(results_dir))
    if dapd is not None:
        jobs.append(("fig03_dapd", lambda s: figure3(dapd, s, band=band)))
        if "task" in dapd.columns:
            if dapd["variant"].isin(SINGLE_SHOT_VARIANTS).any():
                jobs.append(("fig13_dapd_tasks", lambda s: figure13(dapd, s, band=band)))
            if dapd["variant"].isin(M_VARIANTS).any():
                jobs.append(("fig14_dapd_M_tasks", lambda s: figure14(dapd, s, band=band)))

    grads = read_tidy(layout.grad_norms_table(results_dir))
    if grads is not None:
        perf = read_tidy(layout.pretrain_curves_table(results_dir))
        jobs.append(("fig04_grad_norm", lambda s: figure4(grads, s, perf, band=band)))

    sc = read_tidy(layout.sc_scores(results_dir))
    if sc is not None:
        jobs.append(("fig05_sample_complexity", lambda s: figure5(sc, s, band=band)))

    written: list[Path] = []
    saved = dict(_OUTPUT)
    _OUTPUT.update(dpi=dpi, formats=tuple(formats))
    token = SCALE_CAPTION.set(scale)
    try:
        for name, make in jobs:
            stem = out_dir / name
            make(stem)
            written += [stem.parent / f"{stem.name}.{e}" for e in formats]
    finally:
        _OUTPUT.update(saved)
        SCALE_CAPTION.reset(token)
    return written
