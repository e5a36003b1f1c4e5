"""Scripted experts: Meta-World's hand-written controllers as the data-collecting policy.

Meta-World 3.1.1 ships one scripted policy per v3 task (``metaworld.policies.ENV_POLICY_MAP``,
e.g. ``"reach-v3" -> SawyerReachV3Policy``). Each maps one raw 39-d observation (hand position,
gripper, object poses, goal) to a 4-d action (xyz displacement, grab effort) with proportional
controllers; it solves the fixed-goal MT10 episodes without any training. With
``experts.source: scripted`` the dataset stage collects with it instead of a trained SAC expert
(the laptop-scale stand-in for the paper's SAC experts; docs/reproduce-a-table.md), adding
Gaussian noise of std ``experts.noise_std`` to every action so the data covers more than the
controller's single trajectory. Actions are clipped to the action space [-1, 1] (the controllers'
gains can exceed it; Meta-World clips too).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

#: suites whose tasks have scripted policies
SCRIPTED_SUITES: tuple[str, ...] = ("mt10",)

Policy = Callable[[np.ndarray], np.ndarray]


def _policy_class(suite: str, task: str):
    if suite not in SCRIPTED_SUITES:
        raise ValueError(
            f"suite {suite!r} has no scripted policies (experts.source scripted works for: "
            f"{', '.join(SCRIPTED_SUITES)})"
        )
    from metaworld.policies import ENV_POLICY_MAP  # lazy: importing metaworld is slow

    key = f"{task}-v3"
    if key not in ENV_POLICY_MAP:
        raise ValueError(f"Meta-World has no scripted policy for task {task!r} (no {key!r} in ENV_POLICY_MAP)")
    return ENV_POLICY_MAP[key]


def scripted_policy_name(suite: str, task: str) -> str:
    """``("mt10", "peg-insert-side")`` -> ``"SawyerPegInsertionSideV3Policy"``."""
    return _policy_class(suite, task).__name__


def scripted_policy(suite: str, task: str) -> Policy:
    """The task's noise-free scripted policy on stacked observations ``[E, obs_dim] -> [E, act_dim]``
    (float32, clipped to [-1, 1])."""
    controller = _policy_class(suite, task)()

    def policy(obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # "Constant(s) may be too high": we clip below
            warnings.simplefilter("ignore")
            acts = np.stack([controller.get_action(np.asarray(o, dtype=np.float64)) for o in obs])
        return np.clip(acts, -1.0, 1.0).astype(np.float32)

    return policy


def with_gaussian_noise(policy: Policy, std: float, rng: np.random.Generator) -> Policy:
    """``policy`` plus N(0, std²) noise on every action entry, clipped to [-1, 1]; std 0 = ``policy``."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")

    def noisy(obs: np.ndarray) -> np.ndarray:
        a = policy(obs)
        if std == 0:
            return a
        return np.clip(a + std * rng.standard_normal(a.shape), -1.0, 1.0).astype(np.float32)

    return noisy
