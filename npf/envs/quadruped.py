"""Quadruped (Unitree A1) multitask environments on MuJoCo (PAPER.md, "Quadruped").

The paper's quadruped suite is the A1 robot imitating reference motions (pace
forward, pace backward, hop-turn, sidestep) in PyBullet, from Smith et al. 2021's
motion-imitation stack (TF1, gym 0.17), which does not install today.  This module
rebuilds the four tasks on MuJoCo with *hand-written task rewards* instead of
motion-imitation rewards: there are no reference clips, no pose/end-effector
tracking terms, and the expert learns a gait of its own that satisfies the task
(see "Departures from the paper" below).

Robot model
-----------
Built at runtime from ``pybullet_data/a1/a1.urdf`` (shipped in the ``pybullet``
wheel; only ``pybullet_data.getDataPath()`` is used, never the PyBullet engine):

* a free joint is added to the trunk (7 qpos / 6 qvel); the URDF's fixed links (imu,
  upper_shoulder, toe) stay welded child bodies without degrees of freedom
  (22 bodies + world, 12 hinge joints + the free joint);
* geometry = the URDF's *collision primitives* (trunk box, hip cylinders, thigh and
  calf boxes, 2 cm toe spheres).  MuJoCo's URDF importer discards the visual OBJ
  meshes, and they are not loaded: rendering shows the primitives;
* self-collisions are off (robot geoms have ``conaffinity=0``): the robot only
  touches the floor (plane, friction 1.0 / 0.005 / 0.0001, ``condim=3``);
* 12 position actuators (MuJoCo ``position`` servos) ``τ = kp (q_target − q) − kv q̇``
  with ``kp = 50`` and ``kv = 1`` (hip abduction) / ``2`` (thigh, calf); the
  motion-imitation A1 uses kp = 100 with the same kv, but 50 keeps a uniformly random
  policy upright ~3× longer and still gives ≈ 30 N·m (the real A1 peaks at 33.5 N·m)
  at a 0.6 rad error; torque clipped to the URDF effort limits (20 / 55 / 55 N·m);
  ``ctrlrange`` = joint limits; joint armature 0.01 kg·m² (≈ A1 rotor inertia ×
  gear²); ``implicitfast`` integrator;
* physics timestep 0.002 s, frame skip 15 ⇒ control period ``dt = 0.03 s`` (33.3 Hz,
  as the motion-imitation A1's 33 ms action repeat).

Joint order (qpos[7:19], qvel[6:18], actions): FR, FL, RR, RL legs, each (hip
abduction, thigh, calf).

Action ∈ [-1, 1]^12 (clipped): joint position targets ``q_target = q_stand + s ⊙ a`` clipped to the
joint limits, with ``q_stand = (0, 0.9, −1.8) × 4`` (motion-imitation's A1 initial
pose) and ``s = (0.3, 0.6, 0.6) × 4`` rad.

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

Task rewards
------------
Per control step, after the action has been applied for ``dt`` (k = index of the
step, 1..T; ``p``, ``z`` = trunk position/height; "before"/"after" = qpos before and
after the step)::

    v_xy  = R(−ψ0) · (p_xy_after − p_xy_before) / dt     # horizontal velocity, initial-heading frame
    v_z   = (z_after − z_before) / dt
    ψ_rel = wrap(ψ_after − ψ0)                            # wrap to (−π, π]
    up_z  = 1 − 2 (qx² + qy²)                              # world-z component of the trunk z axis
    τ     = data.actuator_force after the step            # torque of the last physics substep

    reward = w_alive
           + w_v   · m_v(v_xy, v*(k))                                # velocity tracking
           + w_ψ   · exp(−wrap(ψ_rel − ψ*(k))² / σ_ψ²)               # heading tracking
           + w_up  · clip(up_z, 0, 1)                                # upright
           + w_h   · clip((z − z_fall) / (z_nom − z_fall), 0, 1)      # height (one-sided)
           + w_hop · min(|v_z|, v_hop) / v_hop                       # hop bonus
           − w_τ   · mean_i (τ_i / τ_max,i)²                          # torque / energy
           − w_Δa  · mean_i (a_i − a_prev,i)² / 4                     # action smoothness
           − w_fall · [the step ends in a fall]                        # fall penalty (once)

with σ_v = 0.25 m/s, σ_ψ = 0.35 rad, z_nom = 0.22 m, z_fall = 0.12 m, v_hop = 0.5 m/s,
w_alive = 0.25, w_up = 0.1, w_h = 0.1, w_τ = 0.1, w_Δa = 0.1, w_fall = 50 and, per task:

==============  =========================================  ==================  ====  ====  =====
task            v*(k) = (vx*, vy*) [m/s]                   ψ*(k) [rad]         w_v   w_ψ   w_hop
==============  =========================================  ==================  ====  ====  =====
pace-forward    (+0.5, 0)                                  0                   1.5   0.3   0
pace-backward   (−0.5, 0)                                  0                   1.5   0.3   0
hop-turn        (0, 0)                                     (π/2)·sin(π k/T)    0.3   1.0   0.5
sidestep        (0, +0.3) if k ≤ T/2 else (0, −0.3)        0                   1.5   0.3   0
==============  =========================================  ==================  ====  ====  =====

(k is clipped to T if the episode runs past T without the TimeLimit wrapper.)
m_v = exp(−‖v_xy − v*‖² / σ_v²) for hop-turn; for pace and sidestep (``velocity_ramp``)
m_v = clip(v∥ / |v*|, 0, 1) · exp(−v⊥² / σ_v²), v∥ the velocity along v*, v⊥ across it.
Every term is bounded: reward ∈ [0.05, 2.25] for every task on a step that does not end in a
fall, and 50 less on the one that does, so surviving always pays and falling costs at once (not
only the reward no longer collected, which a critic learns late); standing still earns only
≈ 0.35–0.5 of the maximum (the task terms carry most of the return).  ``info`` holds every term (``reward_alive``,
``reward_velocity``, ``reward_heading``, ``reward_upright``, ``reward_height``,
``reward_hop``, ``reward_torque`` (≤ 0), ``reward_action_rate`` (≤ 0), ``reward_fall`` (0 or
−50); they sum to the
reward) and the quantities they are computed from.

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
import re
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle, seeding

EPISODE_LENGTH = 600
TIMESTEP = 0.002
FRAME_SKIP = 15
DT = TIMESTEP * FRAME_SKIP  # 0.03 s, 33.3 Hz control

LEGS = ("FR", "FL", "RR", "RL")
JOINTS = ("hip", "upper", "lower")
JOINT_NAMES = tuple(f"{leg}_{j}_joint" for leg in LEGS for j in JOINTS)
STAND_POSE = np.array([0.0, 0.9, -1.8] * 4)
ACTION_SCALE = np.array([0.3, 0.6, 0.6] * 4)
KP = 50.0
KV = np.array([1.0, 2.0, 2.0] * 4)
ARMATURE = 0.01
FLOOR_FRICTION = (1.0, 0.005, 0.0001)

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

# Reward constants shared by all tasks (module docstring).
SIGMA_V = 0.25
SIGMA_YAW = 0.35
Z_NOMINAL = 0.22
Z_FALL = 0.12
MIN_UP_Z = 0.5
V_HOP = 0.5
W_ALIVE = 0.25
W_UPRIGHT = 0.1
W_HEIGHT = 0.1
W_TORQUE = 0.1
W_ACTION_RATE = 0.1
# Paid once, on the step that ends in a fall.  Without it a fall costs only the reward the robot
# no longer collects, which the critic learns late: a constant action that tips the A1 forward
# (calves extended) earns 1.7 per step on pace-forward for 34 steps, twice the 0.78 of standing
# still, and SAC experts settled on such dives (docs/quadruped.md, "Why the 30K experts failed").
W_FALL = 50.0


@dataclass(frozen=True)
class QuadrupedTaskSpec:
    """Per-task reward parameters (module docstring table).

    ``target_vx``/``target_vy``: velocity target in the initial-heading frame; with
    ``reverse_at_half`` the target flips sign for steps k > T/2.  ``yaw_amplitude``:
    heading target ``A sin(π k / T)``.
    """

    target_vx: float = 0.0
    target_vy: float = 0.0
    reverse_at_half: bool = False
    yaw_amplitude: float = 0.0
    velocity_weight: float = 1.5
    yaw_weight: float = 0.3
    hop_weight: float = 0.0
    #: velocity term ``w_v · clip(v∥ / |v*|, 0, 1) · exp(−v⊥² / σ_v²)`` (progress along v*, capped
    #: at |v*|) instead of the Gaussian around v*: standing still earns 0 of it and every bit of
    #: progress pays, where the Gaussian gave 0.02·w_v at v = 0 and almost no gradient toward v*.
    velocity_ramp: bool = False


#: The paper's four tasks, in its order.
QUADRUPED_TASKS: dict[str, QuadrupedTaskSpec] = {
    "pace-forward": QuadrupedTaskSpec(target_vx=0.5, velocity_ramp=True),
    "pace-backward": QuadrupedTaskSpec(target_vx=-0.5, velocity_ramp=True),
    "hop-turn": QuadrupedTaskSpec(yaw_amplitude=math.pi / 2, velocity_weight=0.3, yaw_weight=1.0, hop_weight=0.5),
    "sidestep": QuadrupedTaskSpec(target_vy=0.3, reverse_at_half=True, velocity_ramp=True),
}


def a1_urdf_path() -> Path:
    """``pybullet_data/a1/a1.urdf`` from the installed ``pybullet`` wheel."""
    try:
        import pybullet_data
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "the quadruped suite needs the A1 URDF shipped in the `pybullet` wheel: pip install pybullet==3.2.7"
        ) from e
    path = Path(pybullet_data.getDataPath()) / "a1" / "a1.urdf"
    if not path.is_file():  # pragma: no cover
        raise FileNotFoundError(f"A1 URDF not found at {path}")
    return path


def _name_collisions(urdf_text: str) -> str:
    """Name every ``<collision>`` ``{link}_collision{i}`` (MuJoCo warns once per unnamed geom)."""
    out, link, counts = [], "", {}
    for piece in re.split(r'(<link name="[^"]*"|<collision>)', urdf_text):
        match = re.fullmatch(r'<link name="([^"]*)"', piece)
        if match:
            link = match.group(1)
        elif piece == "<collision>":
            i = counts[link] = counts.get(link, -1) + 1
            piece = f'<collision name="{link}_collision{i}">'
        out.append(piece)
    return "".join(out)


def build_a1_spec(urdf_path: str | Path | None = None) -> mujoco.MjSpec:
    """MuJoCo spec of the A1: URDF + free joint + floor + PD position actuators."""
    text = _name_collisions(Path(urdf_path or a1_urdf_path()).read_text())
    # Meshes are not needed: MuJoCo's URDF importer drops visual elements while parsing.
    spec = mujoco.MjSpec.from_string(text)
    spec.body("trunk").add_freejoint(name="root")  # the URDF root link is fixed to the world otherwise
    spec.modelname = "a1"
    # The URDF importer already dropped the visual meshes; keep our floor material/textures.
    spec.compiler.discardvisual = False
    spec.option.timestep = TIMESTEP
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST

    for geom in spec.geoms:  # robot geoms: collide with the floor only
        geom.contype = 1
        geom.conaffinity = 0
        geom.condim = 3
        geom.rgba = [1.0, 0.42, 0.04, 1.0]
    spec.body("trunk").geoms[0].name = "trunk"
    for leg in LEGS:  # the URDF's fixed toe links stay welded child bodies of the calves
        (toe,) = spec.body(f"{leg}_toe").geoms
        toe.name = f"{leg}_toe"
        toe.rgba = [0.2, 0.2, 0.2, 1.0]

    for name in JOINT_NAMES:
        spec.joint(name).armature = ARMATURE

    spec.add_texture(
        name="grid",
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        rgb1=[0.2, 0.3, 0.4],
        rgb2=[0.1, 0.15, 0.2],
        width=256,
        height=256,
    )
    material = spec.add_material(name="grid", texrepeat=[8, 8], texuniform=True, reflectance=0.1)
    textures = list(material.textures)
    textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "grid"
    material.textures = textures
    spec.add_texture(
        name="sky",
        type=mujoco.mjtTexture.mjTEXTURE_SKYBOX,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
        rgb1=[0.4, 0.6, 0.8],
        rgb2=[0.0, 0.0, 0.0],
        width=256,
        height=256,
    )
    spec.worldbody.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[0, 0, 0.05],
        material="grid",
        friction=list(FLOOR_FRICTION),
        contype=1,
        conaffinity=1,
        condim=3,
    )
    spec.worldbody.add_light(name="light", pos=[0, 0, 3], dir=[0, 0, -1], directional=True)

    for i, name in enumerate(JOINT_NAMES):
        j = spec.joint(name)
        lo, hi = (float(x) for x in j.range)
        effort = float(j.actfrcrange[1])
        act = spec.add_actuator(name=name.replace("_joint", "_motor"), target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        act.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        gain = np.zeros(10)
        gain[0] = KP
        bias = np.zeros(10)
        bias[1], bias[2] = -KP, -KV[i]
        act.gainprm = gain
        act.biasprm = bias
        act.ctrllimited = True
        act.ctrlrange = [lo, hi]
        act.forcelimited = True
        act.forcerange = [-effort, effort]
    return spec


def build_a1_model(urdf_path: str | Path | None = None) -> mujoco.MjModel:
    return build_a1_spec(urdf_path).compile()


def quat_to_rpy(q: np.ndarray) -> tuple[float, float, float]:
    """(roll, pitch, yaw), z-y-x convention, of a MuJoCo (w, x, y, z) quaternion."""
    w, x, y, z = (float(v) for v in q)
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw


def wrap_angle(a: float) -> float:
    """Wrap to (−π, π]."""
    return float(math.atan2(math.sin(a), math.cos(a)))


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
        s, T = self.task_spec, self.episode_steps
        k = min(int(k), T)
        v = np.array([s.target_vx, s.target_vy])
        if s.reverse_at_half and k > T / 2:
            v = -v
        return v, s.yaw_amplitude * math.sin(math.pi * k / T)

    def _velocity_match(self, v_xy: np.ndarray, v_target: np.ndarray) -> float:
        """In [0, 1]: the Gaussian around v*, or (``velocity_ramp``) progress along v* capped at |v*|
        times the Gaussian of the sideways velocity."""
        if not self.task_spec.velocity_ramp:
            return math.exp(-float(np.sum((v_xy - v_target) ** 2)) / SIGMA_V**2)
        speed = float(np.linalg.norm(v_target))
        u = v_target / speed
        along = float(v_xy @ u)
        across = v_xy - along * u
        return min(max(along / speed, 0.0), 1.0) * math.exp(-float(np.sum(across**2)) / SIGMA_V**2)

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
        s, d = self.task_spec, self.data
        k = self._step_count
        c, sn = math.cos(self._yaw0), math.sin(self._yaw0)
        dxy = (pos_after[0:2] - pos_before[0:2]) / self.dt
        v_xy = np.array([c * dxy[0] + sn * dxy[1], -sn * dxy[0] + c * dxy[1]])  # R(−ψ0) · dxy
        v_z = float(pos_after[2] - pos_before[2]) / self.dt
        _qw, qx, qy, _qz = (float(v) for v in d.qpos[3:7])
        roll, pitch, yaw = quat_to_rpy(d.qpos[3:7])
        yaw_rel = wrap_angle(yaw - self._yaw0)
        up_z = 1.0 - 2.0 * (qx * qx + qy * qy)
        z = float(pos_after[2])
        v_target, yaw_target = self.targets(k)
        torque = d.actuator_force / self.torque_limit

        terms = {
            "reward_alive": W_ALIVE,
            "reward_velocity": s.velocity_weight * self._velocity_match(v_xy, v_target),
            "reward_heading": s.yaw_weight * math.exp(-(wrap_angle(yaw_rel - yaw_target) ** 2) / SIGMA_YAW**2),
            "reward_upright": W_UPRIGHT * min(max(up_z, 0.0), 1.0),
            "reward_height": W_HEIGHT * min(max((z - Z_FALL) / (Z_NOMINAL - Z_FALL), 0.0), 1.0),
            "reward_hop": s.hop_weight * min(abs(v_z), V_HOP) / V_HOP,
            "reward_torque": -W_TORQUE * float(np.mean(torque**2)),
            "reward_action_rate": -W_ACTION_RATE * float(np.mean((action - self._last_action) ** 2)) / 4.0,
        }
        trunk_contact = self.trunk_floor_contact()
        fell = z < Z_FALL or up_z < MIN_UP_Z or trunk_contact
        terms["reward_fall"] = -W_FALL if fell else 0.0
        reward = float(sum(terms.values()))
        info = {
            **terms,
            "velocity_x": float(v_xy[0]),
            "velocity_y": float(v_xy[1]),
            "velocity_z": float(v_z),
            "target_vx": float(v_target[0]),
            "target_vy": float(v_target[1]),
            "yaw": yaw_rel,
            "target_yaw": float(yaw_target),
            "roll": roll,
            "pitch": pitch,
            "up_z": up_z,
            "height": z,
            "x_position": float(c * (pos_after[0] - self._xy0[0]) + sn * (pos_after[1] - self._xy0[1])),
            "y_position": float(-sn * (pos_after[0] - self._xy0[0]) + c * (pos_after[1] - self._xy0[1])),
            "phase": min(k, self.episode_steps) / self.episode_steps,
            "trunk_contact": trunk_contact,
            "fell": bool(fell),
        }
        return reward, info

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
