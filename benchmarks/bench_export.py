"""Exported per-task policy (npf.export): file size and batch-1 action latency.

For BCQ ([400, 300] actor/critic + VAE [750, 750]), IQL ([1024, 1024]) and SAC ([400, 400, 400]) at
Table-5 sizes (N = 5: obs 17, act 6; N = 10: obs 39, act 4), with real SNIP masks (keep 5 %) on
random data, a fake ``final.pt`` is written and task 0's policy exported. Reported:

* ``size ÷ dense`` — the exported file ÷ the same networks saved densely (float32 weights, biases);
* batch-1 latency of one deterministic action (raw observation → action; BCQ decodes, perturbs
  and scores ``num_samples`` = 10 candidates) of the exported :class:`~npf.export.PathwayPolicy`,
  against the masked global networks with only task 0's pathway attached (``masked-dense``:
  ``backend="dense"``, θ ⊙ m formed and multiplied densely, as in training without sparse kernels)
  and against the same networks without masks (``dense``: plain matmuls, the floor for a dense
  policy of this size).

Run: ``python benchmarks/bench_export.py [--quick] [--out reports/benchmarks_export.md]``; also
part of benchmarks/bench_multitask.py's report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import KEEP, SIZES, clock, make_algo, random_batches  # noqa: E402

from npf import checkpoint as ckpt  # noqa: E402
from npf.data import Normalizer  # noqa: E402
from npf.export import PathwayPolicy, export_task_policy  # noqa: E402
from npf.pathways import Pathways  # noqa: E402


def latency(fns, calls, rounds=5):
    """{name: (median µs, min µs)} per call: ``rounds`` interleaved blocks of ``calls`` calls."""
    now = clock()
    per = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = now()
            for _ in range(calls):
                f()
            per[k].append((now() - t0) / calls * 1e6)
    return {k: (statistics.median(v), min(v)) for k, v in per.items()}


def bench_one(name, N, calls, rounds):
    obs_dim, act_dim = SIZES[N]
    algo = make_algo(name, obs_dim, act_dim, N)
    pw = Pathways.discover(algo, random_batches(N, 256, obs_dim, act_dim, seed=2), keep_ratio=KEEP)
    rng = np.random.default_rng(0)
    norms = [Normalizer(rng.normal(size=obs_dim), 0.5 + rng.random(obs_dim)) for _ in range(N)]
    tasks = [f"task{i}" for i in range(N)]
    final = {
        "algo": algo.state_dict(),
        "method": "npf",
        "algo_name": name,
        "suite": "bench",
        "tasks": tasks,
        "seed": 0,
        "normalizers": [n.state_dict() for n in norms],
        "pathways": pw.state_dict(),
    }
    if name == "sac":  # the online stage's final.pt
        del final["algo_name"], final["normalizers"]
        final["sac"] = {"hidden": [400, 400, 400]}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save(final, Path(tmp) / "final.pt")
        info = export_task_policy(Path(tmp) / "final.pt", "task0", Path(tmp) / "policy.pt")
        policy = PathwayPolicy.load(Path(tmp) / "policy.pt")
    obs = torch.randn(1, obs_dim)
    mean = torch.as_tensor(norms[0].mean) if name != "sac" else torch.zeros(obs_dim)
    std = torch.as_tensor(norms[0].std) if name != "sac" else torch.ones(obs_dim)
    view = pw.task_view(0)

    def masked_dense():
        return algo.act(((obs - mean) / std).unsqueeze(0))[0]

    def seeded(fn):  # BCQ: the same fixed sample as the exported policy
        if name != "bcq":
            return fn

        def run():
            algo.generator.manual_seed(0)
            return fn()

        return run

    view.attach(algo, backend="dense")
    with torch.no_grad():
        err = float((seeded(masked_dense)() - policy(obs)).abs().max())
        res = latency({"exported": lambda: policy(obs), "masked-dense": seeded(masked_dense)}, calls, rounds)
        Pathways.detach(algo)
        res.update(latency({"dense": seeded(lambda: algo.act((obs - mean) / std))}, calls, rounds))
    return info, res, err


def table(rounds: int = 100, quick: bool = False, tasks=(5, 10), algos=("iql", "bcq", "sac")) -> list[str]:
    calls = 20 if quick else max(20, rounds)
    reps = 2 if quick else 5
    lines = [
        "## Exported per-task policy (task 0; npf.export)",
        "",
        f"Latency: one deterministic action for one raw observation, µs per call, median (min) of "
        f"{reps} blocks of {calls} calls, {torch.get_num_threads()} thread(s). `masked-dense`: the global "
        "networks with task 0's pathway attached (backend dense); `dense`: the same networks unmasked. "
        "nnz / dense: the actor's weight matrices; size: the whole exported file (BCQ: actor, VAE "
        "decoder and Q1) ÷ the same networks saved densely. `max |Δa|`: exported vs masked-dense action.",
        "",
        "| algo | N | actor nnz / dense | exported bytes | dense bytes | size ÷ dense | exported µs "
        "| masked-dense µs | dense µs | exported ÷ masked-dense | max \\|Δa\\| |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in algos:
        for N in tasks:
            info, r, err = bench_one(name, N, calls, reps)
            e, md, d = r["exported"], r["masked-dense"], r["dense"]
            lines.append(
                f"| {name} | {N} | {info['nnz']} / {info['dense']} ({100 * info['nnz'] / info['dense']:.1f}%) "
                f"| {info['bytes']} | {info['dense_bytes']} | {info['bytes'] / info['dense_bytes']:.3f} "
                f"| {e[0]:.0f} ({e[1]:.0f}) | {md[0]:.0f} ({md[1]:.0f}) | {d[0]:.0f} ({d[1]:.0f}) "
                f"| {e[0] / md[0]:.2f} ({e[1] / md[1]:.2f}) | {err:.1e} |"
            )
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--out", nargs="?", const=str(ROOT / "reports" / "benchmarks_export.md"), default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines = table(args.calls, args.quick)
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
