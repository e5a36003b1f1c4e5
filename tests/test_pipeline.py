"""End to end: the default DAG's experts and datasets stages on a tiny config, in a temporary
results directory; every output loads, MLflow holds one finished run per job with the full
config, and a second invocation has nothing to do."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from npf.config import load
from npf.data import load_dataset
from npf.expert_policy import load_expert_policy
from npf.tracking import config_hash, flatten

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")
TASKS = ["forward", "jump"]


def tiny(results: Path) -> dict:
    return {
        "results_dir": str(results),
        "device": "cpu",
        "suites": ["cheetah"],
        "tasks": {"cheetah": TASKS},
        "experts": {
            "seeds": [0],
            "total_steps": 2000,
            "learning_starts": 1000,
            "checkpoint_every": 1000,
            "eval_episodes": 1,
            "sac": {"hidden": [32, 32], "batch_size": 32},
        },
        "datasets": {
            "expert_seed": 0,
            "episodes": 2,
            "num_envs": 2,
            "random_episodes": 1,
            "eval_episodes": 1,
            "weak_expert": "warn",
        },
    }


def git_head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def snakemake(configfile: Path, *targets: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # store under results_dir
    return subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--configfile", str(configfile), "--cores", "2", *targets],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    results = root / "results"
    cfgfile = root / "tiny.yaml"
    cfgfile.write_text(yaml.safe_dump(tiny(results)))
    experts = [str(results / f"experts/cheetah/{t}/seed0/policy.pt") for t in TASKS]
    datasets = [str(results / f"datasets/cheetah/{t}.npz") for t in TASKS]
    targets = experts + datasets  # the experts + datasets part of the default DAG
    heads = {git_head()}
    first = snakemake(cfgfile, *targets)
    heads.add(git_head())  # (a commit may land while the jobs run)
    second = snakemake(cfgfile, *targets) if first.returncode == 0 else None
    # the README's report command, with the run's config (pygments must come with the package)
    report = snakemake(cfgfile, "--report", str(root / "report.html"), *targets) if first.returncode == 0 else None
    # what the workflow ran with: config/config.yaml overridden by the tiny configfile
    cfg = load(REPO / "config/config.yaml", yaml.safe_load(cfgfile.read_text()))
    return dict(
        results=results,
        first=first,
        second=second,
        report=report,
        report_html=root / "report.html",
        cfg=cfg,
        heads=heads,
    )


def test_pipeline_runs(pipeline):
    r = pipeline["first"]
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = r.stdout + r.stderr
    assert "4 of 4 steps (100%) done" in out, out[-3000:]


def test_outputs_exist_and_load(pipeline):
    res = pipeline["results"]
    for t in TASKS:
        d = res / "experts" / "cheetah" / t / "seed0"
        pol = load_expert_policy(d / "policy.pt")
        assert pol(torch.zeros(1, 17), deterministic=True)[0].shape == (1, 6)
        m = json.loads((d / "metrics.json").read_text())
        assert m["task"] == t and m["env_steps"] == 2000 and m["updates"] == 2000 - 1000 + 1
        assert (res / "logs" / "experts" / "cheetah" / t / "seed0.log").exists()

        ds = load_dataset(res / "datasets" / "cheetah" / f"{t}.npz")
        assert len(ds) == 2 * 1000 and ds.obs_dim == 17 and ds.act_dim == 6
        man = ds.manifest
        assert man["task"] == t and man["counts"]["episodes"] == 2 and man["counts"]["transitions"] == 2000
        assert man["expert"]["path"] == str(d / "policy.pt")
        assert len(man["returns"]["per_episode"]) == 2
        assert ds.arrays["timeouts"].sum() == 2 and not ds.arrays["terminals"].any()
        assert set(man["scores"]) >= {"random", "expert", "expert_deterministic"}
    # the two tasks are different reward functions: the datasets differ
    a = load_dataset(res / "datasets/cheetah/forward.npz").arrays["rewards"]
    b = load_dataset(res / "datasets/cheetah/jump.npz").arrays["rewards"]
    assert a.shape == b.shape and not (a == b).all()


def test_mlflow_one_finished_run_per_job(pipeline):
    from mlflow.tracking import MlflowClient

    res, cfg = pipeline["results"], pipeline["cfg"]
    assert (res / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{res / 'mlflow.db'}")
    exps = [e for e in client.search_experiments() if e.name != "Default"]
    assert [e.name for e in exps] == ["npf-cheetah"]
    runs = client.search_runs([exps[0].experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted([f"expert/cheetah/{t}/seed0" for t in TASKS] + [f"dataset/cheetah/{t}" for t in TASKS])
    expected_params = {k: str(v) for k, v in flatten(cfg).items()}
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        tags = run.data.tags
        stage = "experts" if run.info.run_name.startswith("expert/") else "datasets"
        assert tags["npf.stage"] == stage
        assert tags["npf.config_hash"] == config_hash(cfg)
        assert tags["mlflow.source.git.commit"] in pipeline["heads"], (
            tags["mlflow.source.git.commit"],
            pipeline["heads"],
        )
        assert tags["npf.suite"] == "cheetah" and tags["npf.task"] in TASKS
        assert run.data.params == expected_params  # the full config, flattened
        assert run.data.params["experts.total_steps"] == "2000"
        if stage == "experts":
            assert "eval/return" in run.data.metrics and "train/episode_return" in run.data.metrics
        else:
            assert run.data.metrics["dataset/transitions"] == 2000


def test_second_invocation_is_a_noop(pipeline):
    r = pipeline["second"]
    assert r is not None and r.returncode == 0, (r.stdout + r.stderr)[-3000:] if r else "first run failed"
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


def test_report_with_the_runs_config_has_every_files_metadata(pipeline):
    r = pipeline["report"]
    assert r is not None and r.returncode == 0, (r.stdout + r.stderr)[-3000:] if r else "first run failed"
    assert "Missing metadata" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert pipeline["report_html"].stat().st_size > 0
