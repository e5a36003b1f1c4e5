"""The Slurm profile (slurm/config.yaml), checked without a cluster.

* the profile parses the way Snakemake reads it (yte templating on), and every key is an
  option of this Snakemake + snakemake-executor-plugin-slurm;
* ``snakemake --profile slurm -n`` from the repository root plans the training rules
  (experts, train_offline) with a GPU and the rules' runtime/memory, and the light rules
  (datasets, pathways, evaluate) without a GPU, for the default and the env-var settings;
* the plugin turns those planned resources into the expected sbatch flags (--gpus=1, ...).

The real cluster run is tests/slurm/test_slurm_cluster.py (opt-in).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROFILE = REPO / "slurm" / "config.yaml"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# the rules that declare a GPU in workflow/rules/*.smk (the profile must cover every one of them)
GPU_RULES = {
    m.group(1)
    for f in (REPO / "workflow" / "rules").glob("*.smk")
    for m in re.finditer(r"^rule (\w+):(?:(?!^rule ).)*?^\s+gpu=1,", f.read_text(), re.S | re.M)
}
LIGHT_RULES = {"datasets", "pathways", "evaluate"}
ENV_KEYS = (
    "NPF_SLURM_PARTITION",
    "NPF_SLURM_GPU_PARTITION",
    "NPF_SLURM_ACCOUNT",
    "NPF_SLURM_GPUS",
    "NPF_SLURM_GPU_MODEL",
    "NPF_SLURM_JOBS",
    "NPF_SLURM_STATUS_COMMAND",
)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(extra)
    return env


def parse_profile(monkeypatch, **env) -> dict:
    from snakemake.profiles import ProfileConfigFileParser

    from npf import slurm

    for k in ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    slurm.detected_gpus.cache_clear()
    with open(PROFILE) as f:
        return dict(ProfileConfigFileParser().parse(f))


def test_profile_keys(monkeypatch):
    p = parse_profile(monkeypatch)
    assert p["executor"] == "slurm"
    assert p["slurm-status-command"] == "squeue"  # no accounting daemon needed
    assert int(p["retries"]) >= 1
    assert p["rerun-incomplete"] == "True"
    assert int(p["latency-wait"]) >= 5
    assert int(p["jobs"]) >= 1
    assert p["slurm-requeue"] == "True"
    assert {"experts", "train_offline", "train_online", "train_online_npf", "dapd_ablation"} <= GPU_RULES
    assert sorted(p["set-resources"]) == sorted(f"{r}:gpu=1" for r in GPU_RULES)
    assert p["default-resources"] == []  # no partition/account unless asked for


def test_profile_env_settings(monkeypatch):
    p = parse_profile(
        monkeypatch,
        NPF_SLURM_PARTITION="all",
        NPF_SLURM_ACCOUNT="123456",
        NPF_SLURM_GPU_PARTITION="gpu",
        NPF_SLURM_GPU_MODEL="a100",
        NPF_SLURM_GPUS="2",
        NPF_SLURM_JOBS="7",
        NPF_SLURM_STATUS_COMMAND="sacct",
    )
    # quoted: the values are Python expressions to Snakemake ("all" would be the builtin)
    assert p["default-resources"] == ["slurm_partition='all'", "slurm_account='123456'"]
    assert sorted(p["set-resources"]) == sorted(
        f"{r}:{kv}" for r in GPU_RULES for kv in ("gpu=2", "gpu_model='a100'", "slurm_partition='gpu'")
    )
    assert p["jobs"] == "7" and p["slurm-status-command"] == "sacct"
    p = parse_profile(monkeypatch, NPF_SLURM_GPUS="0", NPF_SLURM_GPU_MODEL="a100")
    assert sorted(p["set-resources"]) == sorted(f"{r}:gpu=0" for r in GPU_RULES)


def test_profile_options_exist(monkeypatch):
    """Every key is a real option of this Snakemake and its slurm plugin (names verified)."""
    from snakemake.cli import get_argument_parser

    options = get_argument_parser()._option_string_actions
    keys = [k for k in parse_profile(monkeypatch)]
    unknown = [k for k in keys if f"--{k}" not in options]
    assert not unknown, f"profile keys that are not Snakemake options: {unknown}"
    raw = yaml.safe_load(PROFILE.read_text())
    assert raw["__use_yte__"] is True


def dry_run(tmp_path: Path, **env) -> dict[str, list[dict[str, str]]]:
    """`snakemake --profile slurm -n` from the repo root; planned resources per rule."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "results_dir": str(tmp_path / "results"),
                "tasks": {"cheetah": ["forward", "jump"]},
                "offline": {"methods": ["npf", "mt"], "algos": ["iql"], "dataset_sizes": [1]},  # + Fig. 5's rules
            }
        )
    )
    proc = subprocess.run(
        [str(SNAKEMAKE), "--profile", "slurm", "--configfile", str(cfg), "-n", "--nolock"],
        cwd=REPO,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    planned: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        r = re.search(r"^\s+resources: (.*)$", block, re.M)
        if m and r:
            res = dict(kv.split("=", 1) for kv in r.group(1).split(", "))
            planned.setdefault(m.group(1), []).append(res)
    return planned


def test_dry_run_plans_gpu_for_training_only(tmp_path):
    planned = dry_run(tmp_path)
    assert set(planned) >= GPU_RULES | LIGHT_RULES, planned.keys()
    for rule in GPU_RULES:
        for res in planned[rule]:
            assert res.get("gpu") == "1", (rule, res)
    for rule in LIGHT_RULES:
        for res in planned[rule]:
            assert "gpu" not in res and "gres" not in res, (rule, res)
    # runtime (minutes, first attempt) and memory come from the rules
    assert {(r["runtime"], r["mem_mb"]) for r in planned["experts"]} == {("240", "8000")}
    # train_offline's memory is estimated from its inputs' size (npf.resources, tests/test_resources.py):
    # not known before the datasets exist
    assert {(r["runtime"], r["mem_mb"]) for r in planned["train_offline"]} == {("360", "<TBD>")}
    assert {(r["runtime"], r["mem_mb"]) for r in planned["datasets"]} == {("60", "4000")}
    assert all("slurm_partition" not in r for rs in planned.values() for r in rs)


def test_dry_run_env_partitions_and_cpu_only(tmp_path):
    planned = dry_run(tmp_path, NPF_SLURM_PARTITION="cpu", NPF_SLURM_GPU_PARTITION="gpu", NPF_SLURM_GPUS="0")
    for rule in GPU_RULES:
        for res in planned[rule]:
            assert res.get("gpu") == "0" and res.get("slurm_partition") == "gpu", (rule, res)
    for rule in LIGHT_RULES:
        for res in planned[rule]:
            assert "gpu" not in res and res.get("slurm_partition") == "cpu", (rule, res)


class _Res(dict):
    __getattr__ = dict.get


@pytest.mark.parametrize(
    "rule, resources, want, unwanted",
    [
        ("experts", {"gpu": 1, "runtime": 240, "mem_mb": 8000}, ["--gpus=1", "-t 240", "--mem 8000"], ["--ntasks"]),
        (
            "train_offline",
            {"gpu": 1, "gpu_model": "a100", "runtime": 360, "mem_mb": 16000},
            ["--gpus=a100:1", "-t 360", "--mem 16000", "--cpus-per-task=1"],
            [],
        ),
        ("train_offline", {"gpu": 0, "runtime": 360, "mem_mb": 16000}, ["--ntasks=1"], ["--gpus", "--gres"]),
        (
            "datasets",
            {"runtime": 60, "mem_mb": 4000},
            ["--ntasks=1", "--cpus-per-task=1", "-t 60"],
            ["--gpus", "--gres"],
        ),
    ],
)
def test_plugin_turns_resources_into_sbatch_flags(rule, resources, want, unwanted):
    """What the slurm plugin (2.8) submits for the planned resources of each kind of rule."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=_Res(resources), threads=1, name=rule)
    params = {
        "run_uuid": "u",
        "slurm_logfile": "x.log",
        "comment_str": rule,
        "account": "",
        "partition": "-p gpu",
        "workdir": str(REPO),
    }
    call = get_submit_command(job, params) + set_gres_string(job)
    for flag in want:
        assert flag in call, (flag, call)
    for flag in unwanted:
        assert flag not in call, (flag, call)


# ------------------------------------------------------------------------ GPU-less clusters
def fake_sinfo(tmp_path: Path, monkeypatch, script: str) -> None:
    """A ``sinfo`` first on PATH that runs ``script`` (sh)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize(
    "script, gpus, says",
    [
        ("printf '(null)\\n(null)\\n'", 0, True),  # sinfo -o %G on nodes without generic resources
        ("printf '(null)\\ngpu:a100:4\\n'", 1, False),
        ("echo 'slurm_load_partitions: Unable to contact slurm controller' >&2; exit 1", 1, False),
    ],
)
def test_profile_detects_a_cluster_without_gpus(tmp_path, monkeypatch, capfd, script, gpus, says):
    fake_sinfo(tmp_path, monkeypatch, script)
    p = parse_profile(monkeypatch)
    assert sorted(p["set-resources"]) == sorted(f"{r}:gpu={gpus}" for r in GPU_RULES)
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if "NPF_SLURM_GPUS=0" in ln]
    assert len(lines) == (1 if says else 0), err
    # NPF_SLURM_GPUS wins over the detection
    assert sorted(parse_profile(monkeypatch, NPF_SLURM_GPUS="2")["set-resources"]) == sorted(
        f"{r}:gpu=2" for r in GPU_RULES
    )


def test_bad_gpu_count_is_one_line(monkeypatch):
    from npf import slurm

    monkeypatch.setenv("NPF_SLURM_GPUS", "two")
    with pytest.raises(SystemExit, match="NPF_SLURM_GPUS='two'"):
        slurm.gpus_per_job()


def test_plain_install_leaves_the_slurm_plugin_out():
    """Snakemake imports every installed executor plugin at each start, and the Slurm one runs
    `scontrol show config`, which waits ~10 s where Slurm is installed but stopped: only the
    `slurm` extra (and dev, for these tests) brings it in. pygments: `snakemake --report` needs it."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(deps):
        return {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() for d in deps}

    assert "snakemake-executor-plugin-slurm" not in names(project["dependencies"])
    assert "snakemake-executor-plugin-slurm" in names(project["optional-dependencies"]["slurm"])
    assert "pygments" in names(project["dependencies"])
