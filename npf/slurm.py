"""What the Slurm profile (slurm/config.yaml) asks of the cluster: GPUs per training job.

A CPU-only cluster rejects ``sbatch --gpus=1`` ("Invalid generic resource (gres)
specification"), and Snakemake would retry each job and fail. So unless ``NPF_SLURM_GPUS`` is
set, the profile asks ``sinfo`` whether any node has a GPU and, when none has, submits the
training rules without ``--gpus`` and says so in one line.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

# the rules that declare gpu=1 (workflow/rules/*.smk): the profile sets their gpu resource
GPU_RULES = ("experts", "train_offline", "sample_complexity_train", "train_online", "train_online_npf", "dapd_ablation")
NO_GPU_LINE = (
    "npf slurm profile: no node of this cluster has a GPU (sinfo lists no gpu gres), so jobs are "
    "submitted without --gpus as with NPF_SLURM_GPUS=0 (set NPF_SLURM_GPUS=N to request N GPUs)"
)


def cluster_has_gpus(timeout: float = 15) -> bool | None:
    """Whether any node has a GPU generic resource (``sinfo -h -o %G``); None when that cannot be
    told (no ``sinfo``, or it fails: no controller reachable)."""
    if shutil.which("sinfo") is None:
        return None
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return any("gpu" in gres.lower() for gres in r.stdout.split())


@functools.cache
def detected_gpus() -> int:
    """0 when ``sinfo`` shows no GPU on any node (said once, on stderr), else 1."""
    if cluster_has_gpus() is False:
        print(NO_GPU_LINE, file=sys.stderr, flush=True)
        return 0
    return 1


def gpus_per_job() -> int:
    """``NPF_SLURM_GPUS`` when set, else :func:`detected_gpus`."""
    value = os.environ.get("NPF_SLURM_GPUS", "").strip()
    if value:
        if not value.isdigit():
            sys.exit(f"error: NPF_SLURM_GPUS={value!r}: expected a number of GPUs per job (0 = none)")
        return int(value)
    return detected_gpus()
