"""The d3rlpy timing worker: d3rlpy's IQL and BCQ updates at protocol.ROWS' settings, run in the
separate d3rlpy venv (bench_d3rlpy.py --setup makes it) and driven by bench_d3rlpy.py over
protocol.py's line protocol. Imports nothing of npf.

The timed call is ``algo.update(batch)`` on a ``TransitionMiniBatch``: what one step of d3rlpy's
``fit`` calls after ``dataset.sample_transition_batch`` (its "algorithm_update" timer; the
numpy → tensor conversion of the batch is part of it). The batches are sampled before timing from
a synthetic HalfCheetah-shaped ``MDPDataset`` (obs 17, act 6) made here: no download.

Run: ``python benchmarks/d3rlpy/time_d3rlpy.py ROW ...`` (then ``ROW K`` lines on stdin).
"""

from __future__ import annotations

import itertools
import platform
import sys
from importlib.metadata import version

from protocol import ACT_DIM, BATCH, NUM_BATCHES, OBS_DIM, Row, claim_stdout, rows_named, serve

EPISODES, EPISODE_LEN = 10, 1000


def synthetic_dataset(seed: int = 0):
    """Random HalfCheetah-shaped episodes: obs ~ N(0, 1), actions ~ U(-1, 1), rewards ~ N(0, 1),
    each episode ending in a timeout (as HalfCheetah's 1000-step episodes do)."""
    import numpy as np
    from d3rlpy.dataset import MDPDataset

    rng = np.random.default_rng(seed)
    n = EPISODES * EPISODE_LEN
    timeouts = np.zeros(n, dtype=np.float32)
    timeouts[EPISODE_LEN - 1 :: EPISODE_LEN] = 1.0
    return MDPDataset(
        observations=rng.standard_normal((n, OBS_DIM), dtype=np.float32),
        actions=rng.uniform(-1.0, 1.0, (n, ACT_DIM)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        terminals=np.zeros(n, dtype=np.float32),
        timeouts=timeouts,
    )


def make_algo(row: Row):
    from d3rlpy.algos import BCQConfig, IQLConfig
    from d3rlpy.models.encoders import VectorEncoderFactory

    def net(hidden):
        return VectorEncoderFactory(hidden_units=list(hidden))

    shared = dict(batch_size=BATCH, actor_encoder_factory=net(row.hidden), critic_encoder_factory=net(row.hidden))
    if row.algo == "iql":
        cfg = IQLConfig(**shared, value_encoder_factory=net(row.hidden))
    elif row.algo == "bcq":
        cfg = BCQConfig(**shared, imitator_encoder_factory=net(row.vae_hidden), n_action_samples=row.samples)
    else:
        raise ValueError(f"time_d3rlpy: unknown algorithm {row.algo!r}")
    return cfg.create(device="cpu:0")


def main(argv: list[str]) -> int:
    out = claim_stdout()
    import d3rlpy
    import torch

    torch.set_num_threads(1)
    rows = rows_named(argv)
    d3rlpy.seed(0)
    dataset = synthetic_dataset()
    updates = {}
    for name, row in rows.items():
        algo = make_algo(row)
        algo.build_with_dataset(dataset)
        batches = itertools.cycle([dataset.sample_transition_batch(BATCH) for _ in range(NUM_BATCHES)])
        updates[name] = lambda algo=algo, batches=batches: algo.update(next(batches))
    info = {
        "versions": {
            "python": platform.python_version(),
            **{p: version(p) for p in ("d3rlpy", "torch", "gymnasium", "numpy")},
        },
        "threads": torch.get_num_threads(),
    }
    serve(updates, info, sys.stdin, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
