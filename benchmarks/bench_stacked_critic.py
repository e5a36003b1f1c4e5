"""Twin critics as two networks (npf's TwinQ) against one stacked network, on the CPU.

One critic step's work (forward of Q1 and Q2 on the same batch, both MSE losses, backward):
``separate`` = ``npf.nets.TwinQ`` as it is; ``vmap`` = the two networks' parameters stacked with
``torch.func.stack_module_state`` and run through ``torch.vmap(functional_call)`` (LeanRL's way);
``bmm`` = stacked ``[2, out, in]`` weights through ``baddbmm``. The gradients are checked equal to
float tolerance first (the stacked forms sum in another order, so not bit for bit). Interleaved
rounds, medians, ratios to ``separate``.

Run: ``python benchmarks/bench_stacked_critic.py [--hidden 256 1024] [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SIZES, interleaved

from npf.nets import TwinQ

B = 256


def variants(h: int):
    obs, act = SIZES[5]
    g = torch.Generator().manual_seed(0)
    tq = TwinQ(obs, act, [h, h])
    x, y = torch.randn(B, obs + act, generator=g), torch.randn(B, 1, generator=g)
    params, bufs = stack_module_state([tq.q1, tq.q2])
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    base = copy.deepcopy(tq.q1).to("meta")
    vf = torch.vmap(lambda p, b, x: functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))
    lin = [[m for m in q if isinstance(m, nn.Linear)] for q in (tq.q1, tq.q2)]
    ws = [torch.stack([a.weight.detach(), b.weight.detach()]).requires_grad_(True) for a, b in zip(*lin)]
    bs = [torch.stack([a.bias.detach(), b.bias.detach()]).requires_grad_(True) for a, b in zip(*lin)]

    def separate():
        tq.zero_grad(set_to_none=True)
        q1, q2 = tq(x[:, :obs], x[:, obs:])
        ((q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()).backward()
        return [p.grad for p in tq.q1.parameters()]

    def vmapped():
        for p in params.values():
            p.grad = None
        (vf(params, bufs, x) - y).pow(2).mean(dim=(1, 2)).sum().backward()
        return [p.grad[0] for p in params.values()]

    def bmm():
        for p in ws + bs:
            p.grad = None
        z = x.expand(2, B, x.shape[-1])
        for i, (w, b) in enumerate(zip(ws, bs)):
            z = torch.baddbmm(b.unsqueeze(1), z, w.transpose(1, 2))
            z = torch.relu(z) if i < len(ws) - 1 else z
        (z - y).pow(2).mean(dim=(1, 2)).sum().backward()
        return [t for pair in zip(ws, bs) for t in (pair[0].grad[0], pair[1].grad[0])]

    return {"separate": separate, "vmap": vmapped, "bmm": bmm}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", nargs="+", type=int, default=[256, 1024])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| critic | separate ms | vmap ÷ separate | bmm ÷ separate | max grad gap |\n|---|---|---|---|---|")
    for h in args.hidden:
        fns = variants(h)
        ref = fns["separate"]()
        gap = max(float((a - b).abs().max()) for k in ("vmap", "bmm") for a, b in zip(ref, fns[k]()))
        if gap > 1e-4:
            raise AssertionError(f"stacked critic gradients differ from TwinQ's by {gap:.1e}")
        r = interleaved(fns, args.rounds, 3)
        s = r["separate"][0]
        print(f"| [{h}, {h}] | {s:.2f} | {r['vmap'][0] / s:.2f} | {r['bmm'][0] / s:.2f} | {gap:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
