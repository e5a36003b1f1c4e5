"""The expert policy file ``experts/{suite}/{task}/seed{s}/policy.pt`` (docs/data-formats.md):
written by the expert stage, checked against a task's sizes and loaded by the dataset stage and by
the offscreen renderer. (An exported NPF task policy is another file: :mod:`npf.export`.)"""

from __future__ import annotations

from pathlib import Path

from npf import checkpoint as ckpt
from npf.algos.sac import SAC
from npf.envs import make_env
from npf.nets import TanhGaussianPolicy


def save_expert_policy(path: Path, algo: SAC, obs_dim: int, act_dim: int, meta: dict) -> None:
    ckpt.save(
        {
            "actor": algo.actor.state_dict(),
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "hidden": list(algo.cfg.hidden),
            "activation": algo.cfg.activation,
            "meta": meta,
        },
        path,
    )


def load_expert_policy(path: str | Path, device="cpu") -> TanhGaussianPolicy:
    s = ckpt.load(path, map_location=device)
    pol = TanhGaussianPolicy(s["obs_dim"], s["act_dim"], s["hidden"], s["activation"]).to(device)
    ckpt.load_matching(pol, s["actor"], path)
    return pol


def check_expert_policy(expert_path: str | Path, suite: str, task: str) -> None:
    """The expert policy file exists, is an npf policy and fits the task's observation/action sizes."""
    s = ckpt.load(expert_path)
    missing = [
        k for k in ("actor", "obs_dim", "act_dim", "hidden", "activation") if not isinstance(s, dict) or k not in s
    ]
    if missing:
        raise ckpt.CheckpointError(f"{expert_path}: not an expert policy file (no {missing[0]!r})")
    env = make_env(suite, task)
    want = (env.observation_space.shape[0], env.action_space.shape[0])
    env.close()
    if (s["obs_dim"], s["act_dim"]) != want:
        raise ckpt.CheckpointError(
            f"{expert_path}: policy for obs/act sizes {(s['obs_dim'], s['act_dim'])}, task {suite}/{task} has {want}"
        )
