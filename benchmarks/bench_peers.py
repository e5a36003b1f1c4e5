"""SAC env steps/s of npf against Stable-Baselines3 at equal settings, interleaved in one run.

Both train on ``HalfCheetah-v5`` (one env), twin critics and actor [256, 256], batch 256, one
gradient step per env step, lr 1e-3, τ 0.005, γ 0.99, learned temperature, the actor and the target
updated every step (SB3's SAC has no delayed policy update; npf's default ``policy_delay: 2`` is a
second npf row). Each round runs ``steps`` training steps of every learner (acting, env step,
replay write, one update) after ``learning_starts`` random steps; the rate is env steps ÷ process
CPU time (1 torch thread), median over rounds.

Stable-Baselines3 is the optional ``bench`` extra (``pip install -e ".[bench]"``); without it
:func:`available` is False and callers skip the row with one line saying so.

Run: ``python benchmarks/bench_peers.py [--steps 300] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved

from npf.algos.sac import SAC, SACConfig
from npf.data import ReplayBuffer

ENV_ID = "HalfCheetah-v5"
HIDDEN = [256, 256]
BATCH, LR, TAU, GAMMA = 256, 1e-3, 5e-3, 0.99
LEARNING_STARTS = 1000
BUFFER = 100_000
MISSING = 'stable-baselines3 not installed (the optional `bench` extra: pip install -e ".[bench]")'


def available() -> bool:
    return importlib.util.find_spec("stable_baselines3") is not None


class NpfSAC:
    """npf's SAC in the loop of the expert stage (npf.stages.expert), reduced to one env."""

    def __init__(self, policy_delay: int, seed: int = 0, compile: str = "off", fused_adam: bool = False):
        import gymnasium as gym

        self.env = gym.make(ENV_ID)
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        cfg = SACConfig(hidden=HIDDEN, lr=LR, batch_size=BATCH, gamma=GAMMA, tau=TAU, policy_delay=policy_delay)
        self.algo = SAC(obs_dim, act_dim, cfg, seed=seed)
        self.algo.set_compile(compile, fused_adam)
        self.buffer = ReplayBuffer(BUFFER, obs_dim, act_dim)
        self.gen = torch.Generator().manual_seed(seed + 1)
        self.obs, _ = self.env.reset(seed=seed)
        self.low, self.high = self.env.action_space.low, self.env.action_space.high
        self.steps(LEARNING_STARTS, random=True)

    def steps(self, n: int, random: bool = False) -> None:
        for _ in range(n):
            if random:
                act = self.env.action_space.sample()
            else:
                with torch.no_grad():
                    a = self.algo.act(torch.as_tensor(self.obs, dtype=torch.float32)[None], deterministic=False)
                act = a[0].numpy()
            nxt, rew, term, trunc, _ = self.env.step(self.low + (act + 1) * 0.5 * (self.high - self.low))
            self.buffer.add(obs=self.obs[None], act=act[None], rew=[rew], next_obs=nxt[None], done=[float(term)])
            self.obs = self.env.reset()[0] if term or trunc else nxt
            if not random:
                self.algo.update(self.buffer.sample(BATCH, self.gen))


class Sb3SAC:
    def __init__(self, seed: int = 0):
        import gymnasium as gym
        from stable_baselines3 import SAC as SB3SAC

        self.model = SB3SAC(
            "MlpPolicy",
            gym.make(ENV_ID),
            learning_rate=LR,
            buffer_size=BUFFER,
            learning_starts=LEARNING_STARTS,
            batch_size=BATCH,
            tau=TAU,
            gamma=GAMMA,
            train_freq=1,
            gradient_steps=1,
            policy_kwargs={"net_arch": HIDDEN},
            device="cpu",
            seed=seed,
            verbose=0,
        )
        self.model.learn(LEARNING_STARTS)

    def steps(self, n: int) -> None:
        self.model.learn(n, reset_num_timesteps=False)


def measure(steps: int, rounds: int, warmup: int = 1, policy_delays=(1, 2)) -> dict[str, tuple]:
    """{learner: (median env steps/s, best)}; learners ``npf`` (policy_delay 1), ``npf-delay2``,
    the same two with ``fused_adam: true`` (``npf-fused``, ``npf-delay2-fused``), ``sb3``."""
    learners = {}
    for fused in (False, True):
        for d in policy_delays:
            name = ("npf" if d == 1 else f"npf-delay{d}") + ("-fused" if fused else "")
            learners[name] = NpfSAC(d, fused_adam=fused)
    fns = {k: (lambda lrn=lrn: lrn.steps(steps)) for k, lrn in learners.items()}
    if available():
        sb3 = Sb3SAC()
        fns["sb3"] = lambda: sb3.steps(steps)
    r = interleaved(fns, rounds, warmup)
    return {k: (steps / (t[0] / 1e3), steps / (t[1] / 1e3)) for k, t in r.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not available():
        print(f"bench_peers: SB3 column skipped: {MISSING}", file=sys.stderr)
    res = measure(args.steps, args.rounds)
    for k, (med, best) in res.items():
        extra = f"  ({med / res['sb3'][0]:.2f}× SB3)" if "sb3" in res else ""
        print(f"{k:12s} {med:8.1f} env steps/s (best {best:.1f}){extra}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
