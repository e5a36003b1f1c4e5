"""One benchmark command for the costs of issue #8, measured in one run, reported as ratios.

Rows (docs/benchmarks.md explains each one):

1. ``update``      one masked N-task NPF update (``backend="auto"``) ÷ one dense multitask (MT,
                   one-hot task id) update on the same total batch, N = 5 and 10, IQL, SAC and BCQ
                   at Table-5 sizes (benchmarks/bench_multitask.py's algorithms, sizes and masks).
2. ``loop``        the same NPF network update batched over tasks (MultitaskLearner: one stacked
                   ``[N, B]`` forward/backward, one optimizer step) ÷ a naive per-task loop in plain
                   torch (task n's batch through θ ⊙ m_n, its loss, backward accumulating into θ;
                   one optimizer step). Same weights, masks and batch: the summed gradients are
                   checked equal before timing.
3. ``collect``     ``npf.stages.dataset.collect_episodes`` with a random SAC actor's stochastic
                   policy (transitions/s) ÷ the same envs stepped with random actions in a tight
                   loop (env steps/s), 10 envs, cheetah/forward and mt10/reach.
4. ``online``      a short SAC+NPF online run (``train_online``, default config's online block)
                   env steps/s — whole loop, and its collection part only — ÷ a
                   ``gymnasium.vector.SyncVectorEnv`` of the same envs stepped with random actions;
                   and the whole loop's env steps/s ÷ the env steps/s its updates alone would allow
                   at the same update-to-data ratio (the run's updates timed again, back to back on
                   pre-drawn batches, with the same networks and pathways, each phase at its count).
5. ``export``      the exported per-task policy file (``npf.export``) ÷ the same networks saved
                   densely, N = 10, SAC and IQL (benchmarks/bench_export.py).
6. ``dag``         the default DAG (``snakemake --cores 2`` in a fresh clone): no-op rerun ÷ full
                   run wall time (``--skip-dag`` skips it; ``--dag-log`` reads earlier timings).
7. ``roofline``    FLOPs of one update ÷ (update time × GEMM rate at the layer shape), SAC, IQL and
                   BCQ at [256, 256] and [1024, 1024], dense single-task and NPF 5-task
                   (benchmarks/roofline.py; on the CPU, 1 thread unless ``--threads``).
8. ``peers``       npf SAC env steps/s ÷ Stable-Baselines3 SAC at equal settings (benchmarks/bench_peers.py;
                   skipped with one line under the table when the ``bench`` extra is not installed).

Timing: interleaved rounds, medians (bench_multitask.interleaved). Rows 1-2 use process CPU time
with one torch thread on CPU (wall time otherwise, and always on CUDA, synchronized); rows 3-4 use
wall time. Ratios are of medians; the cells behind them give median (best).

Run: ``python benchmarks/run_all.py [--quick] [--skip-dag] [--only SECTION ...] [--device auto|cpu|cuda]
[--out reports/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_export  # noqa: E402
import bench_multitask as bm  # noqa: E402
import bench_peers  # noqa: E402
import roofline  # noqa: E402
from common import cpu_model, git_commit, shown  # noqa: E402

from npf.multitask import MultitaskLearner, obs_dim_for  # noqa: E402
from npf.nets import resolve_device  # noqa: E402
from npf.pathways import Pathways  # noqa: E402

ALGOS = ("iql", "sac", "bcq")
TASKS = (5, 10)
LOOP_NETS = ("SAC critic [400,400,400]", "IQL critic [1024,1024]")
LOOP_TASKS = 10
COLLECT = (("cheetah", "forward"), ("mt10", "reach"))
COLLECT_ENVS = 10
EXPORT = (("sac", 10), ("iql", 10))
GRAD_TOL = 1e-5
#: quick / full settings: (rounds, warm-up) of the update timings, collection rounds and episodes,
#: raw vector-env rounds, overrides of the default config's online block.
QUICK = dict(
    rounds=2,
    warmup=1,
    collect_rounds=2,
    collect_episodes=10,
    vec_rounds=2,
    online={
        "total_steps": 450,
        "learning_starts": 150,
        "pretrain_steps": 300,
        "eval_interval": 450,
        "checkpoint_every": 450,
        "log_every": 150,
        "grad_norm_every": 150,
    },
    peer_steps=50,
    peer_rounds=2,
    roofline_hidden=(256,),
    roofline_rounds=(2, 1),
)
FULL = dict(
    rounds=9,
    warmup=2,
    collect_rounds=7,
    collect_episodes=20,
    vec_rounds=7,
    # the networks and batch of config/mt10_online_small.yaml (Table 4) on the default config's two
    # MT10 tasks: at the default's smoke-scale [64, 64] the loop's fixed costs dominate any update
    online={
        "total_steps": 3000,
        "learning_starts": 450,
        "pretrain_steps": 1000,
        "batch_size": 128,
        "eval_interval": 1500,
        "checkpoint_every": 1500,
        "log_every": 500,
        "grad_norm_every": 250,
        "sac": {"hidden": [256, 256], "optimizer": "adamw"},
    },
    peer_steps=300,
    peer_rounds=5,
    roofline_hidden=roofline.HIDDEN,
    roofline_rounds=(5, 1),
)


def log(msg: str) -> None:
    print(f"[run_all] {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    label: str
    ratio: float
    num: str  # the numerator: median (best)
    den: str  # the denominator
    note: str = ""


# ------------------------------------------------------------------------------------ timing
CPU = torch.device("cpu")


def timed(fns, rounds, warmup, device=CPU, wall=False):
    """{name: (median ms, min ms)}: bench_multitask.interleaved; on CUDA every call is
    synchronized and timed by wall clock."""
    if device.type == "cuda":
        fns = {k: (lambda f=f: (f(), torch.cuda.synchronize(device))) for k, f in fns.items()}
        wall = True
    return bm.interleaved(fns, rounds, warmup, now=time.perf_counter if wall else None)


def ms(t) -> str:
    return f"{t[0]:.1f} ms ({t[1]:.1f})"


def rate(n, t) -> tuple[float, float]:
    """(median, best) per second of ``n`` items done in (median ms, min ms)."""
    return n / (t[0] / 1e3), n / (t[1] / 1e3)


def per_s(r, unit) -> str:
    return f"{r[0]:,.0f} {unit}/s ({r[1]:,.0f})"


def to_device(batches, device):
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


# ------------------------------------------------------------------- 1. NPF update ÷ MT update
def make_algo_on(name, obs_dim, act_dim, N, device):
    """bench_multitask.make_algo (Table-5 sizes, seed 0), built on ``device``."""
    algo = bm.make_algo(name, obs_dim, act_dim, N)
    if device.type == "cpu":
        return algo
    kw = {"num_temperatures": N} if name == "sac" else {}
    return type(algo)(obs_dim, act_dim, algo.cfg, device=device, seed=0, **kw)


def update_row(name, N, B, rounds, warmup, device) -> Row:
    """bench_multitask.bench_algo's setup (random data, SNIP masks keep 5 %, SAC averaged over tasks,
    IQL/BCQ summed), only ``mt`` and ``npf-auto``, on ``device``."""
    obs_dim, act_dim = bm.SIZES[N]
    reduce = "mean" if name == "sac" else "sum"
    data = to_device(bm.random_batches(N, B, obs_dim, act_dim, seed=1), device)
    mt = MultitaskLearner(make_algo_on(name, obs_dim_for("mt", obs_dim, N), act_dim, N, device), "mt", N, reduce=reduce)
    probe = make_algo_on(name, obs_dim, act_dim, N, device)
    pw = Pathways.discover(
        probe, to_device(bm.random_batches(N, B, obs_dim, act_dim, seed=2), device), keep_ratio=bm.KEEP
    )
    npf = MultitaskLearner(make_algo_on(name, obs_dim, act_dim, N, device), "npf", N, pw, reduce=reduce, backend="auto")
    r = timed({"mt": lambda: mt.update(data), "npf": lambda: npf.update(data)}, rounds, warmup, device)
    return Row(
        update_label(name, N),
        r["npf"][0] / r["mt"][0],
        ms(r["npf"]),
        ms(r["mt"]),
        f"batch {B}/task; num = NPF auto, den = MT",
    )


def update_label(name, N):
    return f"NPF update ÷ MT update, {name.upper()} N={N}"


# -------------------------------------------------------------- 2. batched ÷ per-task loop
class PerTaskLoop:
    """The naive NPF update of one MLP (ReLU hidden layers, linear output, MSE loss): for each task
    n, task n's batch through θ ⊙ m_n in plain torch, its mean loss, backward accumulating into θ;
    then one Adam step. Starts from a copy of ``net``'s weights and uses its attached masks
    (``MaskedLinear.weight_mask``, float ``[N, out, in]``)."""

    def __init__(self, net: nn.Module, lr: float):
        layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
        acts = [m for m in net.modules() if not isinstance(m, nn.Linear) and not list(m.children())]
        if not all(isinstance(a, nn.ReLU) for a in acts) or len(acts) != len(layers) - 1:
            raise ValueError("PerTaskLoop: expects Linear/ReLU layers with a linear output")
        if any(lay.weight_mask is None for lay in layers):
            raise ValueError("PerTaskLoop: attach the pathways to the network first")
        self.weights = [lay.weight.detach().clone().requires_grad_(True) for lay in layers]
        self.biases = [lay.bias.detach().clone().requires_grad_(True) for lay in layers]
        self.masks = [lay.weight_mask for lay in layers]
        self.opt = torch.optim.Adam(self.weights + self.biases, lr=lr)

    def forward(self, x, n: int):
        last = len(self.weights) - 1
        for i, (w, b, m) in enumerate(zip(self.weights, self.biases, self.masks)):
            x = F.linear(x, w * m[n], b)
            if i < last:
                x = F.relu(x)
        return x

    def backward(self, batches) -> None:
        """Σ_n ∇ mean-MSE_n accumulated into the weights' ``.grad`` (task by task)."""
        for n, b in enumerate(batches):
            F.mse_loss(self.forward(b["x"], n), b["y"]).backward()

    def update(self, batches) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.backward(batches)
        self.opt.step()

    def grads(self) -> list:
        return [p.grad for pair in zip(self.weights, self.biases) for p in pair]


def batched_learner(in_dim, hidden, out_dim, N, x, y, device, seed=0):
    """bench_multitask.Regression through MultitaskLearner (``npf``, ``auto`` backend, ``reduce="sum"``:
    loss = Σ_n mean-MSE_n, as the loop's), SNIP masks (keep 5 %) from each task's batch."""
    torch.manual_seed(seed)
    algo = bm.Regression(in_dim, hidden, out_dim)
    algo.net.to(device)
    probe = bm.Regression(in_dim, hidden, out_dim)
    probe.net.to(device)
    pw = Pathways.discover(probe, [{"x": x[n], "y": y[n]} for n in range(N)], keep_ratio=bm.KEEP)
    return MultitaskLearner(algo, "npf", N, pw, reduce="sum", backend="auto")


def gradient_gap(learner: MultitaskLearner, loop: PerTaskLoop, x, y) -> float:
    """max |∇θ batched − ∇θ loop| ÷ max(1, max |∇θ|) on one batch (no optimizer step; grads cleared)."""
    net = learner.algo.net
    params = [p for lay in net.modules() if isinstance(lay, nn.Linear) for p in (lay.weight, lay.bias)]
    for p in params + loop.weights + loop.biases:
        p.grad = None
    learner.losses({"x": x, "y": y})["net"].backward()
    loop.backward([{"x": x[n], "y": y[n]} for n in range(x.shape[0])])
    gap = scale = 0.0
    for a, b in zip([p.grad for p in params], loop.grads()):
        gap = max(gap, float((a - b).abs().max()))
        scale = max(scale, float(b.abs().max()))
    for p in params + loop.weights + loop.biases:
        p.grad = None
    return gap / max(1.0, scale)


def loop_problem(name, N, B, device):
    """Sizes of bench_multitask.NETS[name] (critic: input obs + act, one output) and random data."""
    hidden, out_dim = bm.NETS[name]
    obs_dim, act_dim = bm.SIZES[N]
    in_dim = obs_dim + (act_dim if out_dim == 1 else 2 * act_dim)
    out_dim = out_dim or act_dim
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, B, in_dim, generator=g).to(device)
    y = torch.randn(N, B, out_dim, generator=g).to(device)
    return in_dim, hidden, out_dim, x, y


def loop_row(name, N, B, rounds, warmup, device) -> Row:
    in_dim, hidden, out_dim, x, y = loop_problem(name, N, B, device)
    learner = batched_learner(in_dim, hidden, out_dim, N, x, y, device)
    loop = PerTaskLoop(learner.algo.net, lr=learner.algo.opt.param_groups[0]["lr"])
    gap = gradient_gap(learner, loop, x, y)
    if not gap <= GRAD_TOL:
        raise AssertionError(f"{name}: batched and per-task-loop gradients differ by {gap:.2e} (> {GRAD_TOL})")
    stacked, per_task = {"x": x, "y": y}, [{"x": x[n], "y": y[n]} for n in range(N)]
    r = timed(
        {"batched": lambda: learner.update(stacked), "loop": lambda: loop.update(per_task)}, rounds, warmup, device
    )
    return Row(
        loop_label(name, N),
        r["batched"][0] / r["loop"][0],
        ms(r["batched"]),
        ms(r["loop"]),
        f"forward+MSE+backward+Adam, batch {B}/task; gradients equal to {gap:.1e}",
    )


def loop_label(name, N):
    return f"batched ÷ per-task loop, {name} N={N}"


# ------------------------------------------------------------------ 3. collection ÷ raw env
def random_actor_policy(obs_dim, act_dim, hidden, device, seed=0):
    """A randomly initialised SAC actor's stochastic policy, built as collect_dataset builds the
    expert's: obs [E, obs_dim] (numpy) → actions [E, act_dim] (numpy)."""
    from npf.algos.sac import SAC, SACConfig

    actor = SAC(obs_dim, act_dim, SACConfig(hidden=list(hidden)), device=device, seed=seed).actor
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    def stochastic(o):
        with torch.no_grad():
            return actor(torch.as_tensor(o, device=device), generator=gen, with_log_prob=False)[0].cpu().numpy()

    return stochastic


def step_random(envs, steps: int, seed: int) -> int:
    """Step every env ``steps`` times with uniform random actions (reset on done); returns the
    number of env steps."""
    rng = np.random.default_rng(seed)
    low, high = envs[0].action_space.low, envs[0].action_space.high
    for i, env in enumerate(envs):
        env.reset(seed=seed + i)
    for _ in range(steps):
        acts = rng.uniform(low, high, size=(len(envs), len(low))).astype(np.float32)
        for env, a in zip(envs, acts):
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
    return steps * len(envs)


def collect_row(suite, task, n_envs, episodes, rounds, hidden, device) -> Row:
    from npf.envs import make_env
    from npf.stages.dataset import collect_episodes

    envs = [make_env(suite, task) for _ in range(n_envs)]
    try:
        obs_dim, act_dim = envs[0].observation_space.shape[0], envs[0].action_space.shape[0]
        policy = random_actor_policy(obs_dim, act_dim, hidden, device)
        transitions = len(collect_episodes(policy, envs, episodes, seed=0)["rewards"])  # also the warm-up
        steps = transitions // n_envs
        r = timed(
            {
                "collect": lambda: collect_episodes(policy, envs, episodes, seed=0),
                "raw": lambda: step_random(envs, steps, seed=1),
            },
            rounds,
            0,
            wall=True,
        )
    finally:
        for env in envs:
            env.close()
    col, raw = rate(transitions, r["collect"]), rate(steps * n_envs, r["raw"])
    return Row(
        collect_label(suite, task),
        col[0] / raw[0],
        per_s(col, "transitions"),
        per_s(raw, "steps"),
        f"{n_envs} envs, {episodes} episodes = {transitions} transitions; actor {list(hidden)} on {device.type}",
    )


def collect_label(suite, task):
    return f"collection ÷ raw env steps, {suite}/{task}"


# ------------------------------------------------------------------ 4. online loop ÷ raw vector env
@contextlib.contextmanager
def _env_var(key, value):
    saved = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def online_run(overrides: dict, device, threads: int, rounds: int) -> tuple[dict, dict, float]:
    """A SAC+NPF online run on mt10 with the default config (``online`` block ``overrides``) in a
    temporary results dir (MLflow: a sqlite file there); returns (config, summary, seconds its
    updates take alone: :func:`pure_update_seconds`)."""
    from npf.config import load
    from npf.online.stages import train_online

    with tempfile.TemporaryDirectory(prefix="npf-bench-online-") as tmp:
        cfg = load(
            ROOT / "config" / "config.yaml",
            {
                "results_dir": str(Path(tmp) / "results"),
                "device": str(device),
                "torch_threads": threads,
                "online": overrides,
            },
        )
        with _env_var("MLFLOW_TRACKING_URI", f"sqlite:///{Path(tmp) / 'mlflow.db'}"):
            summary = train_online(cfg, "mt10", "sac-npf", 0, Path(tmp) / "run")
        pure = pure_update_seconds(cfg, Path(tmp) / "run" / "final.pt", summary, rounds)
    return cfg, summary, pure


def pure_update_seconds(cfg: dict, final_path: Path, summary: dict, rounds: int, batches: int = 20) -> float:
    """Seconds the run's updates take back to back: the pretraining copies' update (stacked per-task
    networks on their pathways) × the updates before the merge, plus the shared network's update
    (N pathways) × those after, each the median over ``rounds`` rounds of ``batches`` updates on
    pre-drawn ``[N, B]`` batches (random rows; update cost does not depend on the values)."""
    from npf.online.agent import OnlineAgent
    from npf.online.evaluate import load_online_agent
    from npf.online.settings import online_settings
    from npf.online_buffers import TaskReplay

    device = resolve_device(cfg["device"])
    shared, saved = load_online_agent(cfg, final_path, device)
    settings = online_settings(cfg)
    n, obs_dim, act_dim = len(saved["tasks"]), saved["obs_dim"], saved["act_dim"]
    gen = torch.Generator(device=device).manual_seed(0)
    replay = TaskReplay(n, 4 * settings.batch_size, obs_dim, act_dim, device)
    k = replay.capacity
    replay.add(
        obs=torch.randn(n, k, obs_dim),
        act=torch.rand(n, k, act_dim) * 2 - 1,
        rew=torch.randn(n, k),
        next_obs=torch.randn(n, k, obs_dim),
        done=torch.zeros(n, k),
    )
    drawn = [replay.sample(settings.batch_size, gen) for _ in range(batches)]

    def updates(agent):
        for batch in drawn:
            agent.update(batch)

    fns = {"shared": partial(updates, shared)}
    merged_at = (summary.get("dapd") or {}).get("merged_at_update") or 0
    if merged_at:
        copies = OnlineAgent("sac-npf", n, obs_dim, act_dim, settings, device, 0, None, cfg.get("pathway_backend"))
        copies.set_pathways(shared.pathways)
        fns["copies"] = partial(updates, copies)
    t = timed(fns, rounds, 1, device, wall=True)
    per_update = {k: v[0] / 1e3 / batches for k, v in t.items()}
    return per_update["shared"] * (summary["updates"] - merged_at) + per_update.get("copies", 0.0) * merged_at


def vector_env_steps(venv, steps: int) -> None:
    venv.reset(seed=0)
    for _ in range(steps):
        venv.step(venv.action_space.sample())


ONLINE_LABELS = (
    "online loop ÷ raw vector env, mt10 sac-npf",
    "online collection only ÷ raw vector env, mt10 sac-npf",
    "online loop ÷ its updates alone (same update-to-data ratio), mt10 sac-npf",
)


def online_rows(overrides, vec_rounds, device, threads) -> list[Row]:
    from gymnasium.vector import SyncVectorEnv

    from npf.envs import make_env

    cfg, s, pure_s = online_run(overrides, device, threads, vec_rounds)
    envs_per_task = int(cfg["online"]["envs_per_task"])
    fns = [partial(make_env, "mt10", t) for t in s["tasks"] for _ in range(envs_per_task)]
    venv = SyncVectorEnv(fns, observation_mode="different")  # each MT10 task bounds its own goal entries
    try:
        venv.action_space.seed(0)
        steps = int(s["transitions"]) // len(fns)
        r = timed({"vec": lambda: vector_env_steps(venv, steps)}, vec_rounds, 1, wall=True)["vec"]
    finally:
        venv.close()
    raw = rate(steps * len(fns), r)
    rates = s["rates"]
    where = (
        f"{len(s['tasks'])} tasks × {envs_per_task} env(s), {s['transitions']} transitions, "
        f"{s['updates']} updates ({rates['updates_per_s']:.0f} updates/s), "
        f"loop's own env-step time alone {rates['raw_env_steps_per_s']:,.0f} steps/s"
    )
    return [
        Row(
            ONLINE_LABELS[0],
            rates["env_steps_per_s"] / raw[0],
            f"{rates['env_steps_per_s']:,.0f} steps/s",
            per_s(raw, "steps"),
            "whole loop (acting, env, replay, updates, DAPD, evals, checkpoints); " + where,
        ),
        Row(
            ONLINE_LABELS[1],
            rates["collect_env_steps_per_s"] / raw[0],
            f"{rates['collect_env_steps_per_s']:,.0f} steps/s",
            per_s(raw, "steps"),
            "acting + env steps + replay writes only",
        ),
        Row(
            ONLINE_LABELS[2],
            pure_s / rates["wall_s"],
            f"{rates['env_steps_per_s']:,.0f} steps/s",
            f"{s['transitions'] / pure_s:,.0f} steps/s",
            f"the run's {s['updates']} updates alone take {pure_s:.1f} s of its {rates['wall_s']:.1f} s wall "
            f"(goal ≥ 0.8); time by part (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["timing_s"].items()),
        ),
    ]


# ------------------------------------------------------------------ 5. exported size ÷ dense
def export_row(name, N) -> Row:
    info, _, _ = bench_export.bench_one(name, N, calls=2, rounds=1)  # the sizes; latency not reported here
    share = f"{info['nnz']:,} / {info['dense']:,} ({100 * info['nnz'] / info['dense']:.1f}%)"
    return Row(
        export_label(name, N),
        info["bytes"] / info["dense_bytes"],
        f"{info['bytes']:,} B",
        f"{info['dense_bytes']:,} B",
        f"task 0 of {N}; actor weights kept {share}",
    )


def export_label(name, N):
    return f"exported pathway size ÷ dense policy, {name.upper()} N={N}"


# ------------------------------------------------------------------ 7. roofline, 8. peers
ROOFLINE_TASKS = (None, 5)  # dense single-task, NPF 5-task


def roofline_row(name, h, N, rounds, warmup, fused_adam=False) -> Row:
    r = roofline.measure(name, h, N, rounds, warmup, fused_adam=fused_adam)
    return Row(
        r.label,
        r.ratio,
        f"{r.achieved:.0f} GFLOP/s ({r.update_ms[0]:.1f} ms × {r.flops / 1e9:.2f} GFLOP)",
        f"{r.gemm_rate:.0f} GFLOP/s GEMM",
        "update FLOPs ÷ (update time × GEMM rate at the layer shape) ²",
    )


PEERS = {  # bench_peers learner → row label
    "npf": "SAC env steps/s, npf ÷ Stable-Baselines3, HalfCheetah-v5 (actor every update)",
    "npf-delay2": "SAC env steps/s, npf (policy_delay 2) ÷ Stable-Baselines3, HalfCheetah-v5",
    "npf-fused": "SAC env steps/s, npf with fused Adam ÷ Stable-Baselines3, HalfCheetah-v5 (actor every update)",
    "npf-delay2-fused": "SAC env steps/s, npf with fused Adam (policy_delay 2) ÷ Stable-Baselines3, HalfCheetah-v5",
}
PEER_LABELS = tuple(PEERS.values())


def peer_rows(steps, rounds) -> list[Row]:
    r = bench_peers.measure(steps, rounds)
    note = f"[256, 256], batch 256, 1 update/step, {steps} steps/round ³"
    sb3 = per_s(r["sb3"], "steps")
    return [Row(lab, r[k][0] / r["sb3"][0], per_s(r[k], "steps"), sb3, note) for k, lab in PEERS.items()]


ROOFLINE_NOTE = (
    "² Roofline (benchmarks/roofline.py): FLOPs of one update counted by "
    "torch.utils.flop_counter.FlopCounterMode ÷ (update time × the GEMM rate measured interleaved "
    "with it, same thread count, at the update's hidden-layer shape [B, h] @ [h, h] or the NPF "
    "[N, B, h] @ [N, h, h] bmm). All hidden layers h wide, batch 256 per task, SAC actor every update, "
    "NPF: N = 5 tasks, masked-dense backend, SNIP masks keeping 5 %. `compile: off`; rows marked 'fused Adam' "
    "with `fused_adam: true` (the optimizers' fused kernel instead of foreach)."
)
PEER_NOTE = (
    "³ Peers (benchmarks/bench_peers.py): npf SAC and Stable-Baselines3 SAC on HalfCheetah-v5, equal settings "
    "(one env, lr 1e-3, τ 0.005, learned temperature, target every step), env steps ÷ process CPU time of "
    "interleaved rounds."
)


# ------------------------------------------------------------------ 6. default DAG
DAG_LABEL = "default DAG: no-op rerun ÷ full run (wall)"


def _snakemake_bin() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else (shutil.which("snakemake") or "snakemake")


def dag_times(cores: int) -> tuple[float, float]:
    """Wall seconds of ``snakemake --cores N`` in a fresh clone of HEAD (default config), then of the
    same command again (must say "Nothing to be done"). ``scontrol`` is stubbed to fail so that the
    Slurm plugin does not wait for a controller; MLflow logs to the clone's own sqlite store."""
    with tempfile.TemporaryDirectory(prefix="npf-bench-dag-") as tmp:
        clone, stub = Path(tmp) / "repo", Path(tmp) / "bin"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        stub.mkdir()
        (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (stub / "scontrol").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(PATH=f"{stub}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(clone))
        cmd = [_snakemake_bin(), "--cores", str(cores)]
        times, output = [], ""
        for which in ("full run", "no-op rerun"):
            log(f"dag: {' '.join(cmd)} ({which}) in {clone}")
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            output = p.stdout + p.stderr
            if p.returncode != 0:
                tail = " | ".join(output.strip().splitlines()[-3:])
                raise RuntimeError(f"snakemake ({which}) exited {p.returncode}: {tail}")
        if "Nothing to be done" not in output:
            raise RuntimeError("the rerun was not a no-op (its output has no 'Nothing to be done')")
    return times[0], times[1]


def parse_time_log(path) -> float:
    """Seconds of ``Elapsed (wall clock) time (h:mm:ss or m:ss): ...`` in a ``/usr/bin/time -v`` log."""
    m = re.search(r"Elapsed \(wall clock\) time(?: \([^)]*\))?:\s*([0-9:.]+)", Path(path).read_text())
    if not m:
        raise ValueError(f"{path}: no 'Elapsed (wall clock) time' line (a /usr/bin/time -v log?)")
    secs = 0.0
    for part in m.group(1).split(":"):
        secs = secs * 60 + float(part)
    return secs


def hms(s: float) -> str:
    return f"{int(s // 60)}:{s % 60:04.1f} (m:ss)"


# ------------------------------------------------------------------------------------ report
def header(args, argv, device, settings) -> list[str]:
    dev = (
        f"CUDA {torch.cuda.get_device_name(device)} (host CPU {cpu_model()})"
        if device.type == "cuda"
        else f"CPU {cpu_model()}"
    )
    return [
        "# NPF benchmarks (issue #8)",
        "",
        f"- device: {dev}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch thread(s)",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- git commit: {git_commit()}; torch {torch.__version__}; Python {platform.python_version()}",
        f"- mode: {'quick' if args.quick else 'full'} ({settings['rounds']} interleaved rounds after "
        f"{settings['warmup']} warm-up for updates, {settings['collect_rounds']} for collection, "
        f"{settings['vec_rounds']} for the vector env)",
        f"- command: `python benchmarks/{Path(__file__).name} {' '.join(shown(a) for a in argv)}`",
        "",
        "Ratio = numerator ÷ denominator of the medians (so < 1: the first is faster / smaller for times and "
        "sizes, slower for rates). Cells: median (best). Update times (rows 1-2): "
        + (
            "wall time, CUDA-synchronized"
            if device.type == "cuda"
            else "process CPU time"
            if torch.get_num_threads() == 1
            else "wall time"
        )
        + "; env rates (rows 3-4): wall time; env stepping runs on the CPU whatever the device.",
        "",
    ]


def table(rows: list[Row]) -> list[str]:
    out = ["| # | measurement | ratio | numerator | denominator | notes |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        out.append(f"| {i} | {r.label} | {r.ratio:.3g} | {r.num} | {r.den} | {r.note} |")
    return out


def sections(device, settings):
    """(name, [row labels], function, args) of every section but the DAG, in order; the function
    returns one Row or a list of them."""
    from npf.config import load

    B, rounds, warmup = 256, settings["rounds"], settings["warmup"]
    hidden = load(ROOT / "config" / "config.yaml")["experts"]["sac"]["hidden"]  # the default experts' actor
    out = [
        (f"update {name} N={N}", [update_label(name, N)], update_row, (name, N, B, rounds, warmup, device))
        for name in ALGOS
        for N in TASKS
    ]
    out += [
        (f"loop {name}", [loop_label(name, LOOP_TASKS)], loop_row, (name, LOOP_TASKS, B, rounds, warmup, device))
        for name in LOOP_NETS
    ]
    out += [
        (
            f"collect {suite}/{task}",
            [collect_label(suite, task)],
            collect_row,
            (suite, task, COLLECT_ENVS, settings["collect_episodes"], settings["collect_rounds"], hidden, device),
        )
        for suite, task in COLLECT
    ]
    out.append(
        (
            "online mt10 sac-npf",
            list(ONLINE_LABELS),
            online_rows,
            (settings["online"], settings["vec_rounds"], device, torch.get_num_threads()),
        )
    )
    out += [(f"export {name} N={N}", [export_label(name, N)], export_row, (name, N)) for name, N in EXPORT]
    out += [
        (
            f"roofline {name} h={h} N={N}" + (" fused Adam" if fused else ""),
            [roofline.label(name, h, N, fused)],
            roofline_row,
            (name, h, N, *settings["roofline_rounds"], fused),
        )
        for name in ALGOS
        for h in settings["roofline_hidden"]
        for N in ROOFLINE_TASKS
        for fused in (False, True)
    ]
    if bench_peers.available():
        out.append(("peers sac", list(PEER_LABELS), peer_rows, (settings["peer_steps"], settings["peer_rounds"])))
    return out


def run_section(labels, fn, fn_args) -> list[Row]:
    got = fn(*fn_args)
    got = [got] if isinstance(got, Row) else list(got)
    if [r.label for r in got] != labels or not all(math.isfinite(r.ratio) and r.ratio > 0 for r in got):
        raise RuntimeError(
            f"produced {[(r.label, r.ratio) for r in got]}, expected rows {labels} with positive finite ratios"
        )
    return got


def dag_rows(args) -> tuple[list[Row], list[str]]:
    """The DAG row (measured, or read from ``--dag-log`` files) and the lines under the table."""
    stub = (
        "¹ Default DAG: `snakemake --cores {c}` (config/config.yaml) in a fresh `git clone` of HEAD, "
        'PYTHONPATH = the clone, then the same command again (a no-op: "Nothing to be done"). '
        "`scontrol` was replaced by a stub that exits 1 (the Slurm plugin otherwise waits ~10 s "
        "probing slurmctld)."
    )
    if args.dag_log:
        full = parse_time_log(args.dag_log[0])
        note = f"from log {shown(args.dag_log[0])}, not measured in this run"
        lines = [f"Default DAG wall time: {hms(full)} — {note}."]
        if len(args.dag_log) == 1:
            return [], lines
        rerun = parse_time_log(args.dag_log[1])
        return [
            Row(
                DAG_LABEL,
                rerun / full,
                f"{rerun:.1f} s",
                f"{full:.1f} s ({hms(full)})",
                f"from logs {shown(args.dag_log[0])} (full), {shown(args.dag_log[1])} (rerun); "
                "NOT measured in this run",
            )
        ], lines
    if args.skip_dag:
        return [], ["Default DAG: skipped (--skip-dag)."]
    full, rerun = dag_times(args.dag_cores)
    return [
        Row(
            DAG_LABEL,
            rerun / full,
            f"{rerun:.1f} s",
            f"{full:.1f} s ({hms(full)})",
            f"measured in this run, --cores {args.dag_cores} ¹",
        )
    ], [stub.format(c=args.dag_cores)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rounds, short runs (~2 min without the DAG)")
    ap.add_argument("--skip-dag", action="store_true", help="do not run the default DAG (tens of minutes)")
    ap.add_argument(
        "--dag-log",
        nargs="+",
        metavar="PATH",
        help="instead of running the DAG: /usr/bin/time -v log of a full run [and of the no-op rerun]",
    )
    ap.add_argument("--dag-cores", type=int, default=2)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (npf.nets.resolve_device)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--only",
        nargs="+",
        metavar="SECTION",
        help="run only the sections whose names start with these words (update, loop, collect, "
        "online, export, roofline, peers); implies --skip-dag",
    )
    ap.add_argument("--out", default=str(ROOT / "reports" / "benchmarks.md"))
    args = ap.parse_args(argv)
    if args.dag_log and len(args.dag_log) > 2:
        ap.error("--dag-log takes one or two paths (full run, then the no-op rerun)")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    rows: list[Row] = []
    failed: list[str] = []

    def attempt(name, thunk):
        """thunk() or None; a failure is printed as one line naming the section and remembered."""
        try:
            return thunk()
        except Exception as e:
            failed.append(name)
            msg = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"run_all: section {name!r} FAILED: {type(e).__name__}: {msg}", file=sys.stderr, flush=True)
            if os.environ.get("NPF_BENCH_TRACEBACK"):
                traceback.print_exc()
            return None

    plan = sections(device, settings)
    if args.only:
        args.skip_dag = True
        plan = [p for p in plan if p[0].split()[0] in args.only]
        if not plan:
            ap.error(f"--only: no section named {' or '.join(args.only)}")
    for i, (name, labels, fn, fn_args) in enumerate(plan, 1):
        log(f"({i}/{len(plan)}) {name} ...")
        t0 = time.perf_counter()
        got = attempt(name, lambda: run_section(labels, fn, fn_args))  # noqa: B023 (called at once)
        if got is not None:
            rows += got
            log(f"    ratio {', '.join(f'{r.ratio:.3g}' for r in got)}  ({time.perf_counter() - t0:.0f} s)")
    notes: list[str] = []
    if failed and not (args.skip_dag or args.dag_log):
        log("dag: not run (an earlier section failed)")
    else:
        log("dag ..." if not (args.skip_dag or args.dag_log) else "dag: not run here")
        got = attempt("dag", lambda: dag_rows(args))
        if got is not None:
            rows += got[0]
            notes = got[1]
    if failed:
        print(
            f"run_all: {len(failed)} section(s) failed ({', '.join(failed)}); nothing written to {args.out}",
            file=sys.stderr,
        )
        return 1
    labels = {r.label for r in rows}
    notes += [ROOFLINE_NOTE] if any(lab.startswith("roofline") for lab in labels) else []
    notes += [PEER_NOTE] if labels & set(PEER_LABELS) else []
    if not bench_peers.available() and (not args.only or "peers" in args.only):
        notes.append(f"Stable-Baselines3 rows skipped: {bench_peers.MISSING}.")
    lines = header(args, sys.argv[1:] if argv is None else argv, device, settings) + table(rows) + [""] + notes
    lines.append(f"\nTotal benchmark time: {time.perf_counter() - t_start:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
