"""The installed ``npf`` command, run as a user runs it (a subprocess of the venv's entry point)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from test_custom_suite import EXAMPLE, TINY, clean_env, own_suite_run

REPO = Path(__file__).resolve().parent.parent
NPF = str(REPO / ".venv" / "bin" / "npf")


def run_npf(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([NPF, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=clean_env())


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0, r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_help_lists_every_command():
    r = run_npf("--help")
    assert r.returncode == 0
    for cmd in ("suites", "validate", "results", "export"):
        assert cmd in r.stdout


def test_suites_lists_builtin_suites_with_registered_ids():
    import npf.envs

    r = run_npf("suites")
    assert r.returncode == 0, r.stderr
    for suite, tasks in npf.envs.SUITES.items():
        if suite in npf.envs.BUILTIN_SUITES:
            assert f"{suite}  (built-in, {len(tasks)} tasks" in r.stdout
            for t in tasks:
                eid = npf.envs.env_id(suite, t)
                assert eid in r.stdout and eid in gym.registry
    assert "custom" not in r.stdout


def test_suites_with_config_lists_custom_suite():
    r = run_npf("suites", "--config", EXAMPLE)
    assert r.returncode == 0, r.stderr
    assert "pendulum  (custom, 2 tasks, 200-step episodes, obs 3, act 1)  [in suites]" in r.stdout
    assert "npf/pendulum-earth-v0  = Pendulum-v1(g=9.81)" in r.stdout
    assert "npf/pendulum-moon-v0  = Pendulum-v1(g=1.62)" in r.stdout


def test_suites_with_bad_custom_suite_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"custom_suites": {"carts": {"tasks": {"a": {"env_id": "CartPole-v1"}}}}}))
    line = one_error_line(run_npf("suites", "--config", str(bad)))
    assert "custom_suites.carts.tasks.a" in line and "Discrete(2)" in line
    assert "not found" in one_error_line(run_npf("suites", "--config", str(tmp_path / "nope.yaml")))


def test_validate_prints_the_planned_jobs_of_a_custom_suite(tmp_path):
    where = tmp_path / "where.yaml"
    where.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results")}))
    r = run_npf("validate", EXAMPLE, str(TINY), str(where))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("config: valid; suites: pendulum (2 tasks, custom)"), r.stdout
    counts = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    assert counts == {
        "experts": 2,
        "datasets": 2,
        "pathways": 1,
        "train_offline": 3,
        "evaluate": 3,
        "figures_tables": 1,
        "all": 1,
        "total": 13,
    }, r.stdout


def test_validate_rejects_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("suites: [pendulum]\n")  # not declared
    line = one_error_line(run_npf("validate", str(bad)))
    assert line.startswith("error: config: suites: unknown suite 'pendulum'"), line
    bad.write_text("experts: {total_steps: 0}\n")
    assert "experts.total_steps" in one_error_line(run_npf("validate", str(bad)))


def _eval(root: Path, suite, method, algo, seed, scores: dict, metric="normalized"):
    key = "normalized_mean" if metric == "normalized" else "success"
    ev = {
        "suite": suite,
        "method": method,
        "algo": algo,
        "seed": seed,
        "metric": metric,
        "tasks": {t: {key: v} for t, v in scores.items()},
    }
    p = root / "eval" / suite / f"{method}-{algo}" / f"seed{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(ev))


def test_results_table(tmp_path):
    _eval(tmp_path, "pendulum", "npf", "iql", 0, {"earth": 50.0, "moon": 70.0})  # seed mean 60
    _eval(tmp_path, "pendulum", "npf", "iql", 1, {"earth": 70.0, "moon": 90.0})  # seed mean 80
    _eval(tmp_path, "mt10", "mt", "bcq", 0, {"reach": 40.0, "push": 20.0}, metric="success")
    r = run_npf("results", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0] == ["suite", "metric", "method", "algo", "mean", "std", "seeds"]
    assert ["pendulum", "normalized", "npf", "iql", "70.00", "10.00", "2"] in rows
    assert ["mt10", "success", "mt", "bcq", "30.00", "0.00", "1"] in rows
    r = run_npf("results", str(tmp_path), "--tasks", "--suite", "pendulum")
    rows = [line.split() for line in r.stdout.splitlines()]
    assert ["pendulum", "normalized", "npf", "iql", "moon", "80.00", "10.00", "2"] in rows
    assert not any(row and row[0] == "mt10" for row in rows)


def test_results_without_evaluations(tmp_path):
    r = run_npf("results", str(tmp_path))
    assert r.returncode == 1 and f"no evaluation results under {tmp_path}/eval" in r.stderr


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    run = own_suite_run(tmp_path_factory)
    assert run["returncode"] == 0, run["output"][-4000:]
    return run


def test_results_of_the_own_suite_run(own_run):
    r = run_npf("results", cwd=Path(own_run["repo"]))  # default results/ in the working directory
    assert r.returncode == 0, r.stderr
    for m in ("npf", "mt", "mhmt"):
        assert any(line.split()[:4] == ["pendulum", "normalized", m, "iql"] for line in r.stdout.splitlines()), r.stdout


def test_broken_or_non_mapping_config_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experts: [1, 2\n")
    assert "not valid YAML" in one_error_line(run_npf("validate", str(bad)))
    bad.write_text("- experts\n- datasets\n")
    assert "must be a mapping" in one_error_line(run_npf("suites", "--config", str(bad)))


@pytest.mark.skipif(importlib.util.find_spec("npf.export") is None, reason="npf.export not there yet")
def test_export_a_task_pathway_policy(own_run, tmp_path):
    final = Path(own_run["results"]) / "runs/pendulum/npf-iql/seed0/final.pt"
    out = tmp_path / "moon.pt"
    r = run_npf("export", str(final), "moon", str(out))
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.stat().st_size > 0 and f"wrote {out}" in r.stdout
    assert "mars" in one_error_line(run_npf("export", str(final), "mars", str(tmp_path / "x.pt")))
