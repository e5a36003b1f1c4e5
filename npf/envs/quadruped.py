"""Quadruped (Unitree A1) multitask environments on MuJoCo (PAPER.md, "Quadruped").

The paper's quadruped suite is the A1 robot imitating reference motions (pace
forward, pace backward, hop-turn, sidestep) in PyBullet, from Smith et al. 2021's
motion-imitation stack (TF1, gym 0.17), which does not install today.  This module
rebuilds the four tasks on MuJoCo with *hand-written task rewards* instead of
motion-imitation rewards: there are no reference clips, no pose/end-effector
tracking terms, and the expert learns a gait of its own that satisfies the task
(see "Departures from the paper" below).

The robot model (:mod:`npf.envs.a1_model`) and the task rewards (:mod:`npf.envs.quadruped_reward`)
have modules of their own.

Observation (50-d, float64)
---------------------------
====================  ======  ====================================================
slice                 size    content
====================  ======  ====================================================
``[0:12]``            12      joint angles ``qpos[7:19]`` (rad)
``[12:24]``           12      joint velocities ``qvel[6:18]`` (rad/s)
``[24:30]``           6       sin/cos of roll, pitch, and *relative* yaw ``ψ − ψ0``
                              (ψ0 = trunk yaw at reset), ordered (sin r, cos r,
                              sin p, cos p, sin ψ_rel, cos ψ_rel)
``[30:33]``           3       trunk angular velocity in the body frame ``qvel[3:6]``
``[33:36]``           3       trunk linear velocity in the body frame ``Rᵀ qvel[0:3]``
``[36]``              1       trunk height ``qpos[2]`` (m)
``[37:49]``           12      previous action ``a_{t−1}`` (zeros after reset)
``[49]``              1       episode phase ``min(k, T) / T`` (k = steps since reset,
                              T = ``episode_steps`` = 600)
====================  ======  ====================================================

The phase makes the time-scheduled targets of hop-turn and sidestep Markov.

Termination (fall): ``z < z_fall`` (0.12 m), or ``up_z < 0.5`` (trunk tilted more than
60°), or any contact between a trunk geom and the floor.  The 600-step limit is the
``TimeLimit`` wrapper added by ``gymnasium.make`` (see :mod:`npf.envs`).

Reset: joints ``q_stand + U(−0.05, 0.05)``, joint velocities ``0.1·N(0, 1)``, trunk yaw
``ψ0 ~ U(−0.1, 0.1)``, roll = pitch = 0, trunk at (0, 0, h) with h chosen so the
lowest toe touches the floor; all noise from the env's ``np_random`` (same seed ⇒ same
trajectory).

Departures from the paper
-------------------------
* Simulator: MuJoCo 3 instead of PyBullet; contact model, PD servo implementation and
  solver differ, self-collision is off.
* Rewards: dense hand-written task rewards (above) instead of motion imitation of
  mocap clips (the paper's experts track reference poses/velocities of dog motions).
  "Pace" here means "walk at ±0.5 m/s" with any gait; "hop-turn" means "turn left to
  +90° and back over the episode while bouncing the trunk vertically"; "sidestep"
  means "walk sideways 0.3 m/s to the left for half an episode, then back".
* Observation: our own 50-d state (above), not the motion-imitation observation
  (IMU + motor angles history + future reference frames).
* Episodes: 600 control steps at 33.3 Hz (18 s), as in the paper's datasets.
"""

from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle, seeding

from npf.envs.a1_model import (
    ACTION_SCALE,
    DT,
    FRAME_SKIP,
    JOINT_NAMES,
    LEGS,
    STAND_POSE,
    a1_urdf_path,
    build_a1_model,
    build_a1_spec,
    quat_to_rpy,
)
from npf.envs.quadruped_reward import QUADRUPED_TASKS, QuadrupedTaskSpec, step_reward, targets

EPISODE_LENGTH = 600

OBS_DIM = 50
OBS_SLICES = {
    "joint_pos": slice(0, 12),
    "joint_vel": slice(12, 24),
    "orientation": slice(24, 30),
    "angular_velocity": slice(30, 33),
    "linear_velocity": slice(33, 36),
    "height": slice(36, 37),
    "last_action": slice(37, 49),
    "phase": slice(49, 50),
}


class A1MultitaskEnv(gym.Env, EzPickle):
    """Unitree A1 on flat ground with one of the paper's four task rewards.

    Args:
        task: one of :data:`QUADRUPED_TASKS` (``pace-forward``, ``pace-backward``,
            ``hop-turn``, ``sidestep``).
        episode_steps: T of the time schedules and the phase observation (600); the
            episode limit itself is the ``TimeLimit`` wrapper.
        seed: if given, seeds the env RNG and the spaces at construction, so a plain
            ``reset()`` behaves like ``reset(seed=seed)``.
        render_mode: ``None`` or ``"rgb_array"`` (offscreen, needs a GL backend such as
            ``MUJOCO_GL=egl``/``osmesa``; the renderer is created on the first
            ``render()`` call) or ``"human"``.
        width, height: rendered image size.
        urdf_path: A1 URDF (default: the one in ``pybullet_data``).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": int(round(1.0 / DT))}  # noqa: RUF012 (gymnasium API)

    def __init__(
        self,
        task: str = "pace-forward",
        episode_steps: int = EPISODE_LENGTH,
        seed: int | None = None,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
        urdf_path: str | None = None,
    ):
        EzPickle.__init__(
            self,
            task=task,
            episode_steps=episode_steps,
            seed=seed,
            render_mode=render_mode,
            width=width,
            height=height,
            urdf_path=urdf_path,
        )
        if task not in QUADRUPED_TASKS:
            raise ValueError(f"unknown quadruped task {task!r}; valid: {', '.join(QUADRUPED_TASKS)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.task = task
        self.task_spec = QUADRUPED_TASKS[task]
        self.episode_steps = int(episode_steps)
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.frame_skip = FRAME_SKIP
        self.dt = DT

        self.model = build_a1_model(urdf_path)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qpos_adr = np.array([m.jnt_qposadr[m.joint(n).id] for n in JOINT_NAMES])
        self._qvel_adr = np.array([m.jnt_dofadr[m.joint(n).id] for n in JOINT_NAMES])
        assert list(self._qpos_adr) == list(range(7, 19)) and list(self._qvel_adr) == list(range(6, 18))
        self.joint_low = m.jnt_range[[m.joint(n).id for n in JOINT_NAMES], 0].copy()
        self.joint_high = m.jnt_range[[m.joint(n).id for n in JOINT_NAMES], 1].copy()
        self.torque_limit = m.actuator_forcerange[:, 1].copy()
        self.trunk_body = m.body("trunk").id
        self.floor_geom = m.geom("floor").id
        self.trunk_geoms = frozenset(int(g) for g in np.flatnonzero(m.geom_bodyid == self.trunk_body))
        self.toe_geoms = np.array([m.geom(f"{leg}_toe").id for leg in LEGS])
        self.toe_radius = float(m.geom_size[self.toe_geoms[0], 0])

        self.action_space = spaces.Box(-1.0, 1.0, shape=(12,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,), dtype=np.float64)

        self._step_count = 0
        self._yaw0 = 0.0
        self._xy0 = np.zeros(2)
        self._last_action = np.zeros(12)
        self._renderer = None
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self.action_space.seed(seed)
            self.observation_space.seed(seed)

    # ------------------------------------------------------------------ helpers
    @property
    def yaw0(self) -> float:
        """Trunk yaw right after the last reset (heading frame of the targets)."""
        return self._yaw0

    @property
    def step_count(self) -> int:
        return self._step_count

    def action_to_target(self, action: np.ndarray) -> np.ndarray:
        """Joint position targets of an action in [-1, 1]^12."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return np.clip(STAND_POSE + ACTION_SCALE * a, self.joint_low, self.joint_high)

    def targets(self, k: int) -> tuple[np.ndarray, float]:
        """(velocity target v*(k) in the initial-heading frame, yaw target ψ*(k)) of step k."""
        return targets(self.task_spec, k, self.episode_steps)

    def trunk_floor_contact(self) -> bool:
        d = self.data
        for i in range(d.ncon):
            g1, g2 = int(d.contact.geom1[i]), int(d.contact.geom2[i])
            if (g1 == self.floor_geom and g2 in self.trunk_geoms) or (g2 == self.floor_geom and g1 in self.trunk_geoms):
                return True
        return False

    def _get_obs(self) -> np.ndarray:
        d = self.data
        quat = d.qpos[3:7]
        roll, pitch, yaw = quat_to_rpy(quat)
        yaw_rel = yaw - self._yaw0
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, quat)
        lin_vel_body = rot.reshape(3, 3).T @ d.qvel[0:3]
        phase = min(self._step_count, self.episode_steps) / self.episode_steps
        return np.concatenate(
            [
                d.qpos[7:19],
                d.qvel[6:18],
                [
                    math.sin(roll),
                    math.cos(roll),
                    math.sin(pitch),
                    math.cos(pitch),
                    math.sin(yaw_rel),
                    math.cos(yaw_rel),
                ],
                d.qvel[3:6],
                lin_vel_body,
                d.qpos[2:3],
                self._last_action,
                [phase],
            ]
        ).astype(np.float64)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        d, m = self.data, self.model
        mujoco.mj_resetData(m, d)
        qpos = np.zeros(m.nq)
        qpos[7:19] = np.clip(STAND_POSE + rng.uniform(-0.05, 0.05, size=12), self.joint_low, self.joint_high)
        yaw0 = float(rng.uniform(-0.1, 0.1))
        qpos[3:7] = [math.cos(yaw0 / 2), 0.0, 0.0, math.sin(yaw0 / 2)]
        d.qpos[:] = qpos
        mujoco.mj_kinematics(m, d)
        lowest = float(np.min(d.geom_xpos[self.toe_geoms, 2])) - self.toe_radius
        d.qpos[2] = -lowest  # trunk at z=0 before the shift: lowest toe now touches the floor
        d.qvel[:] = 0.0
        d.qvel[6:18] = 0.1 * rng.standard_normal(12)
        d.ctrl[:] = d.qpos[7:19]
        mujoco.mj_forward(m, d)
        self._yaw0 = yaw0
        self._xy0 = d.qpos[0:2].copy()
        self._step_count = 0
        self._last_action = np.zeros(12)
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), {"yaw0": yaw0, "height": float(d.qpos[2])}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(12), -1.0, 1.0)
        d = self.data
        pos_before = d.qpos[0:3].copy()
        d.ctrl[:] = self.action_to_target(action)
        mujoco.mj_step(self.model, d, nstep=self.frame_skip)
        self._step_count += 1
        pos_after = d.qpos[0:3].copy()

        reward, info = self._reward(pos_before, pos_after, action)
        self._last_action = action.copy()
        terminated = bool(info["fell"])
        obs = self._get_obs()
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, False, info

    def _reward(self, pos_before: np.ndarray, pos_after: np.ndarray, action: np.ndarray) -> tuple[float, dict]:
        return step_reward(
            self.task_spec,
            k=self._step_count,
            episode_steps=self.episode_steps,
            dt=self.dt,
            yaw0=self._yaw0,
            xy0=self._xy0,
            pos_before=pos_before,
            pos_after=pos_after,
            quat=self.data.qpos[3:7],
            torque=self.data.actuator_force / self.torque_limit,
            action=action,
            last_action=self._last_action,
            trunk_contact=self.trunk_floor_contact(),
        )

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to the env")
            return None
        if self._renderer is None:
            # Imported lazily: creating the GL context needs MUJOCO_GL=egl/osmesa/glfw to work here.
            from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

            self._renderer = MujocoRenderer(
                self.model,
                self.data,
                default_cam_config={
                    "type": mujoco.mjtCamera.mjCAMERA_TRACKING,
                    "trackbodyid": self.trunk_body,
                    "distance": 1.6,
                    "elevation": -20.0,
                    "azimuth": 120.0,
                },
                width=self.width,
                height=self.height,
            )
        # Gymnasium's renderer draws with its free camera (it resets the camera type each frame):
        # follow the trunk by moving the free camera's look-at point
        self._renderer._get_viewer(self.render_mode).cam.lookat[:] = self.data.xpos[self.trunk_body]
        return self._renderer.render(self.render_mode)

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


__all__ = [
    "DT",
    "EPISODE_LENGTH",
    "OBS_DIM",
    "OBS_SLICES",
    "QUADRUPED_TASKS",
    "A1MultitaskEnv",
    "QuadrupedTaskSpec",
    "a1_urdf_path",
    "build_a1_model",
    "build_a1_spec",
]
