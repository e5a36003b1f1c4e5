"""npf.layout owns every results path: its paths are the ones the pipeline has always written (spelled
out by hand here, so running results directories keep resuming), find() lists a hand-made tree, and in a
dry run every rule's outputs are the layout's paths for that job's wildcards."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from test_config import job_stats, snakemake

from npf import layout

R = "res"


@pytest.mark.parametrize(
    "path,expected",
    [
        (layout.expert_policy(R, "cheetah", "forward", 0), "res/experts/cheetah/forward/seed0/policy.pt"),
        (layout.expert_metrics(R, "cheetah", "forward", 0), "res/experts/cheetah/forward/seed0/metrics.json"),
        (layout.dataset(R, "mt10", "reach"), "res/datasets/mt10/reach.npz"),
        (layout.dataset_manifest(R, "mt10", "reach"), "res/datasets/mt10/reach.json"),
        (layout.masks(R, "mt10", "iql", 2), "res/pathways/mt10/iql/seed2/masks.pt"),
        (layout.masks_summary(R, "mt10", "iql", 2), "res/pathways/mt10/iql/seed2/masks.json"),
        (layout.offline_final(R, "mt10", "npf", "bcq", 1), "res/runs/mt10/npf-bcq/seed1/final.pt"),
        (layout.offline_curve(R, "mt10", "npf", "bcq", 1), "res/runs/mt10/npf-bcq/seed1/metrics.csv"),
        (layout.eval_json(R, "mt10", "mh-sac", "sac", 3), "res/eval/mt10/mh-sac-sac/seed3.json"),
        (layout.sc_masks(R, "cheetah", "bcq", 10, 0), "res/sample_complexity/pathways/cheetah/bcq/n10/seed0/masks.pt"),
        (
            layout.sc_final(R, "cheetah", "mt", "bcq", 30, 1),
            "res/sample_complexity/runs/cheetah/mt-bcq/n30/seed1/final.pt",
        ),
        (
            layout.sc_eval_json(R, "cheetah", "mt", "bcq", 30, 1),
            "res/sample_complexity/eval/cheetah/mt-bcq/n30/seed1.json",
        ),
        (layout.sc_scores(R), "res/sample_complexity/scores.csv"),
        (layout.online_final(R, "mt10", "sac-npf", 0), "res/online/runs/mt10/sac-npf/seed0/final.pt"),
        (layout.grad_norms(R, "mt10", "sac-npf", 0), "res/online/grad_norms/mt10/sac-npf/seed0.csv"),
        (layout.pretrain_curves(R, "mt10", "sac-npf", 0), "res/online/pretrain_curves/mt10/sac-npf/seed0.csv"),
        (layout.dapd_curve(R, "forward", "dapd-M5", 1), "res/online/dapd/forward/dapd-M5/seed1/metrics.csv"),
        (layout.dapd_tidy_curve(R, "forward", "dense", 1), "res/online/dapd_curves/forward/dense/seed1.csv"),
        (layout.log(R, "evaluate", "mt10/npf-iql/seed0"), "res/logs/evaluate/mt10/npf-iql/seed0.log"),
        (layout.report_run_id(R, "mt10"), "res/report/mt10.mlflow_run_id.txt"),
        (layout.logs_dir(R), "res/logs"),
        (layout.config_record(R, "0a1b2c3d"), "res/configs/0a1b2c3d.yaml"),
        (layout.mlflow_db(R), "res/mlflow.db"),
        (layout.pattern(layout.offline_final, R), "res/runs/{suite}/{method}-{algo}/seed{seed}/final.pt"),
        (layout.pattern(layout.eval_json, R, algo="sac"), "res/eval/{suite}/{method}-sac/seed{seed}.json"),
        (layout.pattern(layout.sc_scores, R), "res/sample_complexity/scores.csv"),
    ],
)
def test_paths_are_the_pipelines(path, expected):
    assert path == expected


# the top-level names of a results directory
RESULT_NAMES = ("eval", "runs", "pathways", "online", "datasets", "experts", "sample_complexity", "logs", "configs")
RESULT_NAMES += ("report", "mlflow.db")


def composed_result_paths(source: str) -> list[str]:
    """Where ``source`` joins a results-directory name onto a directory: ``f"{r}/eval/…"``,
    ``path / "mlflow.db"``, ``path.glob("logs/…")``. MLflow run names and metric keys such as
    ``f"eval/{suite}/…"`` start with the name itself, not with a directory, and do not count."""
    names = "|".join(re.escape(n) for n in RESULT_NAMES)
    joined = re.compile(rf"^\{{\}}/({names})(/|$)")  # f-string text with each field as {}
    leading = re.compile(rf"^({names})(/|$)")

    def text(node) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        return None

    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr) and joined.search(text(node)):
            hits.append(f"line {node.lineno}: {text(node)!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and leading.search(text(node.right) or ""):
            hits.append(f"line {node.lineno}: / {text(node.right)!r}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("glob", "rglob")
            and node.args
            and leading.search(text(node.args[0]) or "")
        ):
            hits.append(f"line {node.lineno}: glob {text(node.args[0])!r}")
    return hits


def test_the_scan_sees_the_ways_a_module_spells_a_results_path():
    spelled = [
        'p = f"{r}/eval/{suite}.json"',
        'p = Path(r) / "mlflow.db"',
        "p = f\"{cfg['results_dir']}/configs/{h}.yaml\"",
        "p = r / 'logs' / name",
        'ps = Path(r).glob(f"logs/**/*{SUFFIX}")',
    ]
    assert all(composed_result_paths(src) for src in spelled)
    named = ['run_name = f"eval/{suite}/{m}/seed{s}"', 'msg = f"no results under {r}/eval"', '"""{r}/eval/x"""']
    assert not any(composed_result_paths(src) for src in named)


def test_only_layout_composes_result_paths():
    pkg = Path(layout.__file__).parent
    found = {
        str(p.relative_to(pkg.parent)): hits
        for p in sorted(pkg.rglob("*.py"))
        if p != Path(layout.__file__) and (hits := composed_result_paths(p.read_text()))
    }
    assert not found, found


def test_pattern_rejects_a_key_the_path_does_not_have():
    with pytest.raises(TypeError, match="offline_final has no key 'task'"):
        layout.pattern(layout.offline_final, R, task="x")


def test_find_lists_only_what_the_layout_names(tmp_path):
    made = [
        "eval/mt10/npf-iql/seed0.json",
        "eval/mt10/sac-npf-sac/seed1.json",
        "eval/cheetah/mt-bcq/seed10.json",
        "eval/mt10/npf-iql/notes.json",  # not a seed file
        "sample_complexity/eval/mt10/npf-iql/n4/seed0.json",  # another kind of evaluation
        "runs/mt10/npf-iql/seed0/final.pt",
        "runs/mt10/mt-iql/seed0/final.pt",
    ]
    for rel in made:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert layout.find(layout.eval_json, tmp_path) == [tmp_path / p for p in sorted(made[:3])]
    assert layout.find(layout.offline_final, tmp_path, method="npf") == [tmp_path / made[5]]
    assert layout.find(layout.eval_json, tmp_path, suite="cheetah") == [tmp_path / made[2]]


# every rule's outputs, as layout functions of the job's wildcards (the report's are its two folders)
RULE_OUTPUTS = {
    "experts": [layout.expert_policy, layout.expert_metrics],
    "datasets": [layout.dataset, layout.dataset_manifest],
    "pathways": [layout.masks, layout.masks_summary],
    "train_offline": [layout.offline_final, layout.offline_curve],
    "evaluate": [layout.eval_json],
    "sample_complexity_pathways": [layout.sc_masks, layout.sc_masks_summary],
    "sample_complexity_train": [layout.sc_final, layout.sc_curve],
    "sample_complexity_evaluate": [layout.sc_eval_json],
    "sample_complexity_scores": [layout.sc_scores],
    "train_online": [layout.online_final, layout.online_curve],
    "train_online_npf": [layout.online_final, layout.online_curve, layout.grad_norms, layout.pretrain_curves],
    "online_evaluate": [lambda r, suite, method, seed: layout.eval_json(r, suite, method, "sac", seed)],
    "dapd_ablation": [layout.dapd_curve, layout.dapd_tidy_curve],
}
CONFIG = """
suites: [cheetah]
tasks: {cheetah: [forward, backward]}
experts: {seeds: [0]}
datasets: {episodes: 4}
offline: {methods: [npf, mt], algos: [iql], seeds: [0], dataset_sizes: [2, 4]}
online:
  suites: [cheetah]
  methods: [sac-npf, mt-sac]
  seeds: [0]
  grad_norm_ablation: false
  dapd_ablation: {tasks: [forward], variants: [dense, dapd-M5], seeds: [0]}
"""


def _jobs(out: str) -> list[tuple[str, list[str], dict[str, str]]]:
    """(rule, outputs, wildcards) of every job a dry run plans."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        outputs = re.search(r"^\s+output: (.*)$", block, re.M)
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        jobs.append(
            (
                m.group(1),
                outputs.group(1).split(", ") if outputs else [],
                dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {},
            )
        )
    return jobs


def test_dry_run_outputs_are_the_layouts_paths(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    results, reports = tmp_path / "results", tmp_path / "reports"
    r = snakemake(
        "-n",
        "--configfile",
        str(tmp_path / "c.yaml"),
        "--config",
        f"results_dir={results}",
        f"reports_dir={reports}",
        tmp_path=tmp_path,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # counted by hand: 2 tasks; npf and mt IQL on seed 0; K=2 retrained (K=4 is the main run); online
    # sac-npf + mt-sac; two DAPD variants
    assert job_stats(out) == {
        "experts": 2,
        "datasets": 2,
        "pathways": 1,
        "train_offline": 2,
        "evaluate": 2,
        "sample_complexity_pathways": 1,
        "sample_complexity_train": 2,
        "sample_complexity_evaluate": 2,
        "sample_complexity_scores": 1,
        "train_online_npf": 1,
        "train_online": 1,
        "online_evaluate": 2,
        "dapd_ablation": 2,
        "figures_tables": 1,
        "all": 1,
    }
    jobs = _jobs(out)
    assert len(jobs) == 23
    for rule, outputs, wc in jobs:
        if rule == "all":
            continue
        if rule == "figures_tables":
            expected = [layout.figures_dir(reports), layout.tables_dir(reports)]
        else:
            expected = [fn(str(results), **wc) for fn in RULE_OUTPUTS[rule]]
        assert outputs == expected, rule
