"""Cost of the batched masked N-task update against a dense multitask update and a per-task loop.

For one network of Table-5 size (SAC critic [43 → 400 → 400 → 400 → 1]; IQL [43 → 1024 → 1024 → 1])
and N tasks × 256 samples, one *update* = forward, MSE loss, backward, Adam step:

* ``dense``    — Offline-MT: the unmasked network on all N·256 samples at once (+ one-hot input);
* ``npf``      — the batched masked update (``Pathways.attach(backend="fused")``): one autograd
  function per layer; on CPU small layers run one bmm over tasks, large ones loop over tasks
  inside the function with CSR sparse kernels for sparse pathways (``npf.pathways``
  ``CPU_BMM_MAX_ELEMENTS`` / ``CPU_SPARSE_MAX_DENSITY``); on CUDA every layer is one bmm;
* ``npf-ag``   — the same through MaskedLinear's plain autograd path (``backend="autograd"``);
* ``loop``     — Algorithm 1 done naively: N forward/backward passes, one per task through
  θ ⊙ m_n, gradients summed, one step.

Masks are real SNIP masks (keep 5 %) from a regression loss with a different teacher per task.
A second table times a full IQL update (actor, twin critic, value, target; Table 5 sizes) through
:class:`~npf.multitask.MultitaskLearner`: ``mt`` (one-hot, dense) against ``npf``.

Methods are timed in interleaved rounds so that background load hits all alike; ratios are given
from the medians and from the minima (the minimum is the better estimate on a loaded machine).
Run: ``python benchmarks/bench_multitask.py [--quick] [--threads 1 0] [--no-algo]`` (0 = default).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npf.algos.base import Algorithm  # noqa: E402
from npf.multitask import MultitaskLearner, obs_dim_for  # noqa: E402
from npf.nets import MaskedLinear, mlp  # noqa: E402
from npf.pathways import Pathways  # noqa: E402

CONFIGS = {
    "SAC critic [400,400,400]": (43, [400, 400, 400], 1),
    "IQL critic [1024,1024]": (43, [1024, 1024], 1),
}


class Regression(Algorithm):
    """One network, MSE loss (the update being timed)."""
    roles = ("net",)

    def __init__(self, in_dim, hidden, out_dim):
        self.net = mlp(in_dim, out_dim, hidden)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)

    def networks(self):
        return {"net": self.net}

    def losses(self, b):
        return {"net": F.mse_loss(self.net(b["x"]), b["y"]) * self.loss_scale}

    def update(self, b):
        loss = self.losses(b)["net"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {}


def task_data(N, B, in_dim, out_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, B, in_dim, generator=g)
    teachers = torch.randn(N, in_dim, out_dim, generator=g)
    y = torch.tanh(torch.einsum("nbi,nio->nbo", x, teachers))
    return x, y


def bench_config(name, N, B, rounds, warmup):
    in_dim, hidden, out_dim = CONFIGS[name]
    torch.manual_seed(0)
    x, y = task_data(N, B, in_dim, out_dim)
    onehot = torch.eye(N).unsqueeze(1).expand(N, B, N)
    dense_x = torch.cat([x, onehot], -1).reshape(N * B, -1)
    dense_y = y.reshape(N * B, -1)

    dense = Regression(in_dim + N, hidden, out_dim)
    dense.loss_scale = N
    masked = Regression(in_dim, hidden, out_dim)
    masked.loss_scale = N
    pw = Pathways.discover(masked, [{"x": x[n], "y": y[n]} for n in range(N)], keep_ratio=0.05)
    masked_ag = Regression(in_dim, hidden, out_dim)
    masked_ag.loss_scale = N
    pw.attach(masked, backend="fused")
    pw.attach(masked_ag, backend="autograd")

    loop = Regression(in_dim, hidden, out_dim)
    layers = [m for m in loop.net if isinstance(m, MaskedLinear)]
    keys = [f"{i}.weight" for i, m in enumerate(loop.net) if isinstance(m, MaskedLinear)]
    task_masks = [[pw.masks["net"][k][n].float() for k in keys] for n in range(N)]

    def run_loop():
        loop.opt.zero_grad(set_to_none=True)
        for n in range(N):
            h = x[n]
            for i, (layer, m) in enumerate(zip(layers, task_masks[n])):
                h = F.linear(h, layer.weight * m, layer.bias)
                if i < len(layers) - 1:
                    h = torch.relu(h)
            F.mse_loss(h, y[n]).backward()
        loop.opt.step()

    fns = {
        "dense": lambda: dense.update({"x": dense_x, "y": dense_y}),
        "npf": lambda: masked.update({"x": x, "y": y}),
        "npf-ag": lambda: masked_ag.update({"x": x, "y": y}),
        "loop": run_loop,
    }
    return interleaved(fns, rounds, warmup), float(pw.density("net").mean()), pw.union_density("net")


def interleaved(fns, rounds, warmup):
    """{name: (median ms, min ms)} over ``rounds`` interleaved calls of every function."""
    times = {k: [] for k in fns}
    for r in range(warmup + rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            if r >= warmup:
                times[k].append(dt)
    return {k: (statistics.median(v) * 1e3, min(v) * 1e3) for k, v in times.items()}


def bench_iql(N, B, rounds, warmup):
    from npf.algos.iql import IQL, IQLConfig

    obs_dim, act_dim = 39, 4
    g = torch.Generator().manual_seed(0)

    def batches():
        return [{"obs": torch.randn(B, obs_dim, generator=g), "act": torch.rand(B, act_dim, generator=g) * 2 - 1,
                 "rew": torch.randn(B, 1, generator=g), "next_obs": torch.randn(B, obs_dim, generator=g),
                 "done": torch.zeros(B, 1)} for _ in range(N)]

    data = batches()
    mt = MultitaskLearner(IQL(obs_dim_for("mt", obs_dim, N), act_dim, IQLConfig(), seed=0), "mt", N)
    algo = IQL(obs_dim, act_dim, IQLConfig(), seed=0)
    pw = Pathways.discover(algo, batches(), keep_ratio=0.05)
    npf = MultitaskLearner(algo, "npf", N, pw)
    res = interleaved({"mt": lambda: mt.update(data), "npf": lambda: npf.update(data)}, rounds, warmup)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="torch threads; 0 = default")
    ap.add_argument("--tasks", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="few rounds (a smoke run)")
    ap.add_argument("--no-algo", action="store_true", help="skip the full IQL update table")
    args = ap.parse_args(argv)
    rounds, warmup = (3, 1) if args.quick else (args.rounds, 3)
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, device cpu, default threads {default_threads}, batch {args.batch}/task; "
          "times: median ms (min ms)\n")
    print("One network: forward + MSE + backward + Adam step, N tasks × batch")
    print("| network | threads | N | dense MT | npf (fused) | npf (autograd) | per-task loop "
          "| npf/dense med (min) | npf-ag/dense | npf/loop | density | union |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda t: f"{t[0]:.1f} ({t[1]:.1f})"  # noqa: E731
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for name in CONFIGS:
            for N in args.tasks:
                r, dens, union = bench_config(name, N, args.batch, rounds, warmup)
                print(f"| {name} | {torch.get_num_threads()} | {N} | {fmt(r['dense'])} | {fmt(r['npf'])} "
                      f"| {fmt(r['npf-ag'])} | {fmt(r['loop'])} "
                      f"| {r['npf'][0] / r['dense'][0]:.3f} ({r['npf'][1] / r['dense'][1]:.3f}) "
                      f"| {r['npf-ag'][0] / r['dense'][0]:.3f} | {r['npf'][0] / r['loop'][0]:.3f} "
                      f"| {100 * dens:.1f}% | {100 * union:.1f}% |", flush=True)
    if not args.no_algo:
        print("\nFull IQL update (actor/critic/value [1024,1024], Table 5) via MultitaskLearner, N tasks × batch")
        print("| threads | N | mt (one-hot, dense) | npf | npf/mt med (min) |")
        print("|---|---|---|---|---|")
        for threads in args.threads:
            torch.set_num_threads(threads or default_threads)
            for N in args.tasks:
                r = bench_iql(N, args.batch, max(3, rounds // 2), max(1, warmup // 2))
                print(f"| {torch.get_num_threads()} | {N} | {fmt(r['mt'])} | {fmt(r['npf'])} "
                      f"| {r['npf'][0] / r['mt'][0]:.3f} ({r['npf'][1] / r['mt'][1]:.3f}) |", flush=True)
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
