"""HalfCheetah multitask environments (PAPER.md, "HalfCheetah task suites").

All tasks share Gymnasium's MuJoCo ``HalfCheetah-v5`` model and dynamics
(frame_skip 5, dt = 0.05, reset noise qpos + U(-0.1, 0.1), qvel + 0.1·N(0, 1),
17-d observation whose first entry is the torso z coordinate ``qpos[1]``); they
differ only in the reward, which is one parameterized family::

    reward = sign · min(v, cap) + jump_weight · (z − z0) − ctrl_cost_weight · ‖a‖²

with ``v = (x_after − x_before) / dt``, ``z = qpos[1]`` after the step and ``z0``
its value right after reset.  The absolute torso height is ``0.7 + qpos[1]``
(the torso body sits at z = 0.7 in ``half_cheetah.xml``), so ``z − z0`` is the
same either way; ``info["torso_height"]`` reports the absolute value.

| task            | sign | cap | jump_weight | ctrl_cost_weight |
|-----------------|------|-----|-------------|------------------|
| forward         |  +1  |  3  |      0      |       0.05       |
| backward        |  −1  |  3  |      0      |       0.05       |
| jump            |   0  |  —  |     15      |       0.05       |
| forward-jump    |  +1  |  3  |     15      |       0.10       |
| backward-jump   |  −1  |  3  |     15      |       0.10       |
| vel-g           |  +1  |  g  |      0      |       0.05       |

Note that "backward" is ``−min(v, 3)`` exactly as in the paper: the cap bounds
*forward* speed, so running backwards is rewarded without a cap.

Episodes never terminate; the 1000-step limit is the ``TimeLimit`` wrapper added
by ``gymnasium.make`` (see :mod:`npf.envs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import seeding

EPISODE_LENGTH = 1000
VELOCITY_GOALS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


@dataclass(frozen=True)
class CheetahRewardSpec:
    """Parameters of the reward family (see module docstring)."""

    velocity_sign: float = 1.0
    velocity_cap: float = 3.0
    jump_weight: float = 0.0
    ctrl_cost_weight: float = 0.05


#: 5-task suite (PAPER.md table).
CHEETAH_TASKS: dict[str, CheetahRewardSpec] = {
    "forward": CheetahRewardSpec(velocity_sign=1.0, velocity_cap=3.0, jump_weight=0.0, ctrl_cost_weight=0.05),
    "backward": CheetahRewardSpec(velocity_sign=-1.0, velocity_cap=3.0, jump_weight=0.0, ctrl_cost_weight=0.05),
    "jump": CheetahRewardSpec(velocity_sign=0.0, velocity_cap=3.0, jump_weight=15.0, ctrl_cost_weight=0.05),
    "forward-jump": CheetahRewardSpec(velocity_sign=1.0, velocity_cap=3.0, jump_weight=15.0, ctrl_cost_weight=0.1),
    "backward-jump": CheetahRewardSpec(velocity_sign=-1.0, velocity_cap=3.0, jump_weight=15.0, ctrl_cost_weight=0.1),
}

#: Constrained-velocity suite: min(v, g) − 0.05‖a‖².
CHEETAH_VELOCITY_TASKS: dict[str, CheetahRewardSpec] = {
    f"vel-{g:.1f}": CheetahRewardSpec(velocity_sign=1.0, velocity_cap=g, jump_weight=0.0, ctrl_cost_weight=0.05)
    for g in VELOCITY_GOALS
}


class HalfCheetahMultitaskEnv(HalfCheetahEnv):
    """HalfCheetah-v5 with the paper's parameterized multitask reward.

    Args:
        velocity_sign: multiplies ``min(v, velocity_cap)`` (+1 forward, −1 backward, 0 none).
        velocity_cap: the cap in ``min(v, cap)``.
        jump_weight: weight of ``z − z0``.
        ctrl_cost_weight: weight of ``‖a‖²`` (subtracted).
        seed: if given, seeds the env RNG (reset noise) and the action/observation
            spaces at construction, so a plain ``reset()`` behaves like ``reset(seed=seed)``.
        **kwargs: forwarded to ``HalfCheetahEnv`` (e.g. ``render_mode``, ``reset_noise_scale``).
    """

    def __init__(
        self,
        velocity_sign: float = 1.0,
        velocity_cap: float = 3.0,
        jump_weight: float = 0.0,
        ctrl_cost_weight: float = 0.05,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(ctrl_cost_weight=ctrl_cost_weight, forward_reward_weight=1.0, **kwargs)
        utils.EzPickle.__init__(
            self,
            velocity_sign=velocity_sign,
            velocity_cap=velocity_cap,
            jump_weight=jump_weight,
            ctrl_cost_weight=ctrl_cost_weight,
            seed=seed,
            **kwargs,
        )
        self.reward_spec = CheetahRewardSpec(
            velocity_sign=float(velocity_sign),
            velocity_cap=float(velocity_cap),
            jump_weight=float(jump_weight),
            ctrl_cost_weight=float(ctrl_cost_weight),
        )
        # Absolute torso height = torso body offset (0.7) + rootz slide qpos[1].
        self._torso_z_offset = float(self.model.body("torso").pos[2])
        self._z0 = float(self.init_qpos[1])
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self.action_space.seed(seed)
            self.observation_space.seed(seed)

    @classmethod
    def from_spec(cls, spec: CheetahRewardSpec, **kwargs: Any) -> HalfCheetahMultitaskEnv:
        return cls(**asdict(spec), **kwargs)

    @property
    def z0(self) -> float:
        """Torso z (``qpos[1]``) right after the last reset."""
        return self._z0

    def reset_model(self):
        observation = super().reset_model()
        self._z0 = float(self.data.qpos[1])
        return observation

    def _get_reset_info(self):
        info = super()._get_reset_info()
        info["z0"] = self._z0
        return info

    def step(self, action):
        x_before = float(self.data.qpos[0])
        self.do_simulation(action, self.frame_skip)
        x_after = float(self.data.qpos[0])
        z = float(self.data.qpos[1])
        x_velocity = (x_after - x_before) / self.dt

        observation = self._get_obs()
        reward, reward_info = self._multitask_reward(x_velocity, z, action)
        info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "z": z,
            "z0": self._z0,
            "torso_height": self._torso_z_offset + z,
            **reward_info,
        }
        if self.render_mode == "human":
            self.render()
        # Never terminates; truncation comes from the TimeLimit wrapper.
        return observation, reward, False, False, info

    def _multitask_reward(self, x_velocity: float, z: float, action) -> tuple[float, dict[str, float]]:
        s = self.reward_spec
        reward_run = s.velocity_sign * min(x_velocity, s.velocity_cap)
        reward_jump = s.jump_weight * (z - self._z0)
        reward_ctrl = -s.ctrl_cost_weight * float(np.sum(np.square(action)))
        reward = reward_run + reward_jump + reward_ctrl
        return float(reward), {
            "reward_run": float(reward_run),
            "reward_jump": float(reward_jump),
            "reward_ctrl": float(reward_ctrl),
        }
