"""The quadruped suite's hand-written task rewards (:mod:`npf.envs.quadruped`).

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from npf.envs.a1_model import quat_to_rpy, wrap_angle

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


def targets(spec: QuadrupedTaskSpec, k: int, episode_steps: int) -> tuple[np.ndarray, float]:
    """(velocity target v*(k) in the initial-heading frame, yaw target ψ*(k)) of step k."""
    T = episode_steps
    k = min(int(k), T)
    v = np.array([spec.target_vx, spec.target_vy])
    if spec.reverse_at_half and k > T / 2:
        v = -v
    return v, spec.yaw_amplitude * math.sin(math.pi * k / T)


def velocity_match(spec: QuadrupedTaskSpec, v_xy: np.ndarray, v_target: np.ndarray) -> float:
    """In [0, 1]: the Gaussian around v*, or (``velocity_ramp``) progress along v* capped at |v*|
    times the Gaussian of the sideways velocity."""
    if not spec.velocity_ramp:
        return math.exp(-float(np.sum((v_xy - v_target) ** 2)) / SIGMA_V**2)
    speed = float(np.linalg.norm(v_target))
    u = v_target / speed
    along = float(v_xy @ u)
    across = v_xy - along * u
    return min(max(along / speed, 0.0), 1.0) * math.exp(-float(np.sum(across**2)) / SIGMA_V**2)


def step_reward(
    spec: QuadrupedTaskSpec,
    *,
    k: int,
    episode_steps: int,
    dt: float,
    yaw0: float,
    xy0: np.ndarray,
    pos_before: np.ndarray,
    pos_after: np.ndarray,
    quat: np.ndarray,
    torque: np.ndarray,
    action: np.ndarray,
    last_action: np.ndarray,
    trunk_contact: bool,
) -> tuple[float, dict]:
    """The reward of control step ``k`` and its ``info`` (every term and what it is computed from).

    ``pos_*``: trunk position before/after the step; ``quat``: trunk orientation after it;
    ``torque``: actuator forces over their limits; ``trunk_contact``: a trunk geom touches the floor."""
    c, sn = math.cos(yaw0), math.sin(yaw0)
    dxy = (pos_after[0:2] - pos_before[0:2]) / dt
    v_xy = np.array([c * dxy[0] + sn * dxy[1], -sn * dxy[0] + c * dxy[1]])  # R(−ψ0) · dxy
    v_z = float(pos_after[2] - pos_before[2]) / dt
    _qw, qx, qy, _qz = (float(v) for v in quat)
    roll, pitch, yaw = quat_to_rpy(quat)
    yaw_rel = wrap_angle(yaw - yaw0)
    up_z = 1.0 - 2.0 * (qx * qx + qy * qy)
    z = float(pos_after[2])
    v_target, yaw_target = targets(spec, k, episode_steps)

    terms = {
        "reward_alive": W_ALIVE,
        "reward_velocity": spec.velocity_weight * velocity_match(spec, v_xy, v_target),
        "reward_heading": spec.yaw_weight * math.exp(-(wrap_angle(yaw_rel - yaw_target) ** 2) / SIGMA_YAW**2),
        "reward_upright": W_UPRIGHT * min(max(up_z, 0.0), 1.0),
        "reward_height": W_HEIGHT * min(max((z - Z_FALL) / (Z_NOMINAL - Z_FALL), 0.0), 1.0),
        "reward_hop": spec.hop_weight * min(abs(v_z), V_HOP) / V_HOP,
        "reward_torque": -W_TORQUE * float(np.mean(torque**2)),
        "reward_action_rate": -W_ACTION_RATE * float(np.mean((action - last_action) ** 2)) / 4.0,
    }
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
        "x_position": float(c * (pos_after[0] - xy0[0]) + sn * (pos_after[1] - xy0[1])),
        "y_position": float(-sn * (pos_after[0] - xy0[0]) + c * (pos_after[1] - xy0[1])),
        "phase": min(k, episode_steps) / episode_steps,
        "trunk_contact": trunk_contact,
        "fell": bool(fell),
    }
    return reward, info
