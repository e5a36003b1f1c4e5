"""Vectorized rollouts with deterministic per-episode seeding.

Each env i starts its k-th episode with ``reset(seed=episode_seed(base, i, k))``: a run can be
resumed at any episode boundary and continue exactly, and evaluation episodes are reproducible.
Observations of all envs are stacked so a policy runs once per step for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np


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

    def __init__(self, envs: Sequence[gym.Env], base_seed: int, episode_counts: Sequence[int] | None = None):
        self.envs = list(envs)
        self.base_seed = int(base_seed)
        self.episodes = list(episode_counts) if episode_counts is not None else [0] * len(self.envs)
        self.returns = np.zeros(len(self.envs))
        self.lengths = np.zeros(len(self.envs), dtype=np.int64)
        self.success = np.zeros(len(self.envs), dtype=bool)
        self.obs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def at_episode_start(self) -> bool:
        return bool((self.lengths == 0).all())

    def _reset_env(self, i: int) -> np.ndarray:
        obs, _ = self.envs[i].reset(seed=episode_seed(self.base_seed, i, self.episodes[i]))
        self.returns[i], self.lengths[i], self.success[i] = 0.0, 0, False
        return np.asarray(obs, dtype=np.float32)

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
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(actions[i])
            o = np.asarray(o, dtype=np.float32)
            rew[i], term[i], trunc[i] = r, te, tr
            final_obs[i] = o
            self.returns[i] += r
            self.lengths[i] += 1
            self.success[i] |= bool(info.get("success", False))
            infos.append(info)
            if te or tr:
                finished.append((i, float(self.returns[i]), int(self.lengths[i]), bool(self.success[i])))
                self.episodes[i] += 1
                o = self._reset_env(i)
            next_obs[i] = o
        self.obs = next_obs
        return StepResult(next_obs, rew, term, trunc, final_obs, infos, finished)

    def replay(self, actions: Sequence[np.ndarray], expected_obs: np.ndarray) -> None:
        """Bring back the simulators of a checkpoint written mid-episode: after :meth:`reset`,
        step with the episode's recorded actions. Raises ValueError unless the episode is still
        running afterwards and the observations come out as saved."""
        for a in actions:
            if self.step(a).finished:
                raise ValueError("an episode ended while replaying its recorded actions")
        if not np.array_equal(self.obs, expected_obs):
            raise ValueError(
                "replaying the episode's actions did not reproduce its observations (the environment "
                "is not deterministic); delete the checkpoint to start over"
            )

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
