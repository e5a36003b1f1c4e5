"""What the two timing workers (time_npf.py in this project's venv, time_d3rlpy.py in d3rlpy's) and
their driver (bench_d3rlpy.py) share: the rows measured and the line protocol between them.

Pure Python (no torch, no npf): the d3rlpy venv imports it too.

A worker builds every row's algorithm and batches, prints one JSON line ``{"ready": true, ...}``
(its versions), then answers each command line ``ROW K`` from stdin with ``{"row": ROW, "ms": ...}``:
the process CPU time of K consecutive updates ÷ K, in milliseconds (one torch thread, so CPU time
is immune to time slices lost to other processes). ``quit`` or end of input stops it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah
BATCH = 256
#: batches drawn before timing; the updates cycle through them
NUM_BATCHES = 8


@dataclass(frozen=True)
class Row:
    label: str
    algo: str  # "iql" or "bcq"
    hidden: tuple[int, ...]  # IQL: actor, critics, value; BCQ: actor and critics
    updates: int  # per timed round, so that a round takes ~0.1 s or more
    vae_hidden: tuple[int, ...] = ()  # BCQ
    samples: int = 0  # BCQ: VAE action samples per next state


def bcq_row(samples: int, updates: int) -> Row:
    label = f"BCQ ms/update, [400, 300] + VAE [750, 750], {samples} action samples"
    return Row(label, "bcq", (400, 300), updates, vae_hidden=(750, 750), samples=samples)


ROWS = {
    "iql-256": Row("IQL ms/update, [256, 256]", "iql", (256, 256), updates=16),
    "iql-1024": Row("IQL ms/update, [1024, 1024]", "iql", (1024, 1024), updates=3),
    "bcq-10": bcq_row(10, updates=3),
    "bcq-100": bcq_row(100, updates=1),
}


def rows_named(names: Iterable[str]) -> dict[str, Row]:
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise ValueError(f"unknown row(s) {', '.join(unknown)} (choose from {', '.join(ROWS)})")
    return {n: ROWS[n] for n in names}


def claim_stdout():
    """The protocol's own stream: a copy of stdout, with fd 1 then pointed at stderr so that
    whatever the libraries print cannot mix into the protocol."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    return out


def time_updates(update: Callable[[], object], k: int, now: Callable[[], float] = time.process_time) -> float:
    """ms per call of ``update`` over ``k`` consecutive calls."""
    t0 = now()
    for _ in range(k):
        update()
    return (now() - t0) * 1e3 / k


def serve(updates: dict[str, Callable[[], object]], info: dict, inp, out) -> None:
    """Answer ``ROW K`` lines from ``inp`` on ``out`` until ``quit`` or end of input."""
    out.write(json.dumps({"ready": True, **info}) + "\n")
    out.flush()
    for line in inp:
        cmd = line.split()
        if cmd == ["quit"]:
            break
        if len(cmd) != 2 or cmd[0] not in updates or not cmd[1].isdigit() or int(cmd[1]) < 1:
            raise ValueError(
                f"worker: bad command {line.strip()!r} (expected 'ROW K', ROW one of {', '.join(updates)})"
            )
        out.write(json.dumps({"row": cmd[0], "ms": time_updates(updates[cmd[0]], int(cmd[1]))}) + "\n")
        out.flush()
