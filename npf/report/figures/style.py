"""What every figure shares: axis labels, the legend of a band, the grid of panels, the colours, and
how a figure is fitted and saved (matplotlib without pyplot: ``Figure.savefig`` renders PNG through
the Agg canvas and PDF through matplotlib's PDF backend whatever backend is configured, so no
display is needed and no global figure is kept alive)."""

from __future__ import annotations

import contextvars
import math
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

BANDS = {
    "std": "shaded: mean ± 1 std over seeds",
    "ci95": "shaded: mean ± 95% CI over seeds",
    "iqr": "line: median; shaded: IQR over seeds",
    "minmax": "shaded: min–max over seeds",
}
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


FORMATS = ("png", "pdf")
OUTPUT = {"dpi": DPI, "formats": FORMATS}  # what save writes; write_figures(dpi=, formats=) sets it per call


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


def save(fig: Figure, stem: str | Path) -> list[Path]:
    scale = SCALE_CAPTION.get()
    if scale:
        title = fig.get_suptitle()
        fig.suptitle(f"{title}\n{scale}" if title else scale)
    fit_texts(fig)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in OUTPUT["formats"]:
        p = stem.parent / f"{stem.name}.{ext}"
        fig.savefig(p, dpi=OUTPUT["dpi"])
        out.append(p)
    return out


def grid(n: int, ncols: int, size: tuple[float, float] = (3.6, 2.8)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def ordered(values: Iterable, preferred: Sequence = ()) -> list:
    values = list(dict.fromkeys(values))
    return [v for v in preferred if v in values] + [v for v in values if v not in preferred]


def value_column(df: pd.DataFrame, candidates=("return", "success", "score")) -> str:
    for c in candidates:
        if c in df.columns:
            return c
    raise ValueError(f"no value column among {candidates} in {list(df.columns)}")


def legend(ax, band: str, **kw) -> None:
    ax.legend(title=BANDS[band], fontsize="small", title_fontsize="small", **kw)


def fig_legend(fig: Figure, ax, band: str) -> None:
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


def palette(keys: Sequence) -> dict:
    cmap = matplotlib.colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(keys)}
