"""Did a quadruped policy do the task it is named for? Return *and* the task's own measure.

The return alone can mislead on this suite: a uniformly random A1 falls within ~150 steps, so any
policy that merely stays up "beats random"; standing still earns 35-50 % of the maximum return.
This module rolls a policy out and reports, besides the return, what the task asks for:
forward/backward displacement (pace), lateral displacement in each half (sidestep), the heading
reached and the vertical trunk speed (hop-turn). Baselines: ``random`` (uniform actions),
``stand`` (a = 0) and ``trot-forward`` / ``trot-backward`` (:func:`trot_action`, a hand-made
open-loop diagonal trot).

    python -m npf.envs.quadruped_check pace-forward results/.../policy.pt random stand --episodes 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from npf.envs.quadruped import DT, QUADRUPED_TASKS, A1MultitaskEnv

BASELINES = ("random", "stand", "trot-forward", "trot-backward")


def trot_action(k: int, direction: float = 1.0, freq_hz: float = 2.0, amplitude: float = 0.5) -> np.ndarray:
    """Open-loop diagonal trot at control step k: legs FR+RL and FL+RR swing in antiphase; the
    thigh swings by ``amplitude`` (in action units), the calf folds during the swing half.
    ``direction`` +1 walks forward, −1 backward (≈ +0.18 / −0.31 m/s on flat ground)."""
    phase = 2.0 * math.pi * freq_hz * k * DT
    a = np.zeros(12)
    for leg, offset in ((0, 0.0), (3, 0.0), (1, math.pi), (2, math.pi)):  # FR, RL | FL, RR
        a[3 * leg + 1] = -direction * amplitude * math.sin(phase + offset)
        a[3 * leg + 2] = -amplitude * max(math.cos(phase + offset), 0.0)
    return a


def rollout(env: A1MultitaskEnv, act, seed: int) -> dict:
    """One episode of ``act(k, obs) -> action`` (at most ``env.episode_steps`` steps); the
    return and the task measures, from ``info``."""
    obs, _ = env.reset(seed=seed)
    ret, infos = 0.0, []
    for k in range(env.episode_steps):
        obs, r, terminated, _, info = env.step(act(k, obs))
        ret += r
        infos.append(info)
        if terminated:
            break
    half = env.episode_steps // 2
    y_half = infos[min(half, len(infos)) - 1]["y_position"]
    yaws = np.array([i["yaw"] for i in infos])
    return {
        "return": ret,
        "steps": len(infos),
        "fell": bool(infos[-1]["fell"]),
        "x": infos[-1]["x_position"],
        "y": infos[-1]["y_position"],
        "vx": infos[-1]["x_position"] / (len(infos) * DT),
        "y_first_half": y_half,
        "y_second_half": infos[-1]["y_position"] - y_half if len(infos) > half else 0.0,
        "yaw_max": float(yaws.max()),
        "yaw_final": float(yaws[-1]),
        "abs_vz": float(np.mean([abs(i["velocity_z"]) for i in infos])),
    }


def policy_fn(name: str, seed: int = 0):
    """``act(k, obs)`` of a baseline name or an expert ``policy.pt`` (deterministic action)."""
    if name == "random":
        rng = np.random.default_rng(seed)
        return lambda k, o: rng.uniform(-1.0, 1.0, 12)
    if name == "stand":
        return lambda k, o: np.zeros(12)
    if name in ("trot-forward", "trot-backward"):
        d = 1.0 if name == "trot-forward" else -1.0
        return lambda k, o: trot_action(k, d)
    import torch

    from npf.expert_policy import load_expert_policy

    pol = load_expert_policy(name)

    def act(k, o):
        with torch.no_grad():
            return pol(torch.as_tensor(o, dtype=torch.float32).unsqueeze(0), deterministic=True)[0][0].numpy()

    return act


def measure(task: str, name: str, episodes: int = 5, seed: int = 100) -> dict:
    """Mean and std of every measure over ``episodes`` episodes (reset seeds seed, seed+1, …)."""
    env = A1MultitaskEnv(task)
    act = policy_fn(name, seed)
    runs = [rollout(env, act, seed + i) for i in range(episodes)]
    env.close()
    out = {"task": task, "policy": name, "episodes": episodes}
    for key in runs[0]:
        v = np.array([r[key] for r in runs], dtype=float)
        out[key] = float(v.mean())
        out[key + "_std"] = float(v.std())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m npf.envs.quadruped_check", description=__doc__.splitlines()[0])
    p.add_argument("task", choices=list(QUADRUPED_TASKS))
    p.add_argument("policies", nargs="+", help=f"policy.pt files or baselines: {', '.join(BASELINES)}")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--json", action="store_true", help="one JSON object per policy instead of a table row")
    a = p.parse_args(argv)
    cols = ("return", "steps", "x", "y", "y_first_half", "y_second_half", "yaw_max", "yaw_final", "abs_vz")
    if not a.json:
        print("| policy | " + " | ".join(cols) + " |\n|---|" + "---:|" * len(cols))
    for name in a.policies:
        m = measure(a.task, name, a.episodes, a.seed)
        if a.json:
            print(json.dumps(m))
        else:
            print(f"| {name} | " + " | ".join(f"{m[c]:.2f} ± {m[c + '_std']:.2f}" for c in cols) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
