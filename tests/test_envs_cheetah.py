"""HalfCheetah multitask envs: rewards recomputed independently from qpos (PAPER.md table)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import npf.envs as envs

DT = 0.05  # frame_skip 5 x timestep 0.01


def _ctrl(a):
    return float(np.sum(np.square(a)))


# The paper's formulas, written out: f(v, z - z0, a).
FORMULAS = {
    "forward": lambda v, dz, a: min(v, 3.0) - 0.05 * _ctrl(a),
    "backward": lambda v, dz, a: -min(v, 3.0) - 0.05 * _ctrl(a),
    "jump": lambda v, dz, a: 15.0 * dz - 0.05 * _ctrl(a),
    "forward-jump": lambda v, dz, a: min(v, 3.0) + 15.0 * dz - 0.1 * _ctrl(a),
    "backward-jump": lambda v, dz, a: -min(v, 3.0) + 15.0 * dz - 0.1 * _ctrl(a),
    "vel-0.5": lambda v, dz, a: min(v, 0.5) - 0.05 * _ctrl(a),
    "vel-1.0": lambda v, dz, a: min(v, 1.0) - 0.05 * _ctrl(a),
    "vel-1.5": lambda v, dz, a: min(v, 1.5) - 0.05 * _ctrl(a),
    "vel-2.0": lambda v, dz, a: min(v, 2.0) - 0.05 * _ctrl(a),
    "vel-2.5": lambda v, dz, a: min(v, 2.5) - 0.05 * _ctrl(a),
    "vel-3.0": lambda v, dz, a: min(v, 3.0) - 0.05 * _ctrl(a),
}
VEL_CAPS = {"vel-0.5": 0.5, "vel-1.0": 1.0, "vel-1.5": 1.5, "vel-2.0": 2.0, "vel-2.5": 2.5, "vel-3.0": 3.0}
ALL_TASKS = [("cheetah", t) for t in envs.SUITES["cheetah"]] + [
    ("cheetah_velocity", t) for t in envs.SUITES["cheetah_velocity"]
]


def test_suites_and_registry():
    assert envs.SUITES["cheetah"] == ("forward", "backward", "jump", "forward-jump", "backward-jump")
    assert envs.SUITES["cheetah_velocity"] == tuple(VEL_CAPS)
    assert set(FORMULAS) == {t for _, t in ALL_TASKS}
    assert envs.env_id("cheetah", "forward-jump") == "npf/cheetah-forward-jump-v0"
    assert envs.env_id("cheetah_velocity", "vel-2.5") == "npf/cheetah-vel-2.5-v0"
    assert envs.episode_length("cheetah") == 1000 and envs.episode_length("cheetah_velocity") == 1000
    assert not envs.is_success_suite("cheetah") and not envs.is_success_suite("cheetah_velocity")
    for suite, task in ALL_TASKS:
        assert envs.env_id(suite, task) in gym.registry
    with pytest.raises(ValueError, match="unknown suite 'nope'.*cheetah, cheetah_velocity, mt10"):
        envs.make_env("nope", "forward")
    with pytest.raises(ValueError, match="unknown task 'vel-9.0'.*vel-0.5"):
        envs.env_id("cheetah_velocity", "vel-9.0")
    with pytest.raises(ValueError, match="unknown task 'vel-1.0' for suite 'cheetah'"):
        envs.make_env("cheetah", "vel-1.0")


@pytest.mark.parametrize("suite,task", ALL_TASKS)
def test_reward_matches_paper_formula(suite, task):
    env = gym.make(envs.env_id(suite, task))
    assert env.observation_space.shape == (17,) and env.action_space.shape == (6,)
    assert env.unwrapped.dt == pytest.approx(DT)
    obs, info = env.reset(seed=123)
    data = env.unwrapped.data
    z0 = float(data.qpos[1])
    assert obs[0] == z0  # obs[0] is the torso z coordinate
    assert info["z0"] == z0
    rng = np.random.default_rng(0)
    f = FORMULAS[task]
    jump_terms = []
    for _ in range(200):
        a = rng.uniform(-1.0, 1.0, size=6)
        x_before = float(data.qpos[0])
        obs, r, terminated, truncated, info = env.step(a)
        x_after, z = float(data.qpos[0]), float(data.qpos[1])
        v = (x_after - x_before) / DT
        assert r == pytest.approx(f(v, z - z0, a), rel=1e-9, abs=1e-9)
        assert not terminated and not truncated
        assert info["x_velocity"] == pytest.approx(v) and info["z"] == z and info["z0"] == z0
        assert info["torso_height"] == pytest.approx(0.7 + z)
        assert r == pytest.approx(info["reward_run"] + info["reward_jump"] + info["reward_ctrl"])
        jump_terms.append(info["reward_jump"])
    if "jump" in task:
        assert np.max(np.abs(jump_terms)) > 0.1  # jump term exercised
    else:
        assert np.all(np.asarray(jump_terms) == 0.0)


def _step_from_state(env, qvel_index, qvel_value, action=None):
    """Reset, then set a velocity via set_state and take one step; return (v, z - z0, r, info)."""
    env.reset(seed=0)
    u = env.unwrapped
    z0 = float(u.data.qpos[1])
    qvel = u.data.qvel.copy()
    qvel[qvel_index] = qvel_value
    u.set_state(u.data.qpos.copy(), qvel)
    a = np.zeros(6) if action is None else action
    x_before = float(u.data.qpos[0])
    _, r, _, _, info = env.step(a)
    v = (float(u.data.qpos[0]) - x_before) / DT
    return v, float(u.data.qpos[1]) - z0, r, info


@pytest.mark.parametrize("task", ["forward", "forward-jump"])
def test_forward_velocity_cap_at_3(task):
    env = envs.make_env("cheetah", task, seed=0)
    v, dz, r, info = _step_from_state(env, 0, 12.0)
    assert v > 3.0
    assert info["reward_run"] == pytest.approx(3.0)
    assert r == pytest.approx(FORMULAS[task](v, dz, np.zeros(6)))
    assert r == pytest.approx(3.0 + (15.0 * dz if "jump" in task else 0.0))


@pytest.mark.parametrize("task", ["backward", "backward-jump"])
def test_backward_is_minus_min_v_3(task):
    env = envs.make_env("cheetah", task, seed=0)
    # forward speed > 3: reward_run = -3 (capped)
    v, dz, r, info = _step_from_state(env, 0, 12.0)
    assert v > 3.0 and info["reward_run"] == pytest.approx(-3.0)
    # backward speed: -min(v, 3) = -v, uncapped (exactly as written in the paper)
    v, dz, r, info = _step_from_state(env, 0, -12.0)
    assert v < -3.0 and info["reward_run"] == pytest.approx(-v) and info["reward_run"] > 3.0
    assert r == pytest.approx(FORMULAS[task](v, dz, np.zeros(6)))


@pytest.mark.parametrize("task,g", list(VEL_CAPS.items()))
def test_velocity_task_cap_at_goal(task, g):
    env = envs.make_env("cheetah_velocity", task, seed=0)
    v, _dz, r, info = _step_from_state(env, 0, g + 5.0)
    assert v > g
    assert r == pytest.approx(g) and info["reward_run"] == pytest.approx(g)
    a = np.full(6, 0.5)
    v, _dz, r, info = _step_from_state(env, 0, -1.0, action=a)  # below every cap
    assert v < g
    assert r == pytest.approx(v - 0.05 * 6 * 0.25)


def test_jump_term_from_vertical_velocity():
    env = envs.make_env("cheetah", "jump", seed=0)
    _v, dz, r, info = _step_from_state(env, 1, 3.0)  # qvel[1] = rootz velocity
    assert dz > 0.05
    assert r == pytest.approx(15.0 * dz) and info["reward_jump"] == pytest.approx(15.0 * dz)


def test_truncates_at_1000_never_terminates():
    env = envs.make_env("cheetah", "forward", seed=1)
    env.reset()
    a = np.zeros(6)
    for t in range(1, 1001):
        _, _, terminated, truncated, _ = env.step(a)
        assert not terminated
        assert truncated == (t == 1000)


def test_same_seed_same_trajectory():
    def rollout(seed):
        env = envs.make_env("cheetah", "forward-jump", seed=seed)
        obs0, _ = env.reset()
        rng = np.random.default_rng(5)
        traj, rews = [obs0], []
        for _ in range(50):
            obs, r, *_ = env.step(rng.uniform(-1, 1, size=6))
            traj.append(obs)
            rews.append(r)
        return np.array(traj), np.array(rews)

    o1, r1 = rollout(7)
    o2, r2 = rollout(7)
    o3, _ = rollout(8)
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)
    assert not np.array_equal(o1[0], o3[0])
    # construction seed == reset(seed=...) seed
    env = gym.make("npf/cheetah-forward-jump-v0")
    np.testing.assert_array_equal(env.reset(seed=7)[0], o1[0])


def test_vec_env_same_step_autoreset():
    venv = envs.make_vec_env("cheetah", "backward", num_envs=2, seed=10)
    assert venv.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP
    obs, _ = venv.reset()
    assert obs.shape == (2, 17)
    # env i seeded seed + i
    np.testing.assert_array_equal(obs[1], envs.make_env("cheetah", "backward", seed=11).reset()[0])
    a = np.zeros((2, 6))
    for t in range(1, 1001):
        obs, rew, term, trunc, infos = venv.step(a)
        assert rew.shape == (2,) and not term.any()
        if t < 1000:
            assert not trunc.any()
    assert trunc.all()
    assert infos["_final_obs"].all()
    final = np.stack(infos["final_obs"])
    assert final.shape == (2, 17) and not np.array_equal(final, obs)  # obs is already the next reset
    venv.close()
