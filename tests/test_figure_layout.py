"""No text of any figure lies outside the figure (titles, colour-bar labels, legends, tick labels),
at a default-config-like input (5 cheetah tasks, 6 offline runs, the DAPD ablation, 2 online MT10
tasks), at a paper-like 10-task input, and at a one-task input with one evaluation point; and such a
one-point learning curve is drawn (as a marker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from npf.report.figures import build, style
from npf.report.figures.offline import figure_learning_curves, load_learning_curves

CHEETAH = ["forward", "backward", "jump", "forward-jump", "backward-jump"]
MT10 = [
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
]
RUNS = [f"{m}-{a}" for m in ("npf", "mt", "mhmt") for a in ("iql", "bcq")]
DAPD = ["single-shot", "dapd-M1", "dapd-M5", "dapd-M10", "dapd-nothreshold", "dense"]


@pytest.fixture(autouse=True)
def _no_files(monkeypatch):
    """The layout is settled before the files are written (style.save): writing them only costs time."""
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: Path(path).write_bytes(b"stub"))


def write_results(
    root: Path, offline: dict[str, list[str]], steps: list[int], online_tasks: list[str], dapd_variants: list[str]
) -> Path:
    """A results directory as the pipeline writes it: eval curves of every offline run, pathway
    overlaps, the DAPD ablation's curves and the online gradient norms."""
    rng = np.random.default_rng(0)
    for suite, tasks in offline.items():
        for run in RUNS:
            d = root / "runs" / suite / run / "seed0"
            d.mkdir(parents=True)
            df = pd.DataFrame({"step": steps})
            for t in tasks:
                df[f"score/{t}"] = rng.uniform(-20, 120, len(steps))
            df.to_csv(d / "metrics.csv", index=False)
        for algo in ("iql", "bcq"):
            d = root / "pathways" / suite / algo / "seed0"
            d.mkdir(parents=True)
            ov = rng.uniform(0, 100, (len(tasks), len(tasks))).tolist()
            (d / "masks.json").write_text(
                json.dumps(
                    {
                        "tasks": tasks,
                        "keep_ratio": 0.05,
                        "roles": {"actor": {"density": 0.05, "union_density": 0.2, "overlap_percent": ov}},
                    }
                )
            )
    online = root / "online"
    online.mkdir()
    pd.DataFrame(
        [
            {"task": "forward", "variant": v, "seed": 0, "step": st, "return": rng.normal(100, 50)}
            for v in dapd_variants
            for st in steps
        ]
    ).to_csv(online / "dapd_curves.csv", index=False)
    pd.DataFrame(
        [
            {"task": t, "variant": v, "seed": 0, "step": st, "grad_norm": rng.uniform(0.1, 10)}
            for t in online_tasks
            for v in ("pretrain", "no-pretrain")
            for st in steps
        ]
    ).to_csv(online / "grad_norms.csv", index=False)
    pd.DataFrame(
        [
            {"task": t, "variant": v, "seed": 0, "step": st, "success": rng.uniform(0, 100)}
            for t in online_tasks
            for v in ("pretrain", "no-pretrain")
            for st in steps
        ]
    ).to_csv(online / "pretrain_curves.csv", index=False)
    return root


CASES = {
    "default": dict(
        offline={"cheetah": CHEETAH},
        steps=[0, 100, 200, 300],
        online_tasks=["reach", "drawer-close"],
        dapd_variants=DAPD,
    ),
    "paper": dict(
        offline={"cheetah": CHEETAH, "mt10": MT10},
        steps=[0, 250_000, 500_000, 1_000_000],
        online_tasks=MT10,
        dapd_variants=DAPD,
    ),
    "one_task": dict(offline={"cheetah": ["forward"]}, steps=[300], online_tasks=["reach"], dapd_variants=["dapd-M10"]),
}


def outside(fig) -> list[str]:
    """Texts whose drawn extent leaves the figure (1 px tolerance for antialiasing); the figure
    must have been drawn (Agg)."""
    renderer = fig.canvas.get_renderer()
    fb = fig.bbox
    bad = []
    for t in style.drawn_texts(fig):
        b = t.get_window_extent(renderer)
        if b.x0 < fb.x0 - 1 or b.y0 < fb.y0 - 1 or b.x1 > fb.x1 + 1 or b.y1 > fb.y1 + 1:
            bad.append(f"{t.get_text()!r} at {b.bounds} (figure {fb.bounds})")
    return bad


def overlapping_titles(fig) -> list[str]:
    """Axes titles, axis labels, colour-bar labels and legends that overlap each other (on a drawn
    figure)."""
    renderer = fig.canvas.get_renderer()
    texts = [ax.title for ax in fig.axes if ax.get_title()]
    texts += [
        lab
        for ax in fig.axes
        if ax.get_label() != "<colorbar>"
        for lab in (ax.xaxis.label, ax.yaxis.label)
        if lab.get_text()
    ]
    texts += list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    texts += [ax.yaxis.label for ax in fig.axes if ax.get_label() == "<colorbar>" and ax.get_ylabel()]
    boxes = [(getattr(t, "get_text", lambda: "legend")(), t.get_window_extent(renderer)) for t in texts]
    return [f"{a!r} / {b!r}" for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1 :] if ba.overlaps(bb)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_text_lies_inside_its_figure(case, tmp_path, monkeypatch):
    made = []
    real_save = style.save
    monkeypatch.setattr(style, "save", lambda fig, stem: (made.append((Path(stem).name, fig)), real_save(fig, stem))[1])
    res = write_results(tmp_path / "results", **CASES[case])
    written = build.write_figures(res, tmp_path / "figs", scale="smoke scale: budgets far too small to learn")
    names = sorted(n for n, _ in made)
    expected = [
        "curves_mt10",
        "fig03_dapd",
        "fig04_grad_norm",
        "fig06_overlap_mt10_iql",
        "fig10_curves_cheetah",
        "fig13_dapd_tasks",
        "fig14_dapd_M_tasks",
        "fig15_overlap",
    ]
    if case != "paper":
        expected = [n for n in expected if "mt10" not in n]
    assert names == expected and len(written) == 2 * len(expected)
    for name, fig in made:
        fig.canvas.draw()
        assert not outside(fig), (name, outside(fig))
        assert not overlapping_titles(fig), (name, overlapping_titles(fig))
        assert " ".join(fig.get_suptitle().split()).endswith("smoke scale: budgets far too small to learn"), name


def test_one_evaluation_point_is_drawn_as_a_marker(tmp_path):
    res = write_results(tmp_path / "results", **CASES["one_task"])
    curves = load_learning_curves(res)
    fig = figure_learning_curves(curves, tmp_path / "fig10")
    (ax,) = fig.axes
    assert len(ax.lines) == len(RUNS)
    for line in ax.lines:
        assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "", " ")


def test_title_says_the_runs_task_count(tmp_path):
    res = write_results(tmp_path / "results", **CASES["one_task"])
    build.write_figures(res, tmp_path / "figs")
    made = {}
    real_save = style.save
    style.save = lambda fig, stem: (made.__setitem__(Path(stem).name, fig), real_save(fig, stem))[1]
    try:
        build.write_figures(res, tmp_path / "figs")
    finally:
        style.save = real_save
    title = made["fig10_curves_cheetah"].get_suptitle().replace("\n", " ")
    assert "HalfCheetah (1 of 5 tasks: forward)" in title and "5-task" not in title
    panel = made["fig15_overlap"].axes[0].get_title().replace("\n", " ")
    assert "1 of 5 tasks" in panel
