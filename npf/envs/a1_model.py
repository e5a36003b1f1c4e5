"""The Unitree A1 robot on MuJoCo, built from the URDF in the ``pybullet`` wheel (the quadruped
suite, :mod:`npf.envs.quadruped`), and the trunk-pose helpers its observation and rewards use.

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
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mujoco
import numpy as np

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
