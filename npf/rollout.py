"""Vectorized rollouts with deterministic per-episode seeding.

Each env i starts its k-th episode with ``reset(seed=episode_seed(base, i, k))``: a run can be
resumed at any step and continue exactly (a pool made with ``record_episodes=True`` replays each
env's episode so far: :meth:`EnvPool.restore_mid_episode`), and evaluation episodes are reproducible.
Observations of all envs are stacked so a policy runs once per step for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from npf.checkpoint import CheckpointError


def episode_seed(base: int, env_index: int, episode: int) -> int:
    return int(np.random.SeedSequence([base, env_index, episode]).generate_state(1)[0])


@dataclass
class StepResult:
    next_obs: np.ndarray  # the observation to act on next (after auto-reset)
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray  # the true s' of this transition (before auto-reset)
    infos: list[dict]
    finished: list[tuple[int, float, int, bool]] = field(default_factory=list)  # (env, return, length, success)


class EnvPool:
    """A list of envs stepped together; finished episodes reset themselves with the next seed."""

    def __init__(
        self,
        envs: Sequence[gym.Env],
        base_seed: int,
        episode_counts: Sequence[int] | None = None,
        *,
        record_episodes: bool = False,
    ):
        """``record_episodes`` keeps each env's actions since its episode began, so a checkpoint can be
        written at any step (:meth:`mid_episode_state`) and resumed exactly (:meth:`restore_mid_episode`)."""
        self.envs = list(envs)
        self.base_seed = int(base_seed)
        self.episodes = list(episode_counts) if episode_counts is not None else [0] * len(self.envs)
        self.returns = np.zeros(len(self.envs))
        self.lengths = np.zeros(len(self.envs), dtype=np.int64)
        self.success = np.zeros(len(self.envs), dtype=bool)
        self.obs: np.ndarray | None = None
        self.recorded: list[list[np.ndarray]] | None = [[] for _ in self.envs] if record_episodes else None

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def at_episode_start(self) -> bool:
        return bool((self.lengths == 0).all())

    def _reset_env(self, i: int) -> np.ndarray:
        obs, _ = self.envs[i].reset(seed=episode_seed(self.base_seed, i, self.episodes[i]))
        self.returns[i], self.lengths[i], self.success[i] = 0.0, 0, False
        if self.recorded is not None:
            self.recorded[i] = []
        return np.asarray(obs, dtype=np.float32)

    def _step_env(self, i: int, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Step env ``i`` and add to its episode's return, length, success (and recorded actions)."""
        o, r, te, tr, info = self.envs[i].step(action)
        self.returns[i] += r
        self.lengths[i] += 1
        self.success[i] |= bool(info.get("success", False))
        if self.recorded is not None:
            self.recorded[i].append(np.array(action))  # a copy, in the dtype the env was given: replays are exact
        return np.asarray(o, dtype=np.float32), r, te, tr, info

    def reset(self) -> np.ndarray:
        self.obs = np.stack([self._reset_env(i) for i in range(len(self.envs))])
        return self.obs

    def step(self, actions: np.ndarray) -> StepResult:
        assert self.obs is not None, "call reset() first"
        n = len(self.envs)
        next_obs = np.empty_like(self.obs)
        final_obs = np.empty_like(self.obs)
        rew = np.zeros(n, np.float32)
        term = np.zeros(n, bool)
        trunc = np.zeros(n, bool)
        infos, finished = [], []
        for i in range(n):
            o, r, te, tr, info = self._step_env(i, actions[i])
            rew[i], term[i], trunc[i] = r, te, tr
            final_obs[i] = o
            infos.append(info)
            if te or tr:
                finished.append((i, float(self.returns[i]), int(self.lengths[i]), bool(self.success[i])))
                self.episodes[i] += 1
                o = self._reset_env(i)
            next_obs[i] = o
        self.obs = next_obs
        return StepResult(next_obs, rew, term, trunc, final_obs, infos, finished)

    def mid_episode_state(self) -> dict:
        """What a checkpoint written at this step needs to rebuild the simulators: each env's actions
        since its episode began and the current observations; empty at a step where every env starts
        an episode (a reset alone restores those). Needs ``record_episodes=True``."""
        assert self.recorded is not None, "EnvPool(record_episodes=True) records the episodes"
        if self.at_episode_start:
            return {}
        return {
            "episode_actions": [torch.from_numpy(np.stack(a)) if a else torch.zeros(0) for a in self.recorded],
            "obs": torch.from_numpy(self.obs.copy()),
        }

    def restore_mid_episode(self, state: dict, checkpoint: str | os.PathLike) -> np.ndarray:
        """After :meth:`reset`, replay each env's recorded actions from its episode's seeded reset and
        return the observations. Raises :class:`~npf.checkpoint.CheckpointError` (naming ``checkpoint``)
        unless every episode is still running afterwards and the observations come out as saved."""
        if "episode_actions" not in state:
            return self.obs
        recorded = state["episode_actions"]
        if isinstance(recorded, torch.Tensor):  # older checkpoints: [steps, envs, act_dim], envs in step
            recorded = [recorded[:, i] for i in range(recorded.shape[1])]
        if len(recorded) != len(self.envs):
            raise CheckpointError(f"{checkpoint}: {len(recorded)} envs recorded, this run has {len(self.envs)}")
        for i, actions in enumerate(recorded):
            for a in actions.numpy():
                o, _, te, tr, _ = self._step_env(i, a)
                if te or tr:
                    raise CheckpointError(f"{checkpoint}: an episode ended while replaying its recorded actions")
                self.obs[i] = o
        if not np.array_equal(self.obs, state["obs"].numpy()):
            raise CheckpointError(
                f"{checkpoint}: replaying the episode's actions did not reproduce its observations (the "
                "environment is not deterministic); delete the checkpoint to start over"
            )
        return self.obs

    def close(self) -> None:
        for env in self.envs:
            env.close()


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray], envs: Sequence[gym.Env], episodes: int, seed: int
) -> dict[str, np.ndarray]:
    """Run ``episodes`` episodes spread over ``envs`` (each env runs ⌈episodes/len⌉ at most).

    ``policy`` maps stacked observations [E, obs_dim] to actions [E, act_dim]. Returns per-episode
    ``env`` index, ``returns``, ``lengths`` and ``success`` (any-step ``info['success']``) arrays.
    """
    pool = EnvPool(envs, seed)
    obs = pool.reset()
    done: list[tuple[int, float, int, bool]] = []
    active = np.ones(len(envs), bool)
    target = [episodes // len(envs) + (1 if i < episodes % len(envs) else 0) for i in range(len(envs))]
    active = np.array([t > 0 for t in target])
    while active.any():
        res = pool.step(policy(obs))
        for i, ret, length, succ in res.finished:
            if active[i]:
                done.append((i, ret, length, succ))
                if pool.episodes[i] >= target[i]:
                    active[i] = False
        obs = res.next_obs
    return {
        "env": np.array([d[0] for d in done], dtype=np.int64),
        "returns": np.array([d[1] for d in done]),
        "lengths": np.array([d[2] for d in done]),
        "success": np.array([d[3] for d in done], dtype=float),
    }
