"""Tables 2, 3, 4, 6, 7, 8: numbers equal an independent mean/std over seeds, paper columns equal
the published numbers, reported baselines stay in their own labelled rows/columns, and missing
inputs produce no table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from npf import paper_numbers as paper
from npf.report import labels
from npf.report.tables import paper_tables, scores
from npf.report.tables.paper_tables import table2, table3, table4, table4_per_task, table6, table7, write_tables
from npf.report.tables.scores import load_eval_results
from npf.report.tables.weights import load_param_counts, table8

SUITES = {
    "cheetah": ("normalized", ["forward", "backward", "jump"]),
    "mt10": ("success", ["reach", "push", "pick-place"]),
}
METHODS, ALGOS, SEEDS = ("npf", "mt"), ("bcq", "iql"), (0, 1, 2)
LABEL = {("npf", "bcq"): "NPF-BCQ", ("npf", "iql"): "NPF-IQL", ("mt", "bcq"): "MT-BCQ", ("mt", "iql"): "MT-IQL"}


def _write_eval(root: Path, suite, method, algo, seed, metric, scores: dict[str, float]) -> None:
    ev = {"suite": suite, "method": method, "algo": algo, "seed": seed, "metric": metric, "tasks": {}}
    for t, v in scores.items():
        row = {"return_mean": 10.0 * v, "return_std": 1.0, "success": v if metric == "success" else 0.0, "episodes": 10}
        if metric == "normalized":
            row |= {"normalized_mean": v, "normalized_std": 2.0}
        ev["tasks"][t] = row
    vals = list(scores.values())
    ev["success_mean"] = float(np.mean(vals)) if metric == "success" else 0.0
    if metric == "normalized":
        ev["normalized_mean"] = float(np.mean(vals))
    p = root / "eval" / suite / f"{method}-{algo}" / f"seed{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(ev))


@pytest.fixture()
def results(tmp_path):
    """2 suites × 2 methods × 2 algos × 3 seeds; returns (root, truth) with truth[(suite, method,
    algo)] = {seed: {task: score}}."""
    rng = np.random.default_rng(123)
    truth = {}
    for suite, (metric, tasks) in SUITES.items():
        for m in METHODS:
            for a in ALGOS:
                for s in SEEDS:
                    sc = {t: float(np.round(rng.uniform(0, 100), 4)) for t in tasks}
                    truth.setdefault((suite, m, a), {})[s] = sc
                    _write_eval(tmp_path, suite, m, a, s, metric, sc)
    return tmp_path, truth


def parse_md(text: str) -> pd.DataFrame:
    """The first Markdown table in ``text`` as a frame of strings."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines]
    header, body = cells[0], cells[2:]
    return pd.DataFrame(body, columns=header)


def parse_pm(cell: str) -> tuple[float, float]:
    mean, std = cell.replace(",", "").replace("%", "").split("±")
    return float(mean), float(std)


def run_stats(truth_runs: dict[int, dict[str, float]]) -> tuple[float, float]:
    per_seed = [np.mean(list(v.values())) for v in truth_runs.values()]
    return float(np.mean(per_seed)), float(np.std(per_seed))  # ddof = 0


def task_stats(truth_runs, task) -> tuple[float, float]:
    v = [truth_runs[s][task] for s in truth_runs]
    return float(np.mean(v)), float(np.std(v))


def assert_cell(cell: str, expected: tuple[float, float]) -> None:
    got = parse_pm(cell)
    assert got == pytest.approx(tuple(round(x, 2) for x in expected), abs=0.0051), (cell, expected)


# ------------------------------------------------------------------------------------ loading
def test_load_eval_results_tidy(results):
    root, truth = results
    df = load_eval_results(root)
    assert list(df.columns[:6]) == ["suite", "method", "algo", "seed", "task", "score"]
    assert len(df) == 2 * 2 * 2 * 3 * 3
    r = df[(df.suite == "mt10") & (df.method == "mt") & (df.algo == "iql") & (df.seed == 2) & (df.task == "push")]
    assert r["score"].item() == truth[("mt10", "mt", "iql")][2]["push"]


def test_summarize_means_over_tasks_per_seed_first(results):
    root, truth = results
    summ = scores.summarize(load_eval_results(root))
    row = summ[(summ.suite == "cheetah") & (summ.method == "npf") & (summ.algo == "iql")].iloc[0]
    m, s = run_stats(truth[("cheetah", "npf", "iql")])
    assert (row["mean"], row["std"], row["n"]) == (pytest.approx(m), pytest.approx(s), 3)
    s1 = scores.summarize(load_eval_results(root), ddof=1)
    per_seed = [np.mean(list(v.values())) for v in truth[("cheetah", "npf", "iql")].values()]
    assert s1[(s1.suite == "cheetah") & (s1.method == "npf") & (s1.algo == "iql")]["std"].item() == pytest.approx(
        np.std(per_seed, ddof=1)
    )


# ------------------------------------------------------------------------------------ Table 2 / 3
def test_table2_numbers_and_paper_column(results):
    root, truth = results
    t = table2(load_eval_results(root))
    df = parse_md(t.to_markdown())
    # mt10 is a success suite: not in Table 2; the label names the run's tasks, not the paper's 5
    assert list(df["Experiment"]) == ["HalfCheetah (3 of 5 tasks: forward, backward, jump)"]
    for (m, a), lab in LABEL.items():
        assert_cell(df[lab].item(), run_stats(truth[("cheetah", m, a)]))
    assert df["NPF-IQL (paper, full task set)"].item() == "89.67 ± 12.44"
    assert df["NPF-BCQ (paper, full task set)"].item() == "87.20 ± 2.34"
    assert not any("paper" in c and c.startswith("MT") for c in df.columns)  # the paper has no MT in Table 2


def test_one_seed_shows_its_value_without_a_spread(tmp_path):
    """One seed has no std over seeds: the cell is the value alone, never a made-up '± 0.00'."""
    _write_eval(tmp_path, "cheetah", "npf", "iql", 0, "normalized", {"forward": 80.0, "backward": 71.0})
    _write_eval(tmp_path, "cheetah", "npf", "bcq", 0, "normalized", {"forward": 50.0, "backward": 60.0})
    _write_eval(tmp_path, "cheetah", "npf", "bcq", 1, "normalized", {"forward": 70.0, "backward": 80.0})
    df = parse_md(table2(load_eval_results(tmp_path)).to_markdown())
    assert df["NPF-IQL"].item() == "75.50"
    assert df["NPF-BCQ"].item() == "65.00 ± 10.00"  # seeds 55 and 75
    per_task = parse_md(table6(load_eval_results(tmp_path)).to_markdown())
    assert list(per_task["NPF-IQL"]) == ["80.00", "71.00"]


def test_table3_numbers_and_reported_columns(results):
    root, truth = results
    df = parse_md(table3(load_eval_results(root)).to_markdown())
    for (m, a), lab in LABEL.items():
        assert_cell(df[lab].item(), run_stats(truth[("mt10", m, a)]))
    assert list(df["Experiment"]) == ["Meta-World MT10 (3 of 10 tasks: reach, push, pick-place)"]
    assert df["NPF-IQL (paper, full task set)"].item() == "97.30 ± 7.17"
    assert df["NPF-BCQ (paper, full task set)"].item() == "100.00 ± 0.00"
    reported = {"81.50 ± 24.15", "79.10 ± 26.81", "95.90 ± 10.44", "96.50 ± 7.10"}
    for col in df.columns:
        if df[col].item() in reported:
            assert "reported" in col, col
    assert reported <= set(df.iloc[0])
    for col in ("MT-BCQ", "MT-IQL", "NPF-BCQ", "NPF-IQL"):  # ours never carries a paper number
        assert df[col].item() not in reported


# ------------------------------------------------------------------------------------ Table 4
def test_table4_online_with_reported_rows(results):
    root, _ = results
    online = {0: {"reach": 80.0, "push": 40.0}, 1: {"reach": 90.0, "push": 60.0}}
    for s, sc in online.items():
        _write_eval(root, "mt10", "sac-npf", "sac", s, "success", sc)
    df_all = load_eval_results(root)
    assert table3(df_all) is not None and "SAC" not in table3(df_all).to_markdown()
    df = parse_md(table4(df_all).to_markdown())
    ours = df[df["Method"] == "SAC+NPF"].iloc[0]
    assert_cell(ours["Success % (ours)"], run_stats(online))
    assert ours["Success % (paper, full task set)"] == "77.40 ± 13.12"
    rep = df[df["Method"].str.contains("reported")]
    assert len(rep) == 4
    assert set(rep["Success % (ours)"]) == {"—"}
    for name, val in (
        ("SAC+ME", "74.00 ± 4.30"),
        ("PCGrad", "72.00 ± 2.20"),
        ("Soft-Modularization", "73.00 ± 4.30"),
        ("CARE", "84.00 ± 5.10"),
    ):
        row = rep[rep["Method"].str.startswith(name)]
        assert row["Success % (paper, full task set)"].item() == val
    non_rep = df[~df["Method"].str.contains("reported")]
    assert not set(non_rep["Success % (paper, full task set)"]) & {
        "74.00 ± 4.30",
        "72.00 ± 2.20",
        "73.00 ± 4.30",
        "84.00 ± 5.10",
    }


def test_table4_absent_without_online_runs(results):
    root, _ = results
    assert table4(load_eval_results(root)) is None
    assert table4_per_task(load_eval_results(root)) is None


def test_table4_per_task_online_runs_only(results):
    """Per-task success of the online runs (offline MT10 runs in the same results stay out)."""
    root, _ = results
    npf = {0: {"reach": 100.0, "push": 0.0}, 1: {"reach": 0.0, "push": 0.0}}
    mt = {0: {"reach": 100.0, "push": 100.0}, 1: {"reach": 100.0, "push": 0.0}}
    for s in (0, 1):
        _write_eval(root, "mt10", "sac-npf", "sac", s, "success", npf[s])
        _write_eval(root, "mt10", "mt-sac", "sac", s, "success", mt[s])
    df = parse_md(table4_per_task(load_eval_results(root)).to_markdown())
    assert list(df.columns) == ["Suite", "Task", "SAC+NPF", "MT-SAC"]  # no offline run, no paper column
    assert list(df["Task"]) == ["reach", "push", "overall (ours: 2 tasks; paper: all 10)"]
    by_task = df.set_index("Task")
    assert by_task.loc["reach", "SAC+NPF"] == "50.00 ± 50.00" and by_task.loc["reach", "MT-SAC"] == "100.00 ± 0.00"
    assert by_task.loc["push", "MT-SAC"] == "50.00 ± 50.00"
    # overall: per seed the mean over tasks (MT-SAC 100, 50), then mean ± population std
    assert by_task.iloc[2]["MT-SAC"] == "75.00 ± 25.00" and by_task.iloc[2]["SAC+NPF"] == "25.00 ± 25.00"


# ------------------------------------------------------------------------------------ Table 6 / 7
def test_table6_per_task(results):
    root, truth = results
    df = parse_md(table6(load_eval_results(root)).to_markdown())
    assert list(df["Task"]) == ["forward", "backward", "jump"]
    for _, row in df.iterrows():
        for (m, a), lab in LABEL.items():
            assert_cell(row[lab], task_stats(truth[("cheetah", m, a)], row["Task"]))
        pp = paper.TABLE6["cheetah"][row["Task"]]
        assert row["NPF-BCQ (paper)"] == pp["npf-bcq"].fmt() and row["NPF-IQL (paper)"] == pp["npf-iql"].fmt()
    assert df.loc[df.Task == "jump", "NPF-IQL (paper)"].item() == "74.99 ± 20.10"


def test_table7_per_task_overall_and_cds(results):
    root, truth = results
    df = parse_md(table7(load_eval_results(root)).to_markdown())
    overall = "overall (ours: 3 tasks; paper: all 10)"  # the paper's overall is over all ten tasks
    assert list(df["Task"]) == ["reach", "push", "pick-place", overall]
    for _, row in df.iterrows():
        for (m, a), lab in LABEL.items():
            tr = truth[("mt10", m, a)]
            exp = run_stats(tr) if row["Task"] == overall else task_stats(tr, row["Task"])
            assert_cell(row[lab], exp)
    cds = [c for c in df.columns if c.startswith("CDS")]
    assert cds == ["CDS (paper, reported)"]
    assert df.loc[df.Task == overall, cds[0]].item() == "72.00 ± 26.20"
    assert df.loc[df.Task == "reach", "NPF-IQL (paper)"].item() == "93.00 ± 22.14"


# ------------------------------------------------------------------------------------ Table 8
def test_table8_counts_and_paper():
    counts = pd.DataFrame(
        {
            "algo": ["iql"] * 3,
            "seed": [0, 1, 2],
            "n_tasks": [10] * 3,
            "dense": [1000] * 3,
            "keep_ratio": [0.05] * 3,
            "union": [180, 200, 220],
        }
    )
    df = parse_md(table8(counts).to_markdown())
    col = "ours (IQL)"
    key = lambda lab: lab[:3] + ("%" if "%" in lab else "")
    rows = dict(zip(df["Policy weights"].map(key), df[col]))
    assert rows["(A)"] == "10,000" and rows["(B)"] == "500"
    assert rows["(C)"].endswith(" (3 seeds)")
    m, s = parse_pm(rows["(C)"].removesuffix(" (3 seeds)"))  # counts are printed as integers
    assert (m, s) == (200, round(np.std([180, 200, 220])))
    assert_cell(rows["(C)%"], (2.0, np.std([1.8, 2.0, 2.2])))
    paper_col = dict(zip(df["Policy weights"].map(key), df["paper, full task set (IQL)"]))
    assert paper_col["(A)"] == "10,926,080" and paper_col["(B)"] == "546,304"
    assert paper_col["(C)"] == "198,956 ± 7,636" and paper_col["(C)%"] == "1.82 ± 0.07 %"
    assert table8(None) is None and table8(pd.DataFrame()) is None


def test_table8_one_column_per_algo_across_seed_counts():
    """Two suites measured with different seed counts share the algorithm's column; each (C) cell
    names its own seed count."""
    counts = pd.DataFrame(
        {
            "suite": ["cheetah"] * 3 + ["quadruped"] * 2,
            "algo": ["iql"] * 5,
            "seed": [0, 1, 2, 0, 1],
            "n_tasks": [5] * 3 + [4] * 2,
            "dense": [100] * 5,
            "keep_ratio": [0.05] * 5,
            "union": [20, 20, 20, 10, 12],
        }
    )
    df = parse_md(table8(counts).to_markdown())
    assert [c for c in df.columns if c.startswith("ours")] == ["ours (IQL)"]
    union = df[df["Policy weights"].str.startswith("(C) NPF")]["ours (IQL)"].tolist()
    assert union == ["20 ± 0 (3 seeds)", "11 ± 1 (2 seeds)"]


def test_load_param_counts_from_masks_pt(tmp_path):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    n, shapes = 3, [(4, 5), (2, 4)]
    masks = [rng.random((n, *s)) < 0.3 for s in shapes]
    state = {
        "pathways": {
            "format": "npf.pathways/1",
            "num_tasks": n,
            "keep_ratio": 0.3,
            "mask_bias": False,
            "masks": {
                "actor": {
                    f"l{i}.weight": {"shape": [n, *s], "bits": torch.from_numpy(np.packbits(m.reshape(-1)))}
                    for i, (s, m) in enumerate(zip(shapes, masks))
                }
            },
        }
    }
    p = tmp_path / "pathways" / "mt10" / "iql" / "seed0" / "masks.pt"
    p.parent.mkdir(parents=True)
    torch.save(state, p)
    c = load_param_counts(tmp_path)
    flat = np.concatenate([m.reshape(n, -1) for m in masks], axis=1)
    r = c.iloc[0]
    assert (r.suite, r.algo, r.seed, r.n_tasks, r.dense) == ("mt10", "iql", 0, 3, 28)
    assert r.union == flat.any(0).sum() and r.pathway == pytest.approx(flat.sum(1).mean())
    assert load_param_counts(tmp_path / "nothing") is None


# ------------------------------------------------------------------------------------ writing
def test_write_tables_files_and_latex(results, tmp_path_factory):
    root, _ = results
    out = tmp_path_factory.mktemp("tables")
    written = write_tables(root, out)
    names = sorted(p.name for p in written)
    assert names == sorted(f"table{i}.{e}" for i in (2, 3, 6, 7) for e in ("md", "tex", "html"))
    tex = (out / "table2.tex").read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "89.67 $\\pm$ 12.44" in tex


def test_missing_inputs_no_tables(tmp_path):
    assert load_eval_results(tmp_path).empty
    assert write_tables(tmp_path, tmp_path / "out") == []
    assert not (tmp_path / "out").exists()
    empty = load_eval_results(tmp_path)
    assert all(f(empty) is None for f in (table2, table3, table4, table6, table7))


def test_only_gym_suite_gives_no_mt10_tables(tmp_path):
    for s in SEEDS:
        _write_eval(tmp_path, "cheetah", "npf", "bcq", s, "normalized", {"forward": 50.0 + s})
    df = load_eval_results(tmp_path)
    assert table2(df) is not None and table6(df) is not None
    assert table3(df) is None and table7(df) is None and table4(df) is None


def test_paper_numbers_match_paper_md():
    """PAPER.md's targets (Results to regenerate)."""
    pn = paper.paper_number
    assert (pn("table2", "cheetah", "npf-iql").mean, pn("table2", "cheetah", "npf-iql").std) == (89.67, 12.44)
    assert pn("table2", "cheetah_velocity", "npf-iql").fmt() == "99.88 ± 0.40"
    assert pn("table2", "cheetah_velocity", "npf-bcq").fmt() == "100.00 ± 0.04"
    assert pn("table2", "quadruped", "npf-bcq").fmt() == "115.35 ± 0.70"
    assert pn("table2", "quadruped", "npf-iql").fmt() == "116.71 ± 0.57"
    assert pn("table3", "mt10", "npf-iql").fmt() == "97.30 ± 7.17"
    assert pn("table4", "mt10", "sac-npf").fmt() == "77.40 ± 13.12" and not pn("table4", "mt10", "sac-npf").reported
    for k, v in {"sac-me": 74, "pcgrad": 72, "soft-mod": 73, "care": 84}.items():
        assert pn("table4", "mt10", k).mean == v and pn("table4", "mt10", k).reported
    for k in ("mt-bcq", "mt-iql", "mhmt-bcq", "mhmt-iql"):
        assert pn("table3", "mt10", k).reported
    assert [pn("table3", "mt10", k).mean for k in ("mt-bcq", "mt-iql", "mhmt-bcq", "mhmt-iql")] == [
        81.5,
        79.1,
        95.9,
        96.5,
    ]
    assert paper.TABLE8["mt10"]["npf_union"].fmt(0) == "198956 ± 7636"
    assert paper.TABLE8["mt10"]["separate_dense"].mean == 10 * paper.TABLE8["mt10"]["dense_per_task"]
    # every NPF number is ours-to-reproduce, never "reported"
    for tab in (paper.TABLE2, paper.TABLE3, paper.TABLE4):
        for suite in tab.values():
            for k, v in suite.items():
                assert v.reported == (not (k.startswith("npf") or k == "sac-npf")), k


def test_suite_label_counts_the_runs_tasks():
    assert (
        labels.suite_label("cheetah", ["forward", "backward", "jump", "forward-jump", "backward-jump"])
        == "HalfCheetah (5 tasks)"
    )
    assert labels.suite_label("cheetah", ["jump"]) == "HalfCheetah (1 of 5 tasks: jump)"
    assert labels.suite_label("mt10", 4) == "Meta-World MT10 (4 of 10 tasks)"
    assert labels.suite_label("not-registered", ["a", "b"]) == "not-registered (2 tasks)"


def test_scale_caption_on_every_table(results, tmp_path_factory):
    root, _ = results
    built = paper_tables.build_tables(root, scale="smoke scale: budgets far too small to learn")
    assert built and all(t.caption.endswith("[smoke scale: budgets far too small to learn]") for t in built)
    assert all("smoke scale" in t.to_markdown().splitlines()[0] for t in built)
