"""Config-declared task suites: any registered Gymnasium environments with continuous actions.

A suite is declared under ``custom_suites`` in the pipeline config (see docs/own-suite.md)::

    custom_suites:
      pendulum:
        tasks:
          earth: {env_id: Pendulum-v1, kwargs: {g: 9.81}}
          moon:  {env_id: Pendulum-v1, kwargs: {g: 1.62}, reward_scale: 1.0, max_episode_steps: 200}
        success_metric: false

and then named like a built-in suite (``suites: [pendulum]``). Each task is registered with
Gymnasium as ``npf/<suite>-<task>-v0`` (:func:`npf.envs.register_custom_suites`), built by
:func:`make_custom_task`:

* ``gymnasium.make(env_id, **kwargs)`` without the base env's own time limit; the npf id adds
  one of ``max_episode_steps`` steps (default: the base env's registered limit);
* actions: a flat ``Box`` with finite bounds, linearly rescaled to [-1, 1] (``RescaleAction``)
  when its bounds are not already [-1, 1], so every policy and dataset of the pipeline acts in
  [-1, 1] (datasets store the rescaled action);
* rewards multiplied by ``reward_scale`` (default 1);
* observations: a flat ``Box`` (1-D), passed through unchanged.

All tasks of a suite must have the same observation and action sizes and the same episode
length (the multitask networks are shared; nothing is padded): :func:`check_suite` builds each
task once and raises a one-line ``ValueError`` naming the task otherwise. Discrete action
spaces are rejected the same way.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENTRY_POINT = "npf.envs.custom:make_custom_task"


class ScaleReward(gym.RewardWrapper, gym.utils.RecordConstructorArgs):
    """Multiply every reward by a constant."""

    def __init__(self, env: gym.Env, scale: float):
        gym.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gym.RewardWrapper.__init__(self, env)
        self.scale = float(scale)

    def reward(self, reward):
        return reward * self.scale


def _unit_bounds(space: spaces.Box) -> bool:
    return bool(np.all(space.low == -1.0) and np.all(space.high == 1.0))


def space_problem(env: gym.Env) -> str | None:
    """Why the env cannot be an npf task (None if it can)."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(act, spaces.Box):
        return (
            f"action space {act} is not continuous (npf needs a gymnasium.spaces.Box; "
            f"discrete-action envs are not supported)"
        )
    if len(act.shape) != 1:
        return f"action space has shape {act.shape}, npf needs a flat (1-D) Box"
    if not (np.all(np.isfinite(act.low)) and np.all(np.isfinite(act.high))):
        return f"action space {act} has infinite bounds (they are rescaled to [-1, 1])"
    if not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
        return (
            f"observation space {obs} is not a flat (1-D) Box "
            f"(wrap the env, e.g. with gymnasium.wrappers.FlattenObservation, and register that)"
        )
    return None


def make_custom_task(
    base_id: str,
    env_kwargs: Mapping[str, Any] | None = None,
    reward_scale: float = 1.0,
    seed: int | None = None,
    **make_kwargs: Any,
) -> gym.Env:
    """Entry point of a custom task: the base env, action-rescaled and reward-scaled.

    ``seed`` seeds the env at construction (``reset(seed=seed)`` once, and the action space), so
    a later plain ``reset()`` is reproducible, as for the built-in suites. ``make_kwargs`` (e.g.
    ``render_mode``) go to ``gymnasium.make`` of the base env; the time limit is the npf
    registration's (the base env's own ``TimeLimit`` is not applied).
    """
    env = gym.make(base_id, max_episode_steps=-1, disable_env_checker=True, **{**dict(env_kwargs or {}), **make_kwargs})
    problem = space_problem(env)
    if problem:
        env.close()
        raise ValueError(f"{base_id}: {problem}")
    if not _unit_bounds(env.action_space):
        shape = env.action_space.shape
        env = gym.wrappers.RescaleAction(env, np.full(shape, -1.0, np.float32), np.full(shape, 1.0, np.float32))
    if float(reward_scale) != 1.0:
        env = ScaleReward(env, float(reward_scale))
    if seed is not None:
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
    return env


@dataclass(frozen=True)
class CustomTask:
    base_id: str
    kwargs: Mapping[str, Any]
    max_episode_steps: int
    reward_scale: float

    def entry_kwargs(self) -> dict:
        return {"base_id": self.base_id, "env_kwargs": dict(self.kwargs), "reward_scale": self.reward_scale}


def resolve_tasks(suite: str, decl: Mapping[str, Any]) -> dict[str, CustomTask]:
    """Task name -> :class:`CustomTask` of one ``custom_suites`` entry (episode lengths resolved).

    Raises a one-line ``ValueError`` naming ``custom_suites.<suite>.tasks.<task>`` when a base id
    is not registered with Gymnasium or no episode length can be found.
    """
    tasks = decl.get("tasks") or {}
    if not tasks:
        raise ValueError(f"custom_suites.{suite}.tasks: declare at least one task")
    out = {}
    for task, t in tasks.items():
        where = f"custom_suites.{suite}.tasks.{task}"
        base_id = t.get("env_id")
        if not base_id:
            raise ValueError(f"{where}.env_id: missing (a registered Gymnasium id, e.g. Hopper-v5)")
        try:
            if ":" in base_id:  # "package.module:Env-v0": importing the module registers the env
                module, _, name = base_id.partition(":")
                importlib.import_module(module)
            else:
                name = base_id
            spec = gym.spec(name)
        except ImportError as e:
            raise ValueError(f"{where}.env_id: cannot import {module!r} ({_one_line(e)})") from None
        except gym.error.Error as e:
            raise ValueError(f"{where}.env_id: {_one_line(e)}") from None
        steps = t.get("max_episode_steps") or spec.max_episode_steps
        if not steps:
            raise ValueError(f"{where}.max_episode_steps: {base_id} has no registered time limit; set one")
        out[task] = CustomTask(base_id, dict(t.get("kwargs") or {}), int(steps), float(t.get("reward_scale", 1.0)))
    return out


def check_suite(suite: str, tasks: Mapping[str, CustomTask]) -> tuple[int, int, int]:
    """Build every task once; all must be valid npf tasks of equal sizes and episode length.

    Returns ``(obs_dim, act_dim, episode_length)``; raises a one-line ``ValueError`` naming the
    task otherwise.
    """
    first: tuple[str, tuple[int, int, int]] | None = None
    for task, t in tasks.items():
        where = f"custom_suites.{suite}.tasks.{task}"
        try:
            env = gym.make(t.base_id, max_episode_steps=-1, disable_env_checker=True, **dict(t.kwargs))
        except Exception as e:  # unknown kwargs, missing optional dependency (box2d, ...), ...
            raise ValueError(
                f"{where}: cannot build {t.base_id} with kwargs {dict(t.kwargs)}: {type(e).__name__}: {_one_line(e)}"
            ) from None
        try:
            problem = space_problem(env)
            if problem:
                raise ValueError(f"{where} ({t.base_id}): {problem}")
            dims = (env.observation_space.shape[0], env.action_space.shape[0], t.max_episode_steps)
        finally:
            env.close()
        if first is None:
            first = (task, dims)
        elif dims != first[1]:
            (o0, a0, l0), (o1, a1, l1) = first[1], dims
            what = (
                f"observation size {o1} vs {o0}"
                if o1 != o0
                else f"action size {a1} vs {a0}"
                if a1 != a0
                else f"episode length {l1} vs {l0} (set max_episode_steps)"
            )
            raise ValueError(
                f"{where} ({t.base_id}): {what} of task {first[0]!r}; the tasks of a suite share "
                f"one network, so their observation/action sizes and episode lengths must match"
            )
    assert first is not None
    return first[1]


def fingerprint(decl: Mapping[str, Any]) -> str:
    return json.dumps(decl, sort_keys=True, default=str)


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
