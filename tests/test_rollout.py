"""EnvPool's mid-episode checkpoints: each env's episode so far is recorded and replayed, so a pool
rebuilt from a checkpoint written at any step continues exactly as the original, also when the
envs' episodes end at different steps (early termination, different lengths)."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from npf.checkpoint import CheckpointError
from npf.rollout import EnvPool


class Walk(gym.Env):
    """A seeded random walk that terminates when it leaves [-1, 1] and is cut at ``limit`` steps:
    episodes of different envs end at different steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, limit: int, noisy: bool = False, bound: float = 1.0):
        self.limit, self.noisy, self.bound = limit, noisy, bound

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = float(self.np_random.uniform(-0.5, 0.5)), 0
        return np.array([self.x, 0.0], np.float32), {}

    def step(self, action):
        noise = np.random.uniform(0, 1e-3) if self.noisy else 0.0  # outside the env's seeded RNG
        self.x += 0.4 * float(action[0]) + float(self.np_random.normal(0, 0.1)) + noise
        self.t += 1
        obs = np.array([self.x, self.t], np.float32)
        return obs, -abs(self.x), abs(self.x) > self.bound, self.t >= self.limit, {"success": abs(self.x) < 0.05}


def round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)


def actions_for(step: int, n: int) -> np.ndarray:
    return np.random.default_rng(step).uniform(-1, 1, (n, 1)).astype(np.float32)


def test_a_pool_rebuilt_at_any_step_continues_exactly_with_desynchronised_episodes():
    limits = [3, 5, 8]
    pool = EnvPool([Walk(n) for n in limits], base_seed=7, record_episodes=True)
    pool.reset()
    ended_apart = False
    for t in range(40):
        state = round_trip({"episodes": list(pool.episodes), **pool.mid_episode_state()})
        assert ("episode_actions" in state) == (not pool.at_episode_start)
        ended_apart |= 0 < int((pool.lengths == 0).sum()) < len(limits)
        copy = EnvPool([Walk(n) for n in limits], base_seed=7, episode_counts=state["episodes"], record_episodes=True)
        copy.reset()
        np.testing.assert_array_equal(copy.restore_mid_episode(state, "ckpt.pt"), pool.obs)
        np.testing.assert_array_equal(copy.lengths, pool.lengths)
        np.testing.assert_array_equal(copy.returns, pool.returns)
        np.testing.assert_array_equal(copy.success, pool.success)
        for k in range(t, t + 12):  # the two pools go on identically, through episode ends
            a, b = pool.step(actions_for(k, 3)), copy.step(actions_for(k, 3))
            np.testing.assert_array_equal(a.next_obs, b.next_obs)
            np.testing.assert_array_equal(a.reward, b.reward)
            assert a.finished == b.finished
        pool.step(actions_for(1000 + t, 3))
    assert ended_apart  # the case the recording is for: some envs mid-episode, others just reset


def test_a_checkpoint_at_a_step_where_every_episode_starts_holds_no_actions():
    pool = EnvPool([Walk(4, bound=np.inf), Walk(4, bound=np.inf)], base_seed=0, record_episodes=True)
    pool.reset()
    assert pool.mid_episode_state() == {}
    for _ in range(4):  # both episodes end at the limit together
        pool.step(np.zeros((2, 1), np.float32))
    assert pool.at_episode_start and pool.mid_episode_state() == {}


def test_a_replay_that_does_not_reproduce_the_observations_is_a_checkpoint_error():
    pool = EnvPool([Walk(50, noisy=True)], base_seed=1, record_episodes=True)
    pool.reset()
    for t in range(5):
        pool.step(actions_for(t, 1))
    state = pool.mid_episode_state()
    copy = EnvPool([Walk(50, noisy=True)], base_seed=1, record_episodes=True)
    copy.reset()
    with pytest.raises(CheckpointError, match=r"^ckpt\.pt: replaying .* not deterministic"):
        copy.restore_mid_episode(state, "ckpt.pt")
    fewer = EnvPool([Walk(50), Walk(50)], base_seed=1, record_episodes=True)
    fewer.reset()
    with pytest.raises(CheckpointError, match=r"^ckpt\.pt: 1 envs recorded, this run has 2"):
        fewer.restore_mid_episode(state, "ckpt.pt")


def test_the_older_stacked_format_of_synchronised_episodes_still_restores():
    pool = EnvPool([Walk(50), Walk(50)], base_seed=3, record_episodes=True)
    pool.reset()
    for t in range(6):
        pool.step(actions_for(t, 2) * 0.1)
    assert not pool.at_episode_start and (pool.lengths == 6).all()
    stacked = {"episode_actions": torch.stack(pool.mid_episode_state()["episode_actions"], 1), "obs": pool.obs.copy()}
    stacked["obs"] = torch.from_numpy(stacked["obs"])
    assert stacked["episode_actions"].shape == (6, 2, 1)  # [steps, envs, act_dim], as written before
    copy = EnvPool([Walk(50), Walk(50)], base_seed=3, record_episodes=True)
    copy.reset()
    np.testing.assert_array_equal(copy.restore_mid_episode(stacked, "ckpt.pt"), pool.obs)
