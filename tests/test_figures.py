"""Figures 3, 4, 5, 6, 10–15 from synthetic inputs: files written (PNG + PDF), axes, line series,
legend labels, overlap percentages printed, bands over seeds, and write_figures' input scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from npf.report.figures import bands, build, offline, online, overlap, style

SEEDS = (0, 1, 2)
STEPS = (0, 5000, 10000, 15000)


@pytest.fixture(autouse=True)
def _low_dpi(monkeypatch):
    monkeypatch.setattr(style, "DPI", 40)  # the tests inspect Figure objects; pixels only cost time


def _files_ok(stem: Path) -> None:
    png, pdf = stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def _legend_labels(obj) -> list[str]:
    """Labels of an Axes' legend, or of a Figure's (grid figures put one legend below the grid)."""
    leg = obj.legends[0] if hasattr(obj, "legends") and obj.legends else obj.get_legend()
    assert leg is not None
    return [t.get_text() for t in leg.get_texts()]


def _plot_axes(fig):
    """Axes that hold data (not colorbars)."""
    return [a for a in fig.axes if a.lines or a.images]


@pytest.fixture()
def dapd_curves():
    rng = np.random.default_rng(0)
    rows = []
    for task in ("forward", "backward"):
        for v in ("single-shot", "dapd-M1", "dapd-M5", "dapd-M10", "dapd-nothreshold"):
            for s in SEEDS:
                for st in STEPS:
                    rows.append({"task": task, "variant": v, "seed": s, "step": st, "return": st / 10 + rng.normal()})
    return pd.DataFrame(rows)


def test_figure3_panels_lines_legends(tmp_path, dapd_curves):
    fig = online.figure3(dapd_curves, tmp_path / "fig3", dense_final=1500.0)
    _files_ok(tmp_path / "fig3")
    a, b = fig.axes
    assert _legend_labels(a) == ["Single-shot", "DAPD (M=10)", "DAPD, no threshold stop", "dense SAC (final)"]
    assert _legend_labels(b) == ["DAPD (M=1)", "DAPD (M=5)", "DAPD (M=10)", "dense SAC (final)"]
    assert len(a.lines) == 4 and len(b.lines) == 4
    assert "forward" in a.get_title()
    assert a.get_xlabel() == "env steps per task" and a.get_ylabel() == "episodic return"
    assert "std" in a.get_legend().get_title().get_text()
    # the plotted centre is the mean over seeds of task "forward"
    sel = dapd_curves[(dapd_curves.task == "forward") & (dapd_curves.variant == "single-shot")]
    np.testing.assert_allclose(a.lines[0].get_ydata(), sel.groupby("step")["return"].mean().to_numpy())
    assert len(a.collections) == 3  # one band per curve


def test_figure3_single_panel_without_M_sweep(tmp_path, dapd_curves):
    d = dapd_curves[dapd_curves.variant.isin(["single-shot", "dapd-M10"])].drop(columns="task")
    d = d.drop_duplicates(["variant", "seed", "step"])
    fig = online.figure3(d, tmp_path / "fig3")
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 2


def test_figures13_14_one_subplot_per_task(tmp_path, dapd_curves):
    f13 = online.figure13(dapd_curves, tmp_path / "fig13")
    f14 = online.figure14(dapd_curves, tmp_path / "fig14")
    for stem, fig, labels in (
        (tmp_path / "fig13", f13, ["Single-shot", "DAPD (M=10)", "DAPD, no threshold stop"]),
        (tmp_path / "fig14", f14, ["DAPD (M=1)", "DAPD (M=5)", "DAPD (M=10)"]),
    ):
        _files_ok(stem)
        assert [a.get_title() for a in fig.axes] == ["forward", "backward"]
        assert all(len(a.lines) == 3 for a in fig.axes)
        assert _legend_labels(fig) == labels


@pytest.fixture()
def grad_norms():
    rows = []
    for t in ("reach", "push"):
        for v in ("pretrain", "no-pretrain"):
            for s in SEEDS:
                for st in STEPS:
                    rows.append(
                        {"task": t, "variant": v, "seed": s, "step": st, "grad_norm": 1.0 + st * (v == "pretrain")}
                    )
    return pd.DataFrame(rows)


def test_figure4_grad_norm_per_task(tmp_path, grad_norms):
    fig = online.figure4(grad_norms, tmp_path / "fig4")
    _files_ok(tmp_path / "fig4")
    assert [a.get_title() for a in fig.axes] == ["reach", "push"]
    assert all(len(a.lines) == 2 and a.get_yscale() == "log" for a in fig.axes)
    assert _legend_labels(fig) == ["pathways pre-configured separately", "pathways configured jointly"]
    assert "std" in fig.legends[0].get_title().get_text()
    assert "‖∂L/∂w‖" in fig.axes[0].get_ylabel()
    perf = grad_norms.rename(columns={"grad_norm": "success"})
    fig2 = online.figure4(grad_norms, tmp_path / "fig4b", performance=perf)
    assert len(fig2.axes) == 4 and fig2.axes[2].get_ylabel() == "success rate (%)"
    assert [a.get_yscale() for a in fig2.axes] == ["log", "log", "linear", "linear"]


def test_figure5_sample_complexity(tmp_path):
    rows = [
        {"dataset_size": n, "method": m, "algo": "bcq", "seed": s, "score": 50 + s + (m == "npf") * 20}
        for n in (1_000, 10_000, 100_000)
        for m in ("mt", "npf", "mhmt")
        for s in SEEDS
    ]
    fig = offline.figure5(pd.DataFrame(rows), tmp_path / "fig5")
    _files_ok(tmp_path / "fig5")
    (ax,) = fig.axes
    assert _legend_labels(ax) == ["NPF-BCQ", "MT-BCQ", "MHMT-BCQ"]
    assert len(ax.lines) == 3 and ax.get_xscale() == "log"
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [71, 71, 71])
    assert "dataset size" in ax.get_xlabel()


def _overlap(tasks, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.uniform(0, 100, (len(tasks), len(tasks))).round(3)
    return pd.DataFrame(m, index=tasks, columns=tasks)


def test_figure6_heatmap_prints_percentages(tmp_path):
    tasks = ["reach", "push", "pick-place"]
    ov = _overlap(tasks)
    fig = overlap.figure6(ov, tmp_path / "fig6")
    _files_ok(tmp_path / "fig6")
    (ax,) = _plot_axes(fig)
    texts = {t.get_text() for t in ax.texts}
    assert {f"{v:.1f}" for v in ov.to_numpy().ravel()} == texts
    assert [t.get_text() for t in ax.get_xticklabels()] == tasks
    assert [t.get_text() for t in ax.get_yticklabels()] == tasks
    assert len(fig.axes) == 2  # heat map + colorbar


def test_figure15_panels(tmp_path):
    panels = {
        "HalfCheetah 5-task, BCQ": _overlap(["forward", "backward", "jump"]),
        "MT10, IQL": _overlap(["reach", "push"], 1),
    }
    fig = overlap.figure15(panels, tmp_path / "fig15")
    _files_ok(tmp_path / "fig15")
    axes = _plot_axes(fig)
    assert [a.get_title() for a in axes] == ["(a) HalfCheetah 5-task, BCQ", "(b) MT10, IQL"]
    assert [len(a.texts) for a in axes] == [9, 4]


# ------------------------------------------------------------------------------------ results layout
TASKS = {"cheetah": ["forward", "backward", "jump"], "mt10": ["reach", "push"]}


def _write_results(root: Path, suites=("cheetah", "mt10")) -> None:
    rng = np.random.default_rng(1)
    for suite in suites:
        ts = TASKS[suite]
        for run in ("npf-bcq", "npf-iql", "mt-bcq", "mt-iql"):
            for s in SEEDS:
                d = root / "runs" / suite / run / f"seed{s}"
                d.mkdir(parents=True)
                df = pd.DataFrame({"step": list(STEPS)})
                for t in ts:
                    df[f"score/{t}"] = rng.uniform(0, 100, len(STEPS))
                df.insert(1, "score_mean", df[[f"score/{t}" for t in ts]].mean(axis=1))
                df.to_csv(d / "metrics.csv", index=False)
        for algo in ("bcq", "iql"):
            for s in SEEDS:
                d = root / "pathways" / suite / algo / f"seed{s}"
                d.mkdir(parents=True)
                ov = _overlap(ts, s).to_numpy().tolist()
                (d / "masks.json").write_text(
                    json.dumps(
                        {
                            "tasks": ts,
                            "keep_ratio": 0.05,
                            "roles": {"actor": {"density": 0.05, "union_density": 0.1, "overlap_percent": ov}},
                        }
                    )
                )


def test_learning_curves_from_metrics_csv(tmp_path):
    _write_results(tmp_path)
    curves = offline.load_learning_curves(tmp_path)
    assert set(curves.columns) == {"suite", "method", "algo", "seed", "step", "task", "score"}
    c = curves[curves.suite == "cheetah"]
    fig = offline.figure_learning_curves(c, tmp_path / "fig10", title="HalfCheetah")
    _files_ok(tmp_path / "fig10")
    assert [a.get_title() for a in fig.axes] == ["forward", "backward", "jump"]
    assert all(len(a.lines) == 4 for a in fig.axes)
    assert _legend_labels(fig) == ["NPF-BCQ", "NPF-IQL", "MT-BCQ", "MT-IQL"]
    assert " ".join(fig.axes[0].get_ylabel().split()) == "normalized score (100 = expert)"  # (wrapped to its axes)
    # centre and band: mean ± std (ddof 0) over seeds
    raw = [pd.read_csv(tmp_path / "runs/cheetah/npf-iql" / f"seed{s}" / "metrics.csv")["score/jump"] for s in SEEDS]
    raw = np.stack(raw)
    line = fig.axes[2].lines[1]
    np.testing.assert_allclose(line.get_ydata(), raw.mean(0))
    st = bands.curve_stats(c[(c.method == "npf") & (c.algo == "iql") & (c.task == "jump")], "step", "score")
    np.testing.assert_allclose(st["hi"] - st["center"], raw.std(0))
    mt = offline.figure_learning_curves(curves[curves.suite == "mt10"], tmp_path / "mt")
    assert " ".join(mt.axes[0].get_ylabel().split()) == "success rate (%)"
    # success rates: the whole 0-100 % axis even where a task stays at 100, and one marker per run
    assert all(ax.get_ylim() == (-5, 105) for ax in mt.axes if ax.lines)
    assert len({line.get_marker() for line in mt.axes[0].lines}) == len(mt.axes[0].lines) == 4
    assert fig.axes[0].get_ylim() != (-5, 105) and {ln.get_marker() for ln in fig.axes[0].lines} == {"None"}


def test_load_overlaps_mean_over_seeds(tmp_path):
    _write_results(tmp_path)
    ov = overlap.load_overlaps(tmp_path)
    assert set(ov) == {("cheetah", "bcq"), ("cheetah", "iql"), ("mt10", "bcq"), ("mt10", "iql")}
    exp = np.mean([_overlap(["reach", "push"], s).to_numpy() for s in SEEDS], axis=0)
    np.testing.assert_allclose(ov[("mt10", "iql")].to_numpy(), exp)
    assert list(ov[("mt10", "iql")].index) == ["reach", "push"]


def test_write_figures_scans_inputs(tmp_path, dapd_curves, grad_norms):
    res, out = tmp_path / "results", tmp_path / "figs"
    _write_results(res, suites=("mt10",))
    (res / "online").mkdir()
    dapd_curves.to_csv(res / "online" / "dapd_curves.csv", index=False)
    grad_norms.to_csv(res / "online" / "grad_norms.csv", index=False)
    written = build.write_figures(res, out)
    stems = sorted({p.stem for p in written})
    assert stems == sorted(
        [
            "curves_mt10",
            "fig06_overlap_mt10_iql",
            "fig15_overlap",
            "fig03_dapd",
            "fig13_dapd_tasks",
            "fig14_dapd_M_tasks",
            "fig04_grad_norm",
        ]
    )
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert {p.suffix for p in written} == {".png", ".pdf"}


def test_write_figures_empty_dir_writes_nothing(tmp_path):
    assert build.write_figures(tmp_path, tmp_path / "figs") == []
    assert not (tmp_path / "figs").exists()


def test_bands():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    assert bands.center_band(v, "std") == pytest.approx((2.5, 2.5 - v.std(), 2.5 + v.std()))
    h = 1.96 * v.std(ddof=1) / 2
    assert bands.center_band(v, "ci95") == pytest.approx((2.5, 2.5 - h, 2.5 + h))
    assert bands.center_band(v, "iqr") == pytest.approx((2.5, 1.75, 3.25))
    assert bands.center_band(v, "minmax") == pytest.approx((2.5, 1.0, 4.0))
    with pytest.raises(ValueError):
        bands.center_band(v, "sem")


def test_config_declared_success_suite_is_labelled_by_success(tmp_path):
    """A custom suite with ``success_metric: true`` is plotted as success %, like MT10."""
    from npf.config import register_suites

    register_suites(
        {
            "custom_suites": {
                "pendsuccess": {
                    "success_metric": True,
                    "tasks": {"earth": {"env_id": "Pendulum-v1", "kwargs": {"g": 9.81}}},
                }
            }
        }
    )
    curves = pd.DataFrame(
        {
            "suite": "pendsuccess",
            "method": "npf",
            "algo": "iql",
            "seed": 0,
            "step": [0, 10],
            "task": "earth",
            "score": [0.0, 50.0],
        }
    )
    fig = offline.figure_learning_curves(curves, tmp_path / "custom")
    assert " ".join(fig.axes[0].get_ylabel().split()) == "success rate (%)"
    fig = offline.figure_learning_curves(curves.assign(suite="not-registered"), tmp_path / "unknown")
    assert " ".join(fig.axes[0].get_ylabel().split()) == "normalized score (100 = expert)"  # (wrapped to its axes)
