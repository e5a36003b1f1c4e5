"""The npf timing worker: npf's IQL and BCQ updates (``algo.update(batch)``, dense single-task) at
protocol.ROWS' settings, in this project's venv, driven by bench_d3rlpy.py over protocol.py's
line protocol. The algorithms are benchmarks/common.py's ``make_algo`` (Table-5 configs with the
row's sizes), the batches its ``random_batches`` (HalfCheetah-shaped: obs 17, act 6), drawn
before timing.

Run: ``python benchmarks/d3rlpy/time_npf.py [--fused-adam] ROW ...`` (then ``ROW K`` lines on stdin).
"""

from __future__ import annotations

import itertools
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import ACT_DIM, BATCH, NUM_BATCHES, OBS_DIM, Row, claim_stdout, rows_named, serve


def make_algo(row: Row):
    from common import make_algo

    if row.algo == "iql":
        h = list(row.hidden)
        return make_algo("iql", OBS_DIM, ACT_DIM, None, actor_hidden=h, critic_hidden=h, value_hidden=h)
    if row.algo == "bcq":
        return make_algo(
            "bcq",
            OBS_DIM,
            ACT_DIM,
            None,
            actor_hidden=list(row.hidden),
            critic_hidden=list(row.hidden),
            vae_hidden=list(row.vae_hidden),
            num_samples=row.samples,
        )
    raise ValueError(f"time_npf: unknown algorithm {row.algo!r}")


def main(argv: list[str]) -> int:
    out = claim_stdout()
    import torch
    from common import random_batches

    torch.set_num_threads(1)
    fused = argv[:1] == ["--fused-adam"]
    rows = rows_named(argv[1:] if fused else argv)
    updates = {}
    for name, row in rows.items():
        algo = make_algo(row)
        algo.set_compile("off", fused)
        batches = itertools.cycle(random_batches(NUM_BATCHES, BATCH, OBS_DIM, ACT_DIM, seed=1))
        updates[name] = lambda algo=algo, batches=batches: algo.update(next(batches))
    info = {
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "threads": torch.get_num_threads(),
        "adam": "fused" if fused else "foreach",
    }
    serve(updates, info, sys.stdin, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
