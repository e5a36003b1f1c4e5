"""Cost of an NPF update against a dense multitask (Offline-MT) update, per pathway backend.

Main table (``--algos``): one full update of BCQ, IQL and SAC at Table-5 sizes through
:class:`~npf.multitask.MultitaskLearner` on N tasks × ``batch`` samples:

* ``mt``          — one-hot task id appended to the observation, unmasked networks (the dense
  multitask update on the same total batch N·batch);
* ``npf-dense``   — NPF, ``backend="dense"`` (masked-dense bmm / task loop, no sparse kernels);
* ``npf-sparse``  — NPF, ``backend="sparse"`` (every task of every layer through CSR kernels);
* ``npf-auto``    — NPF, ``backend="auto"`` (per layer, task and batch size from the rules in
  docs/backends.md).

N = 5 uses HalfCheetah sizes (obs 17, act 6), N = 10 MT10 sizes (obs 39, act 4). Networks: BCQ
actor/critic [400, 300] + VAE [750, 750]; IQL actor/critic/value [1024, 1024]; SAC actor/critic
[400, 400, 400] (``policy_delay = 1`` so that every timed update trains both). Masks are real SNIP
masks (keep 5 %) of the algorithm's own losses on random data. Every NPF time includes refreshing
the sparse views after the optimizer steps (they are rebuilt lazily at the first forward after a
step); ``refresh`` is that cost measured alone (all networks and targets once, as in one update).

Second table (``--nets``): one network (forward, MSE, backward, Adam step), NPF backends and the
reference ``autograd`` backend against the dense MT network. Third (``--layers``): one masked layer
(forward + backward) of N = 10 tasks at a given per-task density, CSR against masked-dense: the
measurements behind ``auto``'s rules. Fourth (``--export``): the exported per-task policy
(benchmarks/bench_export.py).

Methods are timed in interleaved rounds so that background load hits all alike; the table gives
medians and (in parentheses) minima; ratios are NPF ÷ MT of the medians (minima).
Run: ``python benchmarks/bench_multitask.py [--quick] [--threads 1] [--out]`` (``--out`` writes
reports/benchmarks_pathways.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import KEEP, SIZES, clock, interleaved, make_algo, random_batches  # noqa: E402,F401

from npf.algos.base import Algorithm  # noqa: E402
from npf.multitask import MultitaskLearner, obs_dim_for  # noqa: E402
from npf.nets import mlp  # noqa: E402
from npf.pathways import LayerPlan, Pathways, SparseViews, all_modules, masked_layers  # noqa: E402

NPF_BACKENDS = ("dense", "sparse", "auto")


def fmt(t):
    return f"{t[0]:.1f} ({t[1]:.1f})"


def ratio(a, b):
    return f"{a[0] / b[0]:.2f} ({a[1] / b[1]:.2f})"


def refresh_all(algo):
    """Rebuild every sparse view of ``algo`` (networks and targets, CSR and its transpose) once."""
    for net in all_modules(algo):
        for _, layer in masked_layers(net):
            hook = layer.pathway_forward
            if hook is not None and hook.plan().nnz:
                SparseViews(hook.plan(), layer.weight).csr_t  # noqa: B018


def sparse_share(algo):
    """Share of the pathway entries (all networks) that run on CSR kernels under ``algo``'s plans."""
    tot = csr = 0
    for net in algo.networks().values():
        for _, layer in masked_layers(net):
            plan = layer.pathway_forward.plan() if layer.pathway_forward is not None else None
            nnz = int(layer.weight_mask.sum())
            tot += nnz
            if plan is not None and plan.any_sparse:
                csr += plan.nnz
    return csr / max(tot, 1)


def bench_algo(name, N, B, rounds, warmup):
    obs_dim, act_dim = SIZES[N]
    reduce = "mean" if name == "sac" else "sum"
    data = random_batches(N, B, obs_dim, act_dim, seed=1)
    mt = MultitaskLearner(make_algo(name, obs_dim_for("mt", obs_dim, N), act_dim, N), "mt", N, reduce=reduce)
    probe = make_algo(name, obs_dim, act_dim, N)
    pw = Pathways.discover(probe, random_batches(N, B, obs_dim, act_dim, seed=2), keep_ratio=KEEP)
    learners = {"mt": mt}
    for backend in NPF_BACKENDS:
        learners[f"npf-{backend}"] = MultitaskLearner(
            make_algo(name, obs_dim, act_dim, N), "npf", N, pw, reduce=reduce, backend=backend
        )
    fns = {k: (lambda lr=lr: lr.update(data)) for k, lr in learners.items()}
    res = interleaved(fns, rounds, warmup)
    auto = learners["npf-auto"].algo
    refresh = interleaved({"refresh": lambda: refresh_all(auto)}, max(3, rounds // 2), 1)["refresh"]
    dens = {role: float(pw.density(role).mean()) for role in pw.roles}
    return res, refresh, sparse_share(auto), dens


# ------------------------------------------------------------------------------ one network
NETS = {
    "SAC critic [400,400,400]": ([400, 400, 400], 1),
    "IQL critic [1024,1024]": ([1024, 1024], 1),
    "BCQ VAE decoder [750,750]": ([750, 750], None),
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


def bench_net(name, N, B, rounds, warmup, with_autograd=True):
    obs_dim, act_dim = SIZES[N]
    hidden, out_dim = NETS[name]
    in_dim = obs_dim + (act_dim if out_dim == 1 else 2 * act_dim)  # critic: (s, a); decoder: (s, z)
    out_dim = out_dim or act_dim
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, B, in_dim, generator=g)
    teachers = torch.randn(N, in_dim, out_dim, generator=g)
    y = torch.tanh(torch.einsum("nbi,nio->nbo", x, teachers))
    onehot = torch.eye(N).unsqueeze(1).expand(N, B, N)
    dense_x, dense_y = torch.cat([x, onehot], -1).reshape(N * B, -1), y.reshape(N * B, -1)
    torch.manual_seed(0)
    dense = Regression(in_dim + N, hidden, out_dim)
    dense.loss_scale = N
    probe = Regression(in_dim, hidden, out_dim)
    pw = Pathways.discover(probe, [{"x": x[n], "y": y[n]} for n in range(N)], keep_ratio=KEEP)
    fns = {"mt": lambda: dense.update({"x": dense_x, "y": dense_y})}
    backends = NPF_BACKENDS + (("autograd",) if with_autograd else ())
    for backend in backends:
        torch.manual_seed(0)
        m = Regression(in_dim, hidden, out_dim)
        m.loss_scale = N
        pw.attach(m, backend=backend)
        fns[f"npf-{backend}"] = lambda m=m: m.update({"x": x, "y": y})
    return interleaved(fns, rounds, warmup), backends


# ------------------------------------------------------------------------------ one layer
def bench_layer(out_f, in_f, R, density, N, rounds, warmup):
    """Forward + backward (∂x, ∂θ, ∂b) of one masked layer, N tasks at ``density`` each, under the
    three plans a layer can take: ``bmm`` (one masked-dense bmm), ``loop`` (masked-dense task
    loop) and ``csr`` (CSR kernels, including the refresh of the sparse views after a weight
    update)."""
    from npf.nets import MaskedLinear
    from npf.pathways import PathwayForward

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(N, out_f, in_f, generator=g) < density
    x = torch.randn(N, in_f, R, generator=g).transpose(1, 2).requires_grad_(True)  # transposed layout
    fns = {}
    for name, backend, bmm_max in (("bmm", "dense", 10**12), ("loop", "dense", 0), ("csr", "sparse", 0)):
        layer = MaskedLinear(in_f, out_f)
        layer.set_masks(masks)
        layer.pathway_forward = hook = PathwayForward(layer, backend)
        plan = _plan_with(layer.weight_mask, backend, bmm_max)
        hook.pin_plan(plan)

        def run(layer=layer, hook=hook):
            with torch.no_grad():
                layer.weight.add_(0.0)  # a weight update: the sparse views are rebuilt (counted)
            y = hook(x, activation="relu")
            y.backward(torch.ones_like(y))

        fns[name] = run
    return interleaved(fns, rounds, warmup)


def _plan_with(mask, backend, bmm_max):
    import npf.pathways.backends as P

    saved = P.CPU_BMM_MAX_ELEMENTS
    P.CPU_BMM_MAX_ELEMENTS = bmm_max
    try:
        return LayerPlan(mask, backend)
    finally:
        P.CPU_BMM_MAX_ELEMENTS = saved


# ------------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--tasks", type=int, nargs="+", default=[5, 10], choices=sorted(SIZES))
    ap.add_argument("--batch", type=int, default=256, help="samples per task")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--algos", nargs="*", default=["iql", "bcq", "sac"])
    ap.add_argument("--nets", action="store_true", help="also the one-network table")
    ap.add_argument("--layers", action="store_true", help="also the one-layer CSR vs masked-dense sweep")
    ap.add_argument("--no-export", action="store_true", help="skip the exported-policy table")
    ap.add_argument("--quick", action="store_true", help="few rounds (a smoke run)")
    ap.add_argument(
        "--out",
        nargs="?",
        const=str(ROOT / "reports" / "benchmarks_pathways.md"),
        default=None,
        help="also write the tables to this Markdown file (default reports/benchmarks_pathways.md)",
    )
    args = ap.parse_args(argv)
    rounds, warmup = (2, 1) if args.quick else (args.rounds, 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    lines: list[str] = []

    def out(s=""):
        print(s, flush=True)
        lines.append(s)

    out("# NPF update cost per pathway backend (CPU)")
    out()
    out(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), batch {args.batch} per task, keep ratio {KEEP}, "
        f"{rounds} interleaved rounds after {warmup} warm-up. Times in ms: median (min), "
        f"{'process CPU time' if torch.get_num_threads() == 1 else 'wall time'}. "
        "Ratio = NPF update ÷ dense MT update on the same total batch, from medians (minima). "
        "`refresh` = rebuilding all sparse views once (already inside every NPF time). "
        "`csr share` = share of pathway entries that `auto` runs on CSR kernels."
    )
    out()
    if args.algos:
        out("## Full update (Table 5 sizes) via MultitaskLearner")
        out()
        out(
            "| algo | N | mt (dense) | npf dense | npf sparse | npf auto | dense ÷ mt | sparse ÷ mt | auto ÷ mt "
            "| refresh | csr share | N×keep |"
        )
        out("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in args.algos:
            for N in args.tasks:
                r, refresh, share, _ = bench_algo(name, N, args.batch, rounds, warmup)
                out(
                    f"| {name} | {N} | {fmt(r['mt'])} | {fmt(r['npf-dense'])} | {fmt(r['npf-sparse'])} "
                    f"| {fmt(r['npf-auto'])} | {ratio(r['npf-dense'], r['mt'])} | {ratio(r['npf-sparse'], r['mt'])} "
                    f"| {ratio(r['npf-auto'], r['mt'])} | {fmt(refresh)} | {100 * share:.0f}% | {N * KEEP:.2f} |"
                )
        out()
    if args.nets:
        out("## One network: forward + MSE + backward + Adam step")
        out()
        out(
            "| network | N | mt (dense) | npf dense | npf sparse | npf auto | npf autograd "
            "| dense ÷ mt | sparse ÷ mt | auto ÷ mt | autograd ÷ mt |"
        )
        out("|---|---|---|---|---|---|---|---|---|---|---|")
        for name in NETS:
            for N in args.tasks:
                r, _ = bench_net(name, N, args.batch, rounds, warmup)
                out(
                    f"| {name} | {N} | {fmt(r['mt'])} | {fmt(r['npf-dense'])} | {fmt(r['npf-sparse'])} "
                    f"| {fmt(r['npf-auto'])} | {fmt(r['npf-autograd'])} | {ratio(r['npf-dense'], r['mt'])} "
                    f"| {ratio(r['npf-sparse'], r['mt'])} | {ratio(r['npf-auto'], r['mt'])} "
                    f"| {ratio(r['npf-autograd'], r['mt'])} |"
                )
        out()
    if args.layers:
        out("## One layer, N = 10 tasks, forward + ReLU + backward: CSR time ÷ best masked-dense time")
        out()
        out(
            "Cells: CSR ÷ min(bmm, loop) of the medians, and which masked-dense plan won (b = bmm, "
            "l = loop); < 1 means CSR is faster. `auto` uses CSR when N·out·in > CPU_BMM_MAX_ELEMENTS and "
            "the density is ≤ 15 % (R ≤ 1024) or ≤ 10 % (R > 1024)."
        )
        out()
        dens = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
        out("| layer out×in | rows/task R | " + " | ".join(f"{100 * d:g}%" for d in dens) + " |")
        out("|---|---|" + "---|" * len(dens))
        shapes = ((1024, 1024), (1024, 43), (750, 750), (400, 400), (400, 43), (1, 1024))
        for out_f, in_f in shapes:
            for R in (16, 256) if args.quick else (16, 256, 2560):
                cells = []
                for d in dens:
                    r = bench_layer(out_f, in_f, R, d, 10, max(3, rounds // 2), 1)
                    best = "bmm" if r["bmm"][0] <= r["loop"][0] else "loop"
                    cells.append(f"{r['csr'][0] / r[best][0]:.2f} {best[0]}")
                out(f"| {out_f}×{in_f} | {R} | " + " | ".join(cells) + " |")
        out()
    if not args.no_export:
        import bench_export

        for line in bench_export.table(rounds=max(rounds, 5) * 20, quick=args.quick):
            out(line)
        out()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
