"""Opt-in: the whole pipeline through `snakemake --profile slurm` on a real one-node cluster.

Runs tests/slurm/run_cluster_test.sh, which (as root, Debian/Ubuntu) installs slurm-wlm +
munge when missing, starts the daemons it needs, runs the tiny pipeline through Slurm, checks
outputs / MLflow runs / Slurm job ids, and stops what it started. Takes several minutes.

    NPF_TEST_SLURM=1 pytest -m slurm tests/slurm -s

(`-m slurm` because pyproject's addopts deselect the marker; NPF_TEST_SLURM=1 because the
script changes the machine: packages, daemons, /etc/slurm/slurm.conf.)
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "run_cluster_test.sh"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("NPF_TEST_SLURM") != "1",
                       reason="opt-in: set NPF_TEST_SLURM=1 (installs and starts a one-node Slurm cluster "
                              "as root; run with `pytest -m slurm tests/slurm`)"),
]


def test_pipeline_through_slurm(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the cluster test must run as root (packages, munged/slurmctld/slurmd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("no Slurm installed and no apt-get to install it")
    env = dict(os.environ, NPF_SLURM_TEST_DIR=str(tmp_path / "work"))
    until = os.environ.get("NPF_TEST_SLURM_UNTIL")  # e.g. datasets
    cmd = ["bash", str(SCRIPT)] + (["--until", until] if until else [])
    # run from an unrelated directory: the script must not depend on the cwd
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    print(proc.stdout[-5000:])
    assert proc.returncode == 0, f"cluster test failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "PASS:" in proc.stdout
    assert "OK: " in proc.stdout
