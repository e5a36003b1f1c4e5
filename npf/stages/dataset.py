"""Stage ``datasets``: the expert's stochastic policy collects N episodes of one task.

The expert is a trained SAC policy (``experts.source: sac``; it acts by sampling a ~ π(·|s)) or
Meta-World's scripted controller of the task plus Gaussian noise (``experts.source: scripted``,
:mod:`npf.envs.scripted`). Also measures the random-policy score and the expert score (mean return
of the collected, stochastic episodes — the policy that produced the data) for normalized scores,
and the deterministic expert's return and success (SAC: its mean action; scripted: the noise-free
controller) for reference.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from npf import layout
from npf.config import section
from npf.data import save_dataset
from npf.envs import env_id, episode_length, is_success_suite, make_env
from npf.envs.scripted import scripted_policy, scripted_policy_name, with_gaussian_noise
from npf.evaluate import weak_expert
from npf.expert_policy import check_expert_policy, load_expert_policy
from npf.nets import resolve_device
from npf.progress import Progress
from npf.rollout import EnvPool, evaluate_policy
from npf.tracking import stage_tracker


def collect_episodes(policy, envs, episodes: int, seed: int, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Exactly ``episodes`` full episodes spread over ``envs``; returns the transition arrays."""
    pool = EnvPool(envs, seed)
    quota = [episodes // len(envs) + (1 if i < episodes % len(envs) else 0) for i in range(len(envs))]
    per_env: list[dict[str, list]] = [{k: [] for k in ("o", "a", "r", "o2", "te", "tr")} for _ in envs]
    returns: list[float] = []
    obs = pool.reset()
    while any(pool.episodes[i] < quota[i] for i in range(len(envs))):
        active = [pool.episodes[i] < quota[i] for i in range(len(envs))]
        actions = policy(obs)
        res = pool.step(actions)
        for i in range(len(envs)):
            if not active[i]:
                continue
            d = per_env[i]
            d["o"].append(obs[i])
            d["a"].append(actions[i])
            d["r"].append(res.reward[i])
            d["o2"].append(res.final_obs[i])
            d["te"].append(res.terminated[i])
            d["tr"].append(res.truncated[i] and not res.terminated[i])
        for i, ret, _, _ in res.finished:
            if active[i]:
                returns.append(ret)
        if progress is not None:
            progress.update(sum(active), episodes=len(returns))
        obs = res.next_obs
    cat = lambda key, dtype: np.concatenate([np.asarray(d[key], dtype=dtype) for d in per_env if d[key]])
    return {
        "observations": cat("o", np.float32),
        "actions": cat("a", np.float32),
        "rewards": cat("r", np.float32),
        "next_observations": cat("o2", np.float32),
        "terminals": cat("te", np.bool_),
        "timeouts": cat("tr", np.bool_),
        "episode_returns": np.asarray(returns, dtype=np.float64),
    }


def sac_expert_policies(expert_path: str | Path, suite: str, task: str, device: torch.device, seed: int):
    """(stochastic, deterministic) batch policies of a trained SAC expert; the manifest's policy line."""
    check_expert_policy(expert_path, suite, task)
    policy = load_expert_policy(expert_path, device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    def stochastic(o):
        with torch.no_grad():
            return policy(torch.as_tensor(o, device=device), generator=gen, with_log_prob=False)[0].cpu().numpy()

    def deterministic(o):
        with torch.no_grad():
            return policy(torch.as_tensor(o, device=device), deterministic=True)[0].cpu().numpy()

    return stochastic, deterministic, "expert SAC, stochastic (a ~ π(·|s))"


def scripted_expert_policies(suite: str, task: str, noise_std: float, seed: int):
    """(noisy, noise-free) batch policies of the task's scripted controller; the manifest's policy line."""
    clean = scripted_policy(suite, task)
    noisy = with_gaussian_noise(clean, noise_std, np.random.default_rng(seed))
    line = (
        f"scripted Meta-World controller {scripted_policy_name(suite, task)} + Gaussian noise "
        f"N(0, {noise_std}²) per action entry, clipped to [-1, 1]"
    )
    return noisy, clean, line


def collect_dataset(
    cfg: dict, suite: str, task: str, expert_path: str | Path | None, out_npz: str | Path, expert_seed: int = 0
) -> dict:
    """Collect one task's dataset. ``expert_path``: the SAC expert's policy.pt; None with
    ``experts.source: scripted`` (the task's scripted controller collects)."""
    dcfg = section(cfg, "datasets", suite)
    ecfg = section(cfg, "experts", suite)
    device = resolve_device(cfg.get("device", "auto"))
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    out_npz = Path(out_npz)
    n_envs = int(dcfg["num_envs"])
    episodes = int(dcfg["episodes"])
    source = ecfg["source"]
    if source == "scripted":
        stochastic, deterministic, policy_line = scripted_expert_policies(
            suite, task, float(ecfg["noise_std"]), int(dcfg["seed"])
        )
        expert_entry = {
            "source": "scripted",
            "policy": scripted_policy_name(suite, task),
            "noise_std": float(ecfg["noise_std"]),
        }
    else:
        if expert_path is None:
            raise ValueError(f"dataset {suite}/{task}: experts.source sac needs the expert's policy.pt")
        stochastic, deterministic, policy_line = sac_expert_policies(
            expert_path, suite, task, device, int(dcfg["seed"])
        )
        expert_entry = {"source": "sac", "path": str(expert_path), "seed": expert_seed}

    # not resumable (a killed job starts over): every attempt is a new MLflow run
    tracker = stage_tracker(
        cfg,
        "datasets",
        suite,
        f"dataset/{suite}/{task}",
        out_npz.with_suffix(layout.RUN_ID_SUFFIX),
        {"suite": suite, "task": task},
        fresh=True,
    )
    status = "FAILED"
    try:
        t0 = time.perf_counter()
        progress = Progress(episodes * episode_length(suite), f"dataset {suite}/{task}", unit="transition")
        data = collect_episodes(
            stochastic, [make_env(suite, task) for _ in range(n_envs)], episodes, int(dcfg["seed"]), progress
        )
        progress.close()
        collect_s = time.perf_counter() - t0
        rng = np.random.default_rng(int(dcfg["seed"]) + 7)
        env = make_env(suite, task)
        low, high = env.action_space.low, env.action_space.high
        rand = evaluate_policy(
            lambda o: rng.uniform(low, high, size=(len(o), len(low))).astype(np.float32),
            [make_env(suite, task) for _ in range(n_envs)],
            int(dcfg["random_episodes"]),
            seed=int(dcfg["seed"]) + 1,
        )
        det = evaluate_policy(
            deterministic,
            [make_env(suite, task) for _ in range(n_envs)],
            int(dcfg["eval_episodes"]),
            seed=int(dcfg["seed"]) + 2,
        )
        mid = ((low + high) / 2).astype(np.float32)  # the A1 stands still, the cheetah applies no torque
        neutral = evaluate_policy(
            lambda o: np.tile(mid, (len(o), 1)),
            [make_env(suite, task) for _ in range(n_envs)],
            int(dcfg["random_episodes"]),
            seed=int(dcfg["seed"]) + 3,
        )
        ep_returns = data.pop("episode_returns")
        transitions = len(data["rewards"])
        manifest = {
            "suite": suite,
            "task": task,
            "env_id": env_id(suite, task),
            "seed": int(dcfg["seed"]),
            "expert": expert_entry,
            "policy": policy_line,
            "counts": {"episodes": len(ep_returns)},
            "returns": {
                "mean": float(ep_returns.mean()),
                "std": float(ep_returns.std()),
                "per_episode": ep_returns.tolist(),
            },
            "scores": {
                "random": float(rand["returns"].mean()),
                "random_std": float(rand["returns"].std()),
                "expert": float(ep_returns.mean()),
                "expert_deterministic": float(det["returns"].mean()),
                "neutral": float(neutral["returns"].mean()),
                "neutral_std": float(neutral["returns"].std()),
                "random_success": float(rand["success"].mean()),
                "expert_success": float(det["success"].mean()),
            },
            "collection": {"transitions_per_s": transitions / collect_s, "seconds": collect_s},
        }
        weak = None if is_success_suite(suite) else weak_expert(manifest["scores"])
        if weak and dcfg["weak_expert"] == "error":  # before anything is written (the run gets npf.error)
            raise WeakExpertError(
                f"dataset {suite}/{task}: {weak}; datasets.weak_expert: warn allows it for a smoke run"
            )
        manifest = save_dataset(out_npz, data, manifest)
        tracker.log_metrics(
            {
                "dataset/transitions": transitions,
                "dataset/return_mean": manifest["returns"]["mean"],
                "score/random": manifest["scores"]["random"],
                "score/expert": manifest["scores"]["expert"],
                "score/expert_deterministic": manifest["scores"]["expert_deterministic"],
                "score/neutral": manifest["scores"]["neutral"],
                "rate/transitions_per_s": transitions / collect_s,
            },
            0,
        )
        tracker.log_artifact(out_npz.with_suffix(".json"))
        if weak:
            print(f"warning: dataset {suite}/{task}: {weak}", file=sys.stderr, flush=True)
            tracker.set_tags({"npf.warning": weak})
        status = "FINISHED"
        return manifest
    finally:
        tracker.close(status, error=sys.exc_info()[1])


class WeakExpertError(ValueError):
    """The expert is not clearly better than the random / mid-range-action baselines
    (:func:`npf.evaluate.weak_expert`) and ``datasets.weak_expert`` is ``error``."""
