"""The quadruped rewards rank behaviours the way the task names say, and the task measures of
``npf.envs.quadruped_check`` are what the simulator state says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("pybullet_data", reason="the A1 URDF ships in the pybullet wheel")

from npf.algos.sac import SAC, SACConfig
from npf.envs import quadruped_check as qc
from npf.envs.quadruped import A1MultitaskEnv
from npf.expert_policy import save_expert_policy


@pytest.mark.parametrize("task, walk", [("pace-forward", "trot-forward"), ("pace-backward", "trot-backward")])
def test_walking_the_right_way_beats_standing_which_beats_random(task, walk):
    """A hand-made open-loop trot in the task's direction earns more than standing still, which
    earns more than uniform random actions (which fall); the trot in the other direction earns
    less than standing still (its velocity term is ~0 and it wobbles)."""
    other = "trot-backward" if walk == "trot-forward" else "trot-forward"
    m = {
        name: qc.measure(task, name, episodes=3 if name != "random" else 10)
        for name in (walk, "stand", "random", other)
    }
    assert m[walk]["return"] > m["stand"]["return"] + 100 > m["random"]["return"] + 100
    assert m[other]["return"] < m["stand"]["return"]
    sign = 1.0 if walk == "trot-forward" else -1.0
    assert sign * m[walk]["x"] > 2.0 and m[walk]["steps"] == 600  # walks metres, never falls
    assert abs(m["stand"]["x"]) < 0.1 and m["stand"]["steps"] == 600
    assert m["random"]["steps"] < 400 and m["random"]["fell"] == 1.0


def test_measures_are_the_trunk_displacement_in_the_initial_heading_frame():
    env = A1MultitaskEnv("sidestep")
    seed, steps = 3, 0

    def act(k, o):
        nonlocal steps
        steps += 1
        if k == 0:
            start.append(env.data.qpos[0:2].copy())
        if k == env.episode_steps // 2:
            half.append(env.data.qpos[0:2].copy())
        return qc.trot_action(k, 1.0)

    start, half = [], []
    m = qc.rollout(env, act, seed)
    yaw0 = env.yaw0
    rot = np.array([[math.cos(yaw0), math.sin(yaw0)], [-math.sin(yaw0), math.cos(yaw0)]])  # R(−ψ0)
    end = rot @ (env.data.qpos[0:2] - start[0])
    mid = rot @ (half[0] - start[0])
    assert m["steps"] == steps == 600
    assert m["x"] == pytest.approx(end[0], abs=1e-9) and m["y"] == pytest.approx(end[1], abs=1e-9)
    assert m["y_first_half"] == pytest.approx(mid[1], abs=1e-9)
    assert m["y_second_half"] == pytest.approx(end[1] - mid[1], abs=1e-9)
    assert m["vx"] == pytest.approx(end[0] / (600 * 0.03))


def test_a_policy_file_is_rolled_out_with_its_deterministic_action(tmp_path):
    torch.manual_seed(0)
    algo = SAC(50, 12, SACConfig(hidden=[8]), torch.device("cpu"), seed=0)
    path = tmp_path / "policy.pt"
    save_expert_policy(path, algo, 50, 12, {})
    m = qc.measure("hop-turn", str(path), episodes=1, seed=7)
    env = A1MultitaskEnv("hop-turn")
    obs, _ = env.reset(seed=7)
    ret, n = 0.0, 0
    for _ in range(600):
        with torch.no_grad():
            a = algo.act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0), deterministic=True)[0].numpy()
        obs, r, terminated, _, _ = env.step(a)
        ret, n = ret + r, n + 1
        if terminated:
            break
    assert m["return"] == pytest.approx(ret) and m["steps"] == n


def test_a_forward_dive_pays_less_than_standing_over_the_same_steps():
    """The exploit the 30K pace-forward expert found: calves extended, the A1 rises and tips
    forward, collecting the velocity term until it falls. With the fall penalty it earns less than
    standing still over the same number of steps, and less than standing per step even before the
    penalty is paid."""
    dive, stand = A1MultitaskEnv("pace-forward"), A1MultitaskEnv("pace-forward")
    a = np.array([0.0, 0.0, 1.0] * 4)
    m = qc.rollout(dive, lambda k, o: a, seed=0)
    assert m["fell"] and 20 < m["steps"] < 60 and m["x"] > 0.3
    s = qc.rollout(stand, lambda k, o: np.zeros(12), seed=0)
    stand.reset(seed=0)
    stand_ret = sum(stand.step(np.zeros(12))[1] for _ in range(m["steps"]))
    assert m["return"] + 50.0 > stand_ret  # the dive's velocity reward alone beats standing ...
    assert m["return"] < stand_ret < s["return"]  # ... the fall penalty undoes it


@pytest.mark.parametrize("task, direction", [("pace-forward", 1.0), ("pace-backward", -1.0)])
def test_progress_pays_from_the_first_centimetre_per_second(task, direction):
    """Pace rewards progress along the target direction linearly up to 0.5 m/s: a trot at
    0.18 (forward) / 0.32 (backward) m/s earns ~0.36 / ~0.63 of w_v = 1.5 per step on average,
    where the Gaussian around 0.5 m/s paid ~0.3 / 0.75; standing still earns (almost) none of it."""
    env = A1MultitaskEnv(task)
    env.reset(seed=1)
    vel, _xs = [], []
    for k in range(600):
        _, _, terminated, _, info = env.step(qc.trot_action(k, direction))
        vel.append(info["reward_velocity"])
        assert not terminated
    vx = info["x_position"] / (600 * 0.03)
    assert direction * vx > 0.15
    # the mean of a capped ramp is at most w_v * mean progress fraction
    assert 0.2 * 1.5 * direction * vx / 0.5 < np.mean(vel) <= 1.5 * min(direction * vx / 0.5, 1.0) + 0.1
    env.reset(seed=1)
    still = [env.step(np.zeros(12))[4]["reward_velocity"] for _ in range(600)]
    assert np.mean(still[40:]) < 0.02
