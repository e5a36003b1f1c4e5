"""``npf publish``: the results page from a hand-made results directory whose numbers are known.

Fixture: suite cheetah, tasks forward/backward, 2 seeds × 2 methods (NPF-IQL, MT-IQL):

    NPF-IQL  seed 0: 90, 100 (mean 95)   seed 1: 80, 94 (87)   → 91.0 ± 4.0; IQM of 80 90 94 100 = 92.0
    MT-IQL   seed 0: 100, 110 (105)      seed 1: 102, 104 (103) → 104.0 ± 1.0; IQM of 100 102 104 110 = 103.0

Training attempts (npf.provenance records) per run: seed 0 1800 s preempted + 1200 s finished, seed 1
600 s finished, and a failed 5000 s attempt that does not count → 3600 s = "1 h 00 min (2 seeds)".
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from npf import stats
from npf.cli import main
from npf.config import validate
from npf.paper_numbers import PaperNumber
from npf.provenance import load_attempts, load_config, record_attempt
from npf.report.publish.durations import fmt_hms, parse_duration
from npf.report.publish.page import budgets_region
from npf.report.publish.page_figures import MAX_PNG_BYTES
from npf.report.publish.regions import fill_regions
from npf.report.publish.sources import Source
from npf.report.publish.verdicts import NOT_MEASURED, row_verdict, run_verdict

REPO = Path(__file__).resolve().parent.parent
SCORES = {
    ("npf", "iql"): {0: {"forward": 90.0, "backward": 100.0}, 1: {"forward": 80.0, "backward": 94.0}},
    ("mt", "iql"): {0: {"forward": 100.0, "backward": 110.0}, 1: {"forward": 102.0, "backward": 104.0}},
}
ATTEMPTS = {0: [(1800, "preempted"), (1200, "finished")], 1: [(5000, "failed"), (600, "finished")]}
README = "# project\n\nintro by hand\n\n<!-- npf:begin table2-readme -->\n<!-- npf:end table2-readme -->\n\nmore\n"


def make_results(root: Path, scores=SCORES, suite: str = "cheetah") -> Path:
    cfg = validate(
        {
            "results_dir": str(root),
            "suites": [suite],
            "offline": {"updates": 1234, "batch_size": 64},
            "datasets": {"episodes": 7},
            "experts": {"total_steps": 4321},
        }
    )
    for (m, a), seeds in scores.items():
        for s, tasks in seeds.items():
            p = root / f"eval/{suite}/{m}-{a}/seed{s}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(
                json.dumps(
                    {
                        "suite": suite,
                        "method": m,
                        "algo": a,
                        "seed": s,
                        "metric": "normalized",
                        "tasks": {t: {"normalized_mean": v, "success": 0.0} for t, v in tasks.items()},
                    }
                )
            )
            log = root / f"logs/train_offline/{suite}/{m}-{a}/seed{s}.log"
            for wall, status in ATTEMPTS[s]:
                record_attempt(
                    log,
                    "train_offline",
                    {"suite": suite, "method": m, "algo": a, "seed": s},
                    cfg,
                    time.time() - wall,
                    status,
                )
            curve = root / f"runs/{suite}/{m}-{a}/seed{s}/metrics.csv"
            curve.parent.mkdir(parents=True, exist_ok=True)
            curve.write_text("step,score_mean,score/forward,score/backward\n100,10,5,15\n200,50,40,60\n")
    return root


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A scratch 'repository': results/tiny, README.md; the page goes to docs/results.md."""
    monkeypatch.chdir(tmp_path)
    make_results(Path("results/tiny"))
    Path("README.md").write_text(README)
    return tmp_path


def build(*extra: str, dirs=("results/tiny",)) -> int:
    return main(["publish", "--out", "docs/results.md", "--readme", "README.md", *extra, *dirs])


def row(page: str, run: str, after: str = "**HalfCheetah 5-task**") -> list[str]:
    section = page[page.index(after) :]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {run} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_cells_are_the_hand_computed_statistics(site):
    assert build() == 0
    page = Path("docs/results.md").read_text()
    npf = row(page, "NPF-IQL")
    assert npf[1] == "91.0 ± 4.0 (2 seeds)"
    assert npf[2].startswith("92.0 [")
    assert npf[3] == "89.67 ± 12.44"  # the paper's number, in its own column
    assert npf[4] == "reproduced"  # |91 − 89.67| ≤ 4 + 12.44
    assert npf[5] == "1,234 updates × batch 64/task; 7 trajectories/task from 4,321-step experts"
    assert npf[6] == "1 h 00 min (2 seeds)"
    mt = row(page, "MT-IQL")
    assert mt[1] == "104.0 ± 1.0 (2 seeds)" and mt[2].startswith("103.0 [")
    assert mt[3] == "—" and mt[4] == "no paper number"
    lo, hi = (float(x) for x in npf[2][npf[2].index("[") + 1 : -1].split(","))
    assert lo <= 92.0 <= hi
    assert "**HalfCheetah 5-task**: reproduced (from NPF-IQL; NPF-BCQ not measured yet)." in page
    assert "1,234" not in row(page, "NPF-BCQ")[5]


def test_missing_results_say_not_measured_yet(site):
    assert build() == 0
    page, readme = Path("docs/results.md").read_text(), Path("README.md").read_text()
    assert row(page, "NPF-BCQ")[1] == NOT_MEASURED
    assert f"**Quadruped 4-task**: {NOT_MEASURED}." in page
    assert row(page, "NPF-IQL", "**Quadruped 4-task**")[1:4] == [NOT_MEASURED, "", "116.71 ± 0.57"]
    assert f"**Meta-World MT10**: {NOT_MEASURED}." in page
    table8 = page[page.index("<!-- npf:begin table8 -->") : page.index("<!-- npf:end table8 -->")]
    assert NOT_MEASURED in table8
    # the README: Table 2's three rows, ours beside the paper's
    lines = [ln for ln in readme.splitlines() if ln.startswith("| ") and "Table 2 row" not in ln]
    assert len(lines) == 3
    assert lines[0].split("|")[4].strip() == "91.0 ± 4.0 (2 seeds)"
    assert lines[1].split("|")[2].strip() == NOT_MEASURED and lines[2].split("|")[4].strip() == NOT_MEASURED
    assert "[results page](docs/results.md)" in readme


def test_rebuild_is_identical_and_keeps_hand_written_text(site):
    assert build("--wall-time", "results/tiny/=2h50m") == 0  # the same folder, spelt differently
    page = Path("docs/results.md")
    png = Path("docs/results/tiny/fig10_curves_cheetah.png")
    first, first_png = page.read_text(), png.read_bytes()
    assert build("--wall-time", "results/tiny=2h50m") == 0
    assert page.read_text() == first and png.read_bytes() == first_png
    # notes by hand outside the regions survive; a region's body is the generator's
    note = "Why NPF-IQL trails here: written by hand.\n"
    edited = first.replace("## Table 3", note + "\n## Table 3").replace("91.0 ± 4.0 (2 seeds)", "99 (typo)")
    page.write_text(edited)
    Path("README.md").write_text(Path("README.md").read_text().replace("more\n", "more, by hand\n"))
    assert build("--wall-time", "results/tiny=2h50m") == 0
    text = page.read_text()
    assert note in text and "99 (typo)" not in text and "91.0 ± 4.0 (2 seeds)" in text
    assert text.replace(note + "\n", "") == first
    readme = Path("README.md").read_text()
    assert readme.startswith("# project\n\nintro by hand\n") and readme.endswith("more, by hand\n")
    assert "npf publish --out docs/results.md --readme README.md --wall-time results/tiny=2h50m results/tiny" in text
    assert "| `results/tiny` | cheetah |" in text and "| 2 h 50 min |" in text


def test_figures_are_committable_pngs_linked_from_the_page(site):
    stale = Path("docs/results/tiny/fig99_gone.png")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    assert build() == 0
    pngs = sorted(Path("docs/results/tiny").glob("*"))
    assert [p.name for p in pngs] == ["fig10_curves_cheetah.png"]  # PNG only; the stale one is gone
    assert 0 < pngs[0].stat().st_size <= MAX_PNG_BYTES
    page = Path("docs/results.md").read_text()
    assert "](results/tiny/fig10_curves_cheetah.png)" in page
    assert f"**Figure 15: pathway overlap per suite**: {NOT_MEASURED}." in page


def test_a_missing_region_is_appended_and_broken_markers_are_refused(site, capsys):
    Path("docs").mkdir()
    Path("docs/results.md").write_text("# my page\n\n<!-- npf:begin table2 -->\nold\n<!-- npf:end table2 -->\nend\n")
    assert build() == 0
    text = Path("docs/results.md").read_text()
    assert text.startswith("# my page\n\n<!-- npf:begin table2 -->\n*Offline")
    assert "\nend\n\n<!-- npf:begin command -->" in text  # the others appended after the hand text
    broken = "x\n<!-- npf:begin table2 -->\nno end\n"
    Path("docs/results.md").write_text(broken)
    assert build() == 1
    assert "region 'table2'" in capsys.readouterr().err
    assert Path("docs/results.md").read_text() == broken


def test_bad_inputs_are_one_line_errors(site, capsys):
    Path("README.md").write_text("# no region\n")
    assert build() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "README.md" in err and "table2-readme" in err
    assert not Path("docs/results.md").exists()
    Path("README.md").write_text(README)
    assert build(dirs=("results/nope",)) == 1
    assert "results/nope: no such results directory" in capsys.readouterr().err
    assert build("--wall-time", "results/tiny=soon") == 1
    assert "'soon'" in capsys.readouterr().err
    assert build("--wall-time", "results/other=1h") == 1
    assert "--wall-time results/other: not one of the results directories" in capsys.readouterr().err
    Path("results/empty").mkdir()
    assert build(dirs=("results/empty",)) == 1
    assert "results/empty: not a results directory" in capsys.readouterr().err
    make_results(Path("other/tiny2"))
    assert build(dirs=("results/tiny", "other/tiny2")) == 1
    assert "evaluated in both results/tiny and other/tiny2" in capsys.readouterr().err


def test_no_results_at_all_gives_the_skeleton(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("README.md").write_text(README)
    assert build(dirs=()) == 0
    page = Path("docs/results.md").read_text()
    tables = page[page.index("<!-- npf:begin table2 -->") : page.index("<!-- npf:end table4 -->")]
    runs = [
        ln
        for ln in tables.splitlines()
        if ln.startswith("| ") and not ln.startswith(("| Run", "| Reported")) and "(Sodhani" not in ln
    ]
    assert len(runs) == 3 * 6 + 6 + 4  # Table 2: 3 suites × 6 runs; Table 3: 6; Table 4: 4
    assert all(ln.split("|")[2].strip() == NOT_MEASURED for ln in runs)
    assert not Path("docs/results").exists()


def test_verdict_rule():
    def sm(mean, std, seeds=3):
        return stats.Summary(mean, std, seeds, 5, mean, mean, mean)

    p_bcq, p_iql = PaperNumber(87.20, 2.34), PaperNumber(89.67, 12.44)
    assert run_verdict(sm(84.0, 1.0), p_bcq) == "reproduced"  # 3.2 ≤ 1 + 2.34
    assert run_verdict(sm(83.0, 1.0), p_bcq) == "not reproduced (Δ -4.2)"
    assert run_verdict(sm(83.0, 1.0, seeds=1), p_bcq) == "not reproduced (Δ -4.2)"
    assert run_verdict(None, p_bcq) == NOT_MEASURED
    # ordering: paper BCQ < IQL; ours 50 < 60 → same ordering, 60 > 50 → not reproduced
    assert row_verdict({"NPF-BCQ": (sm(50, 1), p_bcq), "NPF-IQL": (sm(60, 1), p_iql)}) == "same ordering as the paper"
    assert row_verdict({"NPF-BCQ": (sm(60, 1), p_bcq), "NPF-IQL": (sm(50, 1), p_iql)}) == "not reproduced"
    assert row_verdict({"NPF-BCQ": (sm(50, 1), p_bcq)}) == "not reproduced"
    # the right order but inside the seeds' spread (78.0 - 75.6 = 2.4 <= 3.1 + 0.4): no evidence of an ordering
    assert row_verdict({"NPF-BCQ": (sm(75.6, 3.1), p_bcq), "NPF-IQL": (sm(78.0, 0.4), p_iql)}) == "not reproduced"
    assert row_verdict({"NPF-BCQ": (sm(75.6, 1.0), p_bcq), "NPF-IQL": (sm(78.0, 0.4), p_iql)}) == (
        "same ordering as the paper"
    )
    assert row_verdict({"NPF-BCQ": (sm(87, 1), p_bcq), "NPF-IQL": (sm(80, 1), p_iql)}) == "reproduced"
    assert row_verdict({}) == NOT_MEASURED


@pytest.mark.parametrize(
    "text, seconds", [("2h50m", 10200), ("170m", 10200), ("95s", 95), ("1h", 3600), ("2:50:00", 10200), ("1h05m", 3900)]
)
def test_durations_round_trip(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(fmt_hms(seconds)) == seconds


def test_fill_regions_only_touches_regions():
    text = "a\n<!-- npf:begin x -->\nold\n<!-- npf:end x -->\nb\n"
    assert fill_regions(text, {"x": "new"}) == "a\n<!-- npf:begin x -->\nnew\n<!-- npf:end x -->\nb\n"
    assert fill_regions(text, {}) == text


def test_stage_wrapper_records_each_attempt_and_the_config(tmp_path):
    sys.path.insert(0, str(REPO / "workflow" / "scripts"))
    from _stage import stage

    cfg = validate({"results_dir": str(tmp_path / "res"), "suites": ["cheetah"]})
    log = tmp_path / "res/logs/train_offline/cheetah/npf-iql/seed0.log"
    job = SimpleNamespace(
        log=[str(log)],
        rule="train_offline",
        config=cfg,
        wildcards={"suite": "cheetah", "method": "npf", "algo": "iql", "seed": "0"},
    )
    saved = sys.stdout, sys.stderr
    try:
        with pytest.raises(SystemExit) as e, stage(job):
            raise ValueError("bad dataset")
        assert e.value.code == 1
        with stage(job):
            time.sleep(0.05)
    finally:
        sys.stdout, sys.stderr = saved
    a = load_attempts(tmp_path / "res")
    assert list(a["status"]) == ["failed", "finished"]
    assert list(a["method"]) == ["npf", "npf"] and list(a["seed"]) == ["0", "0"]
    assert a["wall_s"].iloc[1] >= 0.05
    assert load_config(tmp_path / "res", a["config_hash"].iloc[0]) == json.loads(json.dumps(cfg))
    # a bare harness (no rule, no config) records nothing
    bare = tmp_path / "bare.log"
    try:
        with stage(SimpleNamespace(log=[str(bare)])):
            pass
    finally:
        sys.stdout, sys.stderr = saved
    assert not bare.with_name("bare.attempts.jsonl").exists()


def test_mt10_offline_and_online_rows(tmp_path, monkeypatch):
    """Success-rate suites: Table 3 (offline, the paper's baseline runs marked) and Table 4 (online,
    budget from the online section, cited baselines in their own table)."""
    monkeypatch.chdir(tmp_path)
    root = Path("results/mt")
    cfg = validate(
        {
            "results_dir": str(root),
            "suites": ["mt10"],
            "online": {"methods": ["sac-npf"], "total_steps": 5000, "batch_size": 32, "pretrain_steps": 700},
        }
    )
    runs = {("npf", "bcq"): [[100.0, 0.0], [100.0, 100.0]], ("sac-npf", "sac"): [[0.0, 100.0], [0.0, 0.0]]}
    for (m, a), per_seed in runs.items():
        for s, tasks in enumerate(per_seed):
            p = root / f"eval/mt10/{m}-{a}/seed{s}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(
                json.dumps(
                    {
                        "suite": "mt10",
                        "method": m,
                        "algo": a,
                        "seed": s,
                        "metric": "success",
                        "tasks": {t: {"success": v} for t, v in zip(("reach", "push"), tasks)},
                    }
                )
            )
    record_attempt(
        root / "logs/train_online/mt10/sac-npf/seed0.log",
        "train_online_npf",
        {"suite": "mt10", "method": "sac-npf", "seed": 0},
        cfg,
        time.time() - 125,
        "finished",
    )
    assert main(["publish", "--out", "docs/results.md", str(root)]) == 0
    page = Path("docs/results.md").read_text()
    t3 = row(page, "NPF-BCQ", "## Table 3")
    assert t3[1] == "75.0 ± 25.0 (2 seeds)" and t3[3] == "100.00 ± 0.00"
    assert t3[4] == "reproduced"  # |75 − 100| ≤ 25 + 0
    assert t3[6] == "not recorded"
    assert row(page, "MT-BCQ", "## Table 3")[3] == "81.50 ± 24.15 (baseline run)"
    t4 = row(page, "SAC+NPF", "## Table 4")
    assert t4[1] == "25.0 ± 25.0 (2 seeds)" and t4[3] == "77.40 ± 13.12"
    assert t4[4] == "not reproduced (Δ -52.4)"
    assert t4[5] == "5,000 env steps/task, batch 32/task, pretraining 700"
    assert t4[6] == "2 min (1 of 2 seeds recorded)"
    assert "| CARE (Sodhani et al. 2021) | 84.0 ± 5.1 | 486,000 |" in page
    assert row(page, "PCGrad", "## Table 4")[1:4] == [NOT_MEASURED, "", "—"]  # ours never gets the cited 72


def test_a_weak_expert_keeps_its_suites_numbers_off_the_page(site):
    """A dataset whose expert is not clearly better than random never feeds a published number."""
    man = Path("results/tiny/datasets/cheetah")
    man.mkdir(parents=True)
    (man / "forward.json").write_text(json.dumps({"scores": {"random": 100.0, "random_std": 20.0, "expert": 900.0}}))
    (man / "backward.json").write_text(json.dumps({"scores": {"random": 100.0, "random_std": 20.0, "expert": 110.0}}))
    assert build() == 0
    page, readme = Path("docs/results.md").read_text(), Path("README.md").read_text()
    npf = row(page, "NPF-IQL")
    assert npf[1].startswith("withheld: the expert of backward is not clearly better than random")
    assert npf[4] == "withheld" and npf[2] == ""
    assert "91.0" not in page and "91.0" not in readme and "104.0" not in page
    assert "**HalfCheetah 5-task**: withheld: the expert of backward" in page
    per_task = page[page.index("<!-- npf:begin per-task -->") : page.index("<!-- npf:end per-task -->")]
    assert NOT_MEASURED in per_task
    assert "Figure 10: learning curves, HalfCheetah 5-task**: withheld (weak expert, see the table)." in page
    assert not Path("docs/results/tiny/fig10_curves_cheetah.png").exists()
    (man / "backward.json").write_text("{}")
    assert build() == 1


def test_results_without_records_take_budget_and_times_from_mlflow(tmp_path, monkeypatch):
    """Runs made before the attempt records: the config from the MLflow run's params, the wall
    time from its start and end (an upper bound, marked ≤, when the run was resumed)."""
    from npf.tracking import stage_tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    root = Path("results/old")
    make_results(root)
    for p in root.glob("logs/**/*.attempts.jsonl"):
        p.unlink()
    cfg = validate(
        {
            "results_dir": str(root),
            "suites": ["cheetah"],
            "offline": {"updates": 999, "batch_size": 16, "per_algo": {"iql": {"updates": 555}}},
            "datasets": {"episodes": 3},
        }
    )
    for m in ("npf", "mt"):
        for s in (0, 1):
            wc = {"suite": "cheetah", "method": m, "algo": "iql", "seed": s}
            id_file = root / f"runs/cheetah/{m}-iql/seed{s}/mlflow_run_id.txt"
            stage_tracker(cfg, "train_offline", "cheetah", f"train/{m}/{s}", id_file, wc, fresh=True).close("FINISHED")
            if m == "npf" and s == 1:  # resumed once
                stage_tracker(cfg, "train_offline", "cheetah", f"train/{m}/{s}", id_file, wc).close("FINISHED")
    assert main(["publish", "--out", "docs/results.md", str(root)]) == 0
    page = Path("docs/results.md").read_text()
    npf, mt = row(page, "NPF-IQL"), row(page, "MT-IQL")
    assert npf[5] == mt[5] == "555 updates × batch 16/task; 3 trajectories/task from 20,000-step experts"
    assert npf[6].startswith("≤ ") and npf[6].endswith("(2 seeds; MLflow run start to end)")
    assert not mt[6].startswith("≤") and mt[6].endswith("(2 seeds; MLflow run start to end)")
    assert "| 4 (MLflow runs) |" in page


def test_figures_are_downscaled_to_the_size_limit(site, monkeypatch):
    from npf.report.publish import page_figures

    assert build() == 0
    full = Path("docs/results/tiny/fig10_curves_cheetah.png").stat().st_size
    monkeypatch.setattr(page_figures, "MAX_PNG_BYTES", int(full * 0.7))
    assert build() == 0
    assert Path("docs/results/tiny/fig10_curves_cheetah.png").stat().st_size <= full * 0.7
    monkeypatch.setattr(page_figures, "MAX_PNG_BYTES", 100)
    assert build() == 1


def test_the_budget_of_a_run_on_scripted_expert_data_names_the_scripted_experts_and_their_noise():
    from npf.cli import _merged_config
    from npf.report.publish.sources import _budget_of

    cfg = _merged_config([str(Path(__file__).parents[1] / "config" / "mt10_offline_small.yaml")])
    assert _budget_of(cfg, "mt10", "npf", "iql") == (
        "10,000 updates × batch 256/task; 100 trajectories/task from scripted experts (action noise σ 0.3)"
    )
    cfg["experts"]["source"] = "sac"
    assert _budget_of(cfg, "mt10", "npf", "iql").endswith(f"from {cfg['experts']['total_steps']:,}-step experts")


def test_figures_without_a_paper_counterpart_are_shown_apart(tmp_path):
    from npf.report.publish.page_figures import figures_region

    d = tmp_path / "docs" / "results" / "r"
    figs = {"results/r": [d / "curves_mt10.png", d / "fig15_overlap.png"]}
    region = figures_region(figs, tmp_path / "docs")
    paper, other = region.split("**Other figures from these runs**")
    assert "](results/r/fig15_overlap.png)" in paper and "curves_mt10" not in paper
    assert "![curves_mt10, results/r](results/r/curves_mt10.png)" in other and "fig15" not in other
    assert "Other figures" not in figures_region({"results/r": [d / "fig15_overlap.png"]}, tmp_path / "docs")


def test_budgets_name_a_results_dir_that_ran_jobs_but_no_evaluation():
    attempts = pd.DataFrame(
        [
            {"status": "finished", "config_hash": "abc123", "wall_s": 90.0},
            {"status": "failed", "config_hash": "x", "wall_s": 5.0},
        ]
    )
    ran = Source(Path("results/dapd"), "results/dapd", pd.DataFrame(), attempts, end_to_end_s=120.0)
    empty = Source(Path("results/none"), "results/none", pd.DataFrame(), pd.DataFrame())
    rows = {
        ln.split("|")[1].strip(): ln.split("|")[2].strip()
        for ln in budgets_region([ran, empty]).splitlines()
        if ln.startswith("| `")
    }
    assert rows == {"`results/dapd`": "none (no `evaluate` job)", "`results/none`": NOT_MEASURED}
