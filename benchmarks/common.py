"""What the benchmark scripts share: the clock, interleaved timing, the Table-5 algorithms at their
benchmark sizes, random task batches, and the CPU model and git commit of a report's header.
(bench_multitask.py, bench_export.py, roofline.py, run_all.py and d3rlpy/bench_d3rlpy.py import
from here, not from each other.)"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEEP = 0.05
SIZES = {5: (17, 6), 10: (39, 4)}  # N → (obs_dim, act_dim): HalfCheetah 5-task, MT10


def clock():
    """The timer: this process's CPU time with one torch thread (immune to time slices lost to
    other processes on a shared machine; kernel time such as page faults is included), wall
    time with several threads (where CPU time would add the threads up)."""
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


def interleaved(fns, rounds, warmup, now=None):
    """{name: (median ms, min ms)} over ``rounds`` interleaved calls of every function, timed by
    ``now`` (default: :func:`clock`'s choice)."""
    times = {k: [] for k in fns}
    now = now or clock()
    for r in range(warmup + rounds):
        for k, f in fns.items():
            t0 = now()
            f()
            dt = now() - t0
            if r >= warmup:
                times[k].append(dt)
    return {k: (statistics.median(v) * 1e3, min(v) * 1e3) for k, v in times.items()}


def make_algo(name, obs_dim, act_dim, N, seed=0, **overrides):
    """IQL [1024, 1024], BCQ [400, 300] + VAE [750, 750], SAC [400, 400, 400] (policy_delay 1, one
    temperature per task): the Table-5 sizes; ``overrides``: other config values."""
    if name == "iql":
        from npf.algos.iql import IQL, IQLConfig

        table5 = dict(actor_hidden=[1024, 1024], critic_hidden=[1024, 1024], value_hidden=[1024, 1024])
        return IQL(obs_dim, act_dim, IQLConfig(**{**table5, **overrides}), seed=seed)
    if name == "bcq":
        from npf.algos.bcq import BCQ, BCQConfig

        table5 = dict(actor_hidden=[400, 300], critic_hidden=[400, 300], vae_hidden=[750, 750])
        return BCQ(obs_dim, act_dim, BCQConfig(**{**table5, **overrides}), seed=seed)
    if name == "sac":
        from npf.algos.sac import SAC, SACConfig

        cfg = SACConfig(**{**dict(hidden=[400, 400, 400], policy_delay=1), **overrides})
        return SAC(obs_dim, act_dim, cfg, num_temperatures=N, seed=seed)
    raise ValueError(name)


def random_batches(N, B, obs_dim, act_dim, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "obs": torch.randn(B, obs_dim, generator=g),
            "act": torch.rand(B, act_dim, generator=g) * 2 - 1,
            "rew": torch.randn(B, 1, generator=g),
            "next_obs": torch.randn(B, obs_dim, generator=g),
            "done": (torch.rand(B, 1, generator=g) < 0.05).float(),
        }
        for _ in range(N)
    ]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return rev + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def shown(arg: str) -> str:
    """An argument as the report shows it: a path by its file name only (no machine paths in a committed file)."""
    return Path(arg).name if os.sep in arg else arg
