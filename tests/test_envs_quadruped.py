"""Quadruped (A1, MuJoCo) envs: rewards recomputed independently from the simulator state.

The formulas below are written out from ``docs/quadruped.md`` with literal constants, so
a change of the env's reward constants fails here.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("pybullet_data", reason="the A1 URDF ships in the pybullet wheel")

from npf.envs import quadruped as quad

TASKS = ("pace-forward", "pace-backward", "hop-turn", "sidestep")
DT = 0.03  # 15 substeps x 0.002 s
STAND = np.array([0.0, 0.9, -1.8] * 4)
SCALE = np.array([0.3, 0.6, 0.6] * 4)
TORQUE_MAX = np.array([20.0, 55.0, 55.0] * 4)


def _wrap(a):
    return math.atan2(math.sin(a), math.cos(a))


def _rotation(q):
    """Rotation matrix of a (w, x, y, z) unit quaternion (columns = body axes in the world)."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _yaw(q):
    r = _rotation(q)
    return math.atan2(r[1, 0], r[0, 0])


def _targets(task, k, T):
    """(vx*, vy*, yaw*) of step k (1-based) of an episode of T steps."""
    k = min(k, T)
    if task == "pace-forward":
        return 0.5, 0.0, 0.0
    if task == "pace-backward":
        return -0.5, 0.0, 0.0
    if task == "hop-turn":
        return 0.0, 0.0, (math.pi / 2) * math.sin(math.pi * k / T)
    if task == "sidestep":
        return 0.0, (0.3 if k <= T / 2 else -0.3), 0.0
    raise KeyError(task)


WEIGHTS = {  # (w_v, w_yaw, w_hop)
    "pace-forward": (1.5, 0.3, 0.0),
    "pace-backward": (1.5, 0.3, 0.0),
    "hop-turn": (0.3, 1.0, 0.5),
    "sidestep": (1.5, 0.3, 0.0),
}


def _velocity_match(task, vx, vy, vx_t, vy_t):
    """Gaussian around the target (hop-turn); progress along the target direction capped at the
    target speed, times a Gaussian of the sideways speed (pace, sidestep: targets on one axis)."""
    if task == "hop-turn":
        return math.exp(-((vx - vx_t) ** 2 + (vy - vy_t) ** 2) / 0.25**2)
    if vy_t == 0.0:  # pace: along x
        return min(max(vx / vx_t, 0.0), 1.0) * math.exp(-(vy**2) / 0.25**2)
    return min(max(vy / vy_t, 0.0), 1.0) * math.exp(-(vx**2) / 0.25**2)  # sidestep: along y


def expected_reward(task, k, T, qpos_before, qpos_after, yaw0, torque, action, prev_action, trunk_contact=False):
    """The documented reward, from qpos before/after the step and the applied torque."""
    w_v, w_yaw, w_hop = WEIGHTS[task]
    vx_t, vy_t, yaw_t = _targets(task, k, T)
    vxw, vyw, vz = (qpos_after[:3] - qpos_before[:3]) / DT
    vx = math.cos(yaw0) * vxw + math.sin(yaw0) * vyw  # initial-heading frame
    vy = -math.sin(yaw0) * vxw + math.cos(yaw0) * vyw
    yaw_rel = _wrap(_yaw(qpos_after[3:7]) - yaw0)
    up_z = _rotation(qpos_after[3:7])[2, 2]
    z = qpos_after[2]
    return (
        0.25
        + w_v * _velocity_match(task, vx, vy, vx_t, vy_t)
        + w_yaw * math.exp(-(_wrap(yaw_rel - yaw_t) ** 2) / 0.35**2)
        + 0.1 * min(max(up_z, 0.0), 1.0)
        + 0.1 * min(max((z - 0.12) / (0.22 - 0.12), 0.0), 1.0)
        + w_hop * min(abs(vz), 0.5) / 0.5
        - 0.1 * np.mean((torque / TORQUE_MAX) ** 2)
        - 0.1 * np.mean((action - prev_action) ** 2) / 4
        - (50.0 if z < 0.12 or up_z < 0.5 or trunk_contact else 0.0)  # fall penalty, on the falling step
    )


def _trunk_touches_floor(env) -> bool:
    """Any contact between the floor plane and a geom of the trunk body, by name."""
    import mujoco

    m, d = env.unwrapped.model, env.unwrapped.data
    trunk = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "trunk")
    floor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    pairs = {(int(d.contact.geom1[i]), int(d.contact.geom2[i])) for i in range(d.ncon)}
    return any(floor in p and m.geom_bodyid[p[0] if p[1] == floor else p[1]] == trunk for p in pairs)


def test_tasks_model_and_spaces():
    assert tuple(quad.QUADRUPED_TASKS) == TASKS
    assert quad.EPISODE_LENGTH == 600
    env = quad.A1MultitaskEnv("pace-forward")
    m = env.model
    assert env.dt == pytest.approx(DT) and m.opt.timestep == pytest.approx(0.002)
    assert m.nu == 12 and m.nq == 19 and m.nv == 18
    assert m.jnt_type[0] == 0  # free joint on the trunk
    assert env.observation_space.shape == (50,) and env.action_space.shape == (12,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    np.testing.assert_allclose(m.actuator_forcerange[:, 1], TORQUE_MAX)
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], 50.0)
    np.testing.assert_allclose(m.actuator_biasprm[:, 2], -np.array([1.0, 2.0, 2.0] * 4))
    # ctrlrange = joint limits
    np.testing.assert_allclose(m.actuator_ctrlrange, m.jnt_range[1:])
    # action -> target: stand pose + scale * a, clipped to the joint limits
    a = np.linspace(-1, 1, 12)
    np.testing.assert_allclose(
        env.action_to_target(a), np.clip(STAND + SCALE * a, m.jnt_range[1:, 0], m.jnt_range[1:, 1])
    )
    with pytest.raises(ValueError, match="unknown quadruped task"):
        quad.A1MultitaskEnv("moonwalk")
    env.close()


def test_observation_layout():
    env = quad.A1MultitaskEnv("hop-turn", seed=3)
    obs, info = env.reset()
    d = env.unwrapped.data
    yaw0 = env.yaw0
    assert info["yaw0"] == yaw0 and abs(yaw0) <= 0.1
    rng = np.random.default_rng(1)
    a = np.zeros(12)
    for _k in range(1, 6):
        a = rng.uniform(-0.3, 0.3, 12)
        obs, *_ = env.step(a)
    q, v = d.qpos.copy(), d.qvel.copy()
    rot = _rotation(q[3:7])
    roll, pitch = math.atan2(rot[2, 1], rot[2, 2]), math.asin(-rot[2, 0])
    yaw_rel = _wrap(_yaw(q[3:7]) - yaw0)
    np.testing.assert_allclose(obs[0:12], q[7:19])
    np.testing.assert_allclose(obs[12:24], v[6:18])
    np.testing.assert_allclose(
        obs[24:30],
        [math.sin(roll), math.cos(roll), math.sin(pitch), math.cos(pitch), math.sin(yaw_rel), math.cos(yaw_rel)],
        atol=1e-9,
    )
    np.testing.assert_allclose(obs[30:33], v[3:6])
    np.testing.assert_allclose(obs[33:36], rot.T @ v[0:3], atol=1e-9)
    assert obs[36] == q[2]
    np.testing.assert_allclose(obs[37:49], a)
    assert obs[49] == pytest.approx(5 / 600)
    assert set(quad.OBS_SLICES) == {
        "joint_pos",
        "joint_vel",
        "orientation",
        "angular_velocity",
        "linear_velocity",
        "height",
        "last_action",
        "phase",
    }


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("T,action_scale", [(600, 1.0), (40, 0.3)])
def test_reward_matches_formula(task, T, action_scale):
    """Random rollouts (resetting after falls); T=40 with gentle actions covers the schedules."""
    env = quad.A1MultitaskEnv(task, episode_steps=T)
    d = env.unwrapped.data
    rng = np.random.default_rng(TASKS.index(task))
    env.reset(seed=0)
    prev, k, falls, checked = np.zeros(12), 0, 0, 0
    flipped_targets = set()
    for _ in range(250):
        a = rng.uniform(-1, 1, 12) * action_scale
        before = d.qpos.copy()
        yaw0 = env.yaw0
        _, r, terminated, truncated, info = env.step(a)
        k += 1
        exp = expected_reward(
            task, k, T, before, d.qpos.copy(), yaw0, d.actuator_force.copy(), a, prev, _trunk_touches_floor(env)
        )
        assert r == pytest.approx(exp, rel=1e-9, abs=1e-9)
        terms = [v for key, v in info.items() if key.startswith("reward_")]
        assert len(terms) == 9 and r == pytest.approx(sum(terms), abs=1e-12)
        assert info["reward_fall"] == (-50.0 if terminated else 0.0)
        assert 0.05 - 1e-9 <= r + (50.0 if terminated else 0.0) <= 2.25 + 1e-9
        vx_t, vy_t, yaw_t = _targets(task, k, T)
        assert (info["target_vx"], info["target_vy"]) == (vx_t, vy_t) and info["target_yaw"] == pytest.approx(yaw_t)
        flipped_targets.add(info["target_vy"])
        assert not truncated
        checked += 1
        prev = a
        if terminated or k >= T:
            assert info["fell"] == terminated
            falls += terminated
            env.reset()
            prev, k = np.zeros(12), 0
    assert checked == 250
    if task == "sidestep" and T == 40:
        assert flipped_targets == {0.3, -0.3}
    env.close()


def _place_trunk(env, z, quat, qvel_z=0.0):
    d = env.unwrapped.data
    d.qpos[2] = z
    d.qpos[3:7] = quat
    d.qvel[:] = 0.0
    d.qvel[2] = qvel_z
    import mujoco

    mujoco.mj_forward(env.unwrapped.model, d)


def test_terminates_when_upside_down():
    env = quad.A1MultitaskEnv("pace-forward", seed=0)
    env.reset()
    _place_trunk(env, 0.5, [0.0, 1.0, 0.0, 0.0])  # rolled by pi, in the air
    _, r, terminated, _, info = env.step(np.zeros(12))
    assert info["reward_fall"] == -50.0 and r < -47.0
    assert terminated and info["fell"] and info["up_z"] < 0.5


def test_terminates_when_tilted():
    env = quad.A1MultitaskEnv("pace-forward", seed=0)
    env.reset()
    roll = math.radians(75)
    _place_trunk(env, 0.6, [math.cos(roll / 2), math.sin(roll / 2), 0.0, 0.0])
    _, r, terminated, _, info = env.step(np.zeros(12))
    assert info["reward_fall"] == -50.0 and r < -47.0
    assert terminated and info["up_z"] < 0.5 and info["height"] > 0.12 and not info["trunk_contact"]


def test_terminates_on_trunk_floor_contact():
    env = quad.A1MultitaskEnv("pace-forward", seed=0)
    env.reset()
    _place_trunk(env, 0.05, [0.0, 1.0, 0.0, 0.0])  # lying on its back, trunk box in the floor
    _, r, terminated, _, info = env.step(np.zeros(12))
    assert info["reward_fall"] == -50.0 and r < -47.0
    assert terminated and info["trunk_contact"]


def test_terminates_below_height():
    """Contacts off: the upright trunk falls through z = 0.12 m within one step."""
    import mujoco

    env = quad.A1MultitaskEnv("pace-forward", seed=0)
    env.reset()
    env.unwrapped.model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_CONTACT
    _place_trunk(env, 0.125, [1.0, 0.0, 0.0, 0.0], qvel_z=-1.0)
    _, r, terminated, _, info = env.step(np.zeros(12))
    assert info["reward_fall"] == -50.0 and r < -47.0
    assert terminated and info["height"] < 0.12 and info["up_z"] > 0.99 and not info["trunk_contact"]


def test_standing_pose_is_stable_and_time_limit():
    """Zero action holds the stand for the whole 600-step episode; TimeLimit truncates at 600."""
    gym.register(
        id="npf-test/quadruped-sidestep-v0",
        entry_point="npf.envs.quadruped:A1MultitaskEnv",
        kwargs={"task": "sidestep"},
        max_episode_steps=600,
    )
    env = gym.make("npf-test/quadruped-sidestep-v0")
    env.reset(seed=5)
    for t in range(1, 601):
        _, _r, terminated, truncated, info = env.step(np.zeros(12, dtype=np.float32))
        assert not terminated, f"fell at step {t} with zero action"
        assert info["height"] > 0.2 and info["up_z"] > 0.95
        if t >= 40:  # settled: no drift
            assert abs(info["velocity_x"]) < 0.05 and abs(info["velocity_y"]) < 0.05
    assert truncated and info["phase"] == 1.0
    env.close()
    gym.registry.pop("npf-test/quadruped-sidestep-v0")


def test_env_checker():
    from gymnasium.utils.env_checker import check_env

    check_env(quad.A1MultitaskEnv("hop-turn"), skip_render_check=True)


def _rollout(env, seed, n=120):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    traj = [obs]
    rewards = []
    for _ in range(n):
        obs, r, terminated, _, _ = env.step(rng.uniform(-0.5, 0.5, 12))
        traj.append(obs)
        rewards.append(r)
        if terminated:
            break
    return np.array(traj), np.array(rewards)


def test_same_seed_same_trajectory():
    a = _rollout(quad.A1MultitaskEnv("sidestep"), seed=11)
    b = _rollout(quad.A1MultitaskEnv("sidestep"), seed=11)
    c = _rollout(quad.A1MultitaskEnv("sidestep"), seed=12)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    # constructor seed == reset(seed=...)
    env = quad.A1MultitaskEnv("sidestep", seed=11)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, a[0][0])


def test_builds_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during env build")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    env = quad.A1MultitaskEnv("pace-backward", seed=0)
    env.reset()
    env.step(env.action_space.sample())
    env.close()


def test_random_steps_per_second():
    env = quad.A1MultitaskEnv("pace-forward", seed=0)
    env.reset()
    n, lengths, length = 2000, [], 0
    t0 = time.perf_counter()
    for _ in range(n):
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        length += 1
        if terminated or length >= 600:
            lengths.append(length)
            length = 0
            env.reset()
    rate = n / (time.perf_counter() - t0)
    print(f"\nquadruped random actions: {rate:,.0f} env steps/s; episode lengths {lengths}")


_RENDER_PROBE = textwrap.dedent(
    """
    import numpy as np
    from npf.envs.quadruped import A1MultitaskEnv
    env = A1MultitaskEnv("hop-turn", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    env.step(np.zeros(12))
    img = env.render()
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8 and img.std() > 0, (img.shape, img.dtype)
    env.close()
    print("RENDER_OK")
    """
)


def test_rgb_array_render():
    """Offscreen rendering in a subprocess (a missing GL backend can crash, not just raise)."""
    env = quad.A1MultitaskEnv("hop-turn", render_mode="rgb_array")
    assert env._renderer is None  # lazy: no GL context until render()
    env.close()
    backends = [os.environ["MUJOCO_GL"]] if os.environ.get("MUJOCO_GL") else ["egl", "osmesa"]
    for backend in backends:
        try:
            res = subprocess.run(
                [sys.executable, "-c", _RENDER_PROBE],
                env={**os.environ, "MUJOCO_GL": backend},
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            continue
        if "RENDER_OK" in res.stdout:
            return
    pytest.skip(f"no working offscreen GL backend among {backends}")


def test_registered_suite_if_present():
    """Once npf.envs declares the quadruped suite, its ids build these envs."""
    import npf.envs as envs

    if "quadruped" not in envs.SUITES:
        pytest.skip("quadruped suite not declared in npf.envs yet")
    assert envs.SUITES["quadruped"] == TASKS
    assert envs.episode_length("quadruped") == 600
    env = envs.make_env("quadruped", "hop-turn", seed=0)
    assert env.unwrapped.task == "hop-turn" and env.spec.max_episode_steps == 600
    env.close()
