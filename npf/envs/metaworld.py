"""Meta-World MT10 single-task environments (PAPER.md, "Meta-World MT10").

Each task is a fixed-goal, goal-observable Meta-World 3.x ``-v3`` environment
(39-d observation, 4-d action).  Episodes are truncated at 150 steps by the
``TimeLimit`` wrapper that ``gymnasium.make`` adds (see :mod:`npf.envs`); the
env's ``info["success"]`` is passed through unchanged.

Seeding (Meta-World 3.1.1, ``env_dict._create_observable_goal_envs``): the
goal / object positions (``_last_rand_vec``) are drawn ONCE, in the constructor,
from the *global* ``np.random`` after ``np.random.seed(seed)``, and then frozen
(``_freeze_rand_vec = True``).  ``reset(seed=...)`` ignores its seed, and the
env's own ``np_random`` is never used for dynamics or resets.  The simulation is
deterministic, so every ``reset()`` returns the identical observation and a fixed
action sequence gives an identical trajectory.  Therefore:

* ``goal_seed`` picks the fixed goal.  The paper uses goal-observable envs
  "seeded with 0", so it defaults to 0 for every run seed; pass
  ``goal_seed=None`` to tie the goal to ``seed`` instead.
* ``seed`` seeds the env's RNG and its action/observation spaces (e.g.
  ``action_space.sample()``); it does not change the dynamics.

``metaworld`` is imported lazily, inside :class:`MetaWorldTaskEnv`, because
importing it is slow.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

EPISODE_LENGTH = 150
PAPER_GOAL_SEED = 0

MT10_TASKS: tuple[str, ...] = (
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
)

# Inner Meta-World envs raise once curr_path_length reaches max_path_length (500 by
# default); make it effectively infinite so gymnasium's TimeLimit is the only horizon.
_INNER_MAX_PATH_LENGTH = 10**9


def metaworld_env_name(task: str) -> str:
    """``"reach"`` -> ``"reach-v3-goal-observable"`` (the key in Meta-World's env dict)."""
    return f"{task}-v3-goal-observable"


def _build_goal_observable(task: str, goal_seed: int, render_mode: str | None = None):
    import metaworld  # noqa: F401  (lazy: slow import)
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    key = metaworld_env_name(task)
    if key not in ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE:
        raise ValueError(f"unknown Meta-World task {task!r} (no {key!r} in Meta-World's goal-observable envs)")
    # The constructor seeds the global np.random with goal_seed, draws the goal and
    # restores the global RNG state afterwards (only when a seed is given, so always give one).
    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[key](seed=int(goal_seed), render_mode=render_mode)
    env.max_path_length = _INNER_MAX_PATH_LENGTH
    return env


class MetaWorldTaskEnv(gym.Wrapper):
    """One fixed-goal, goal-observable MT10 task.

    Args:
        task: MT10 task name without version, e.g. ``"pick-place"``.
        seed: seeds the env RNG and its spaces (not the goal, unless ``goal_seed is None``).
        goal_seed: seed of the fixed goal / object placement; default 0 (the paper's).
            ``None`` means "use ``seed``" (and 0 if ``seed`` is also ``None``).
        render_mode: forwarded to Meta-World.
    """

    def __init__(
        self,
        task: str,
        seed: int | None = None,
        goal_seed: int | None = PAPER_GOAL_SEED,
        render_mode: str | None = None,
    ):
        if goal_seed is None:
            goal_seed = seed if seed is not None else PAPER_GOAL_SEED
        env = _build_goal_observable(task, goal_seed, render_mode=render_mode)
        super().__init__(env)
        # Meta-World builds ``observation_space`` while the env is still partially observable (goal
        # bounds 0, 0) and only then makes it goal-observable; its recomputed
        # ``sawyer_observation_space`` holds the goal's real bounds (it is what ``step`` clips to).
        self.observation_space = env.unwrapped.sawyer_observation_space
        self.task = task
        self.goal_seed = int(goal_seed)
        if seed is not None:
            env.seed(int(seed))  # np_random + action/observation/goal spaces

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        # Meta-World ignores reset(seed=...): apply it to the RNG / spaces ourselves.
        if seed is not None:
            self.env.unwrapped.seed(int(seed))
        obs, info = self.env.reset()
        return np.asarray(obs, dtype=np.float64), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return np.asarray(obs, dtype=np.float64), float(reward), bool(terminated), bool(truncated), info

    @property
    def goal(self) -> np.ndarray:
        """The fixed goal position (last 3 entries of the observation)."""
        return np.asarray(self.env.unwrapped._target_pos, dtype=np.float64).copy()
