"""Every figure a results directory has the inputs for (matplotlib, Agg; PNG + PDF).

Every ``figureN(data, stem, …)`` (in :mod:`~npf.report.figures.online`,
:mod:`~npf.report.figures.offline` and :mod:`~npf.report.figures.overlap`) takes a DataFrame,
writes ``stem.png`` and ``stem.pdf`` and returns the :class:`matplotlib.figure.Figure`;
:func:`write_figures` finds their inputs under ``results_dir``:

==========================  ===============================================  ======================
figure                      data                                             file
==========================  ===============================================  ======================
3, 13, 14 (DAPD)            ``step, variant, return|success[, seed, task]``  ``online/dapd_curves.csv``
4 (gradient norms)          ``step, task, grad_norm, variant[, seed]``       ``online/grad_norms.csv``
4 (b: performance, opt.)    ``step, task, success|return, variant[, seed]``  ``online/pretrain_curves.csv``
5 (sample complexity)       ``dataset_size, method, score[, algo, seed, task]``  ``sample_complexity/scores.csv``
6, 15 (pathway overlap)     N×N DataFrame (tasks as index and columns)       ``pathways/*/*/seed*/masks.json``
10–12 (learning curves)     ``method, algo, seed, step, task, score``        ``runs/*/*/seed*/metrics.csv``
==========================  ===============================================  ======================

A tidy-CSV input may also be a directory of that name (without ``.csv``) holding several CSVs
with the same columns; they are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from npf import layout
from npf.report.figures.offline import figure5, figure_learning_curves, load_learning_curves
from npf.report.figures.online import M_VARIANTS, SINGLE_SHOT_VARIANTS, figure3, figure4, figure13, figure14
from npf.report.figures.overlap import figure6, figure15, load_overlaps
from npf.report.figures.style import DPI, FORMATS, OUTPUT, SCALE_CAPTION, ordered
from npf.report.labels import SUITE_ORDER, suite_label

CURVE_FIGURES = {
    "cheetah": "fig10_curves_cheetah",
    "cheetah_velocity": "fig11_curves_cheetah_velocity",
    "quadruped": "fig12_curves_quadruped",
}


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
    for suite in ordered(curves["suite"], SUITE_ORDER):
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
    saved = dict(OUTPUT)
    OUTPUT.update(dpi=dpi, formats=tuple(formats))
    token = SCALE_CAPTION.set(scale)
    try:
        for name, make in jobs:
            stem = out_dir / name
            make(stem)
            written += [stem.parent / f"{stem.name}.{e}" for e in formats]
    finally:
        OUTPUT.update(saved)
        SCALE_CAPTION.reset(token)
    return written
