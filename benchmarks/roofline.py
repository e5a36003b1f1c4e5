"""How close one update comes to the matmul roofline of this machine.

For SAC, IQL and BCQ, dense single-task and NPF N-task: the FLOPs of one update (counted by
``torch.utils.flop_counter.FlopCounterMode``: matmuls, the work that scales) ÷ (the update's time ×
the GEMM rate measured in the same run, at the same thread count, at the update's own hidden-layer
shape: ``[B, h] @ [h, h]``, or the ``[N, B, h] @ [N, h, h]`` bmm of the NPF update). The two are
timed interleaved (GEMM, update, GEMM, update ...) so background load hits both alike; ratio of
medians.

All hidden layers of every network get the same width h; batch 256 per task; SAC trains the actor
on every update (``policy_delay = 1``) so that every timed update does the same work. NPF rows use
the masked-dense pathway backend (``dense``: every task through θ ⊙ m_n as a dense bmm) so that the
counted FLOPs are the ones computed; masks are SNIP masks keeping 5 %.

Run: ``python benchmarks/roofline.py [--hidden 256 1024] [--tasks 10] [--rounds 7] [--compile on] [--fused-adam]
[--profile sac]``
(``--profile NAME ...``: torch.profiler's shares and table of dense updates instead; ``--compile-gain``:
eager ÷ compiled update time and the compile time, as ``compile: auto`` measures them).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import KEEP, SIZES, interleaved, random_batches

from npf.multitask import MultitaskLearner, stack_batches
from npf.pathways import Pathways

ALGOS = ("sac", "iql", "bcq")
HIDDEN = (256, 1024)
B = 256


def build(name: str, h: int, obs_dim: int, act_dim: int, N: int | None, seed: int = 0, **extra):
    """``name`` with every hidden layer h wide (two layers); ``N`` tasks → one temperature per task."""
    hidden = [h, h]
    if name == "sac":
        from npf.algos.sac import SAC, SACConfig

        return SAC(obs_dim, act_dim, SACConfig(hidden=hidden, policy_delay=1, **extra), num_temperatures=N, seed=seed)
    if name == "iql":
        from npf.algos.iql import IQL, IQLConfig

        return IQL(
            obs_dim,
            act_dim,
            IQLConfig(actor_hidden=hidden, critic_hidden=hidden, value_hidden=hidden, **extra),
            seed=seed,
        )
    if name == "bcq":
        from npf.algos.bcq import BCQ, BCQConfig

        return BCQ(
            obs_dim,
            act_dim,
            BCQConfig(actor_hidden=hidden, critic_hidden=hidden, vae_hidden=hidden, **extra),
            seed=seed,
        )
    raise ValueError(f"unknown algorithm {name!r} (choose {', '.join(ALGOS)})")


def problem(name: str, h: int, N: int | None, **extra):
    """(update function, batch, gemm function): the dense single-task update (``N=None``, cheetah
    sizes) or the NPF update of N tasks (MT10 sizes, masked-dense backend)."""
    if N is None:
        obs_dim, act_dim = SIZES[5]
        algo = build(name, h, obs_dim, act_dim, None, **extra)
        batch = random_batches(1, B, obs_dim, act_dim, seed=1)[0]
        x, w = torch.randn(B, h), torch.randn(h, h)
        return algo.update, batch, lambda: torch.mm(x, w), algo
    obs_dim, act_dim = SIZES[10] if N == 10 else SIZES[5]
    probe = build(name, h, obs_dim, act_dim, N, **extra)
    pw = Pathways.discover(probe, random_batches(N, B, obs_dim, act_dim, seed=2), keep_ratio=KEEP)
    reduce = "mean" if name == "sac" else "sum"
    algo = build(name, h, obs_dim, act_dim, N, **extra)
    learner = MultitaskLearner(algo, "npf", N, pw, reduce=reduce, backend="dense")
    batch = learner.prepare(stack_batches(random_batches(N, B, obs_dim, act_dim, seed=1)))
    x, w = torch.randn(N, B, h), torch.randn(N, h, h)
    return algo.update, batch, lambda: torch.bmm(x, w), algo


def count_flops(update, batch, algo) -> int:
    """FLOPs of one update, counted on a copy (the measured algorithm is not advanced)."""
    clone = copy.deepcopy(algo)
    fn = getattr(clone, update.__name__)
    with FlopCounterMode(display=False) as fc:
        fn(batch)
    return fc.get_total_flops()


@dataclass
class Roofline:
    label: str
    flops: int  # of one update
    update_ms: tuple  # (median, min)
    gemm_ms: tuple  # of one GEMM at the layer shape
    gemm_flops: int

    @property
    def achieved(self) -> float:
        """GFLOP/s of the update (median)."""
        return self.flops / self.update_ms[0] / 1e6

    @property
    def gemm_rate(self) -> float:
        return self.gemm_flops / self.gemm_ms[0] / 1e6

    @property
    def ratio(self) -> float:
        return self.achieved / self.gemm_rate


def label(name: str, h: int, N: int | None, fused_adam: bool = False) -> str:
    what = "dense single-task" if N is None else f"NPF {N}-task"
    return f"roofline, {name.upper()} [{h}, {h}], {what}" + (", fused Adam" if fused_adam else "")


def measure(
    name: str,
    h: int,
    N: int | None,
    rounds: int,
    warmup: int,
    compile: str = "off",
    fused_adam: bool = False,
    **extra,
) -> Roofline:
    """``compile`` / ``fused_adam``: the algorithm's config keys (``compile: on``: the warm-up
    rounds compile)."""
    update, batch, gemm, algo = problem(name, h, N, **extra)
    flops = count_flops(update, batch, algo)
    algo.set_compile(compile, fused_adam)
    update = algo.update
    rows = B * (1 if N is None else N)
    gemm_flops = 2 * rows * h * h
    gemm_calls = max(2, round(flops / gemm_flops / 4))  # GEMM block ≈ a quarter of the update's work
    r = interleaved(
        {"gemm": lambda: [gemm() for _ in range(gemm_calls)], "update": lambda: update(batch)}, rounds, warmup
    )
    g = (r["gemm"][0] / gemm_calls, r["gemm"][1] / gemm_calls)
    return Roofline(label(name, h, N, fused_adam), flops, r["update"], g, gemm_flops)


def compile_gain(name: str, h: int, N: int | None, rounds: int = 7) -> dict:
    """``compile: auto``'s own measurement (npf.algos.compile.decide) on this problem: eager and
    compiled ms/update (interleaved medians) and the compile time."""
    from npf.algos import compile as compiling

    _, batch, _, algo = problem(name, h, N)
    return compiling.decide(algo, batch, rounds)


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile(name: str, h: int, N: int | None, updates: int = 20, **extra) -> str:
    """torch.profiler over ``updates`` updates: where the time goes, as shares of the profiled wall
    time: GEMM kernels, the other aten kernels (element-wise, reductions, copies, the optimizers'
    kernels), and the rest (Python, dispatch, autograd bookkeeping: wall time inside no kernel);
    then the top kernels."""
    update, batch, _, _ = problem(name, h, N, **extra)
    for _ in range(3):
        update(batch)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(updates):
            update(batch)
        wall = (time.perf_counter() - t0) * 1e6
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    other = sum(e.self_cpu_time_total for e in events if e.key not in GEMM_OPS)
    calls = sum(e.count for e in events) / updates
    share = (
        f"GEMM {gemm / wall:.0%}, other kernels {other / wall:.0%}, outside kernels (Python, dispatch, "
        f"autograd) {1 - (gemm + other) / wall:.0%} of {wall / updates / 1e3:.1f} ms/update (wall, profiled); "
        f"{calls:.0f} aten calls per update"
    )
    return share + "\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--algos", nargs="+", default=list(ALGOS))
    ap.add_argument("--hidden", nargs="+", type=int, default=list(HIDDEN))
    ap.add_argument("--tasks", type=int, default=10, help="N of the NPF rows (0: dense rows only)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", default="off", choices=["off", "on"], help="the algorithms' compile mode")
    ap.add_argument("--fused-adam", action="store_true", help="the algorithms' fused_adam: true")
    ap.add_argument(
        "--compile-gain",
        action="store_true",
        help="instead: eager ÷ compiled update time and compile time of each dense update",
    )
    ap.add_argument(
        "--profile", nargs="+", metavar="NAME", help="print the profiles of dense updates of NAME(s) instead"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compile_gain:
        print("| update | eager ms | compiled ms | eager ÷ compiled | compile s |\n|---|---|---|---|---|")
        for name in args.algos:
            for h in args.hidden:
                r = compile_gain(name, h, None, args.rounds)
                if "error" in r:
                    print(f"| {label(name, h, None)} | compile failed: {r['error']} | | | |", flush=True)
                    continue
                print(
                    f"| {label(name, h, None)} | {r['eager_ms']:.1f} | {r['compiled_ms']:.1f} | "
                    f"{r['eager_ms'] / r['compiled_ms']:.2f} | {r['compile_s']:.0f} |",
                    flush=True,
                )
        return 0
    if args.profile:
        for name in args.profile:
            for h in args.hidden:
                print(f"## {label(name, h, None)}\n{profile(name, h, None)}", flush=True)
        return 0
    print("| row | GFLOP/update | ms/update | GFLOP/s | GEMM GFLOP/s | ratio |\n|---|---|---|---|---|---|")
    for name in args.algos:
        for h in args.hidden:
            for N in (None, args.tasks or None) if args.tasks else (None,):
                r = measure(name, h, N, args.rounds, args.warmup, args.compile, args.fused_adam)
                print(
                    f"| {r.label} | {r.flops / 1e9:.3f} | {r.update_ms[0]:.1f} ({r.update_ms[1]:.1f}) | "
                    f"{r.achieved:.0f} | {r.gemm_rate:.0f} | {r.ratio:.2f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
