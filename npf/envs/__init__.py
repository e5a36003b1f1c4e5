"""Environment registry: task suites of the NPF reproduction.

Importing this package registers every task with Gymnasium, so
``gymnasium.make("npf/cheetah-forward-v0")`` (or ``"npf/mt10-reach-v0"``, ...)
works afterwards.  To add a built-in suite, add a :class:`SuiteSpec` to ``SUITE_SPECS``.
Suites declared in a config under ``custom_suites`` (any Gymnasium envs with continuous actions,
see :mod:`npf.envs.custom` and docs/own-suite.md) are added to ``SUITE_SPECS`` / ``SUITES`` by
:func:`register_custom_suites`, which :func:`npf.config.validate` (and ``section`` /
``suite_tasks``) call with the config.

Seeding: ``make_env(..., seed=s)`` seeds the env at construction, so a plain
``reset()`` is reproducible (for cheetah it equals ``reset(seed=s)``).  For MT10
the seed does not move the goal (fixed, ``goal_seed=0`` as in the paper; see
:mod:`npf.envs.metaworld`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from npf.envs import cheetah as _cheetah
from npf.envs import custom as _custom
from npf.envs import metaworld as _metaworld
from npf.envs import quadruped as _quadruped


@dataclass(frozen=True)
class SuiteSpec:
    """A task suite: how its env ids are formed and how its envs are built.

    ``tasks`` maps task name -> kwargs of ``entry_point`` (a ``"module:attr"``
    string, so heavy imports happen only when an env of the suite is made).
    """

    name: str
    id_prefix: str  # env id = f"npf/{id_prefix}-{task}-v0"
    entry_point: str
    tasks: Mapping[str, Mapping[str, Any]]
    episode_length: int
    success_metric: bool = False  # True: evaluate by info["success"] (any step)
    disable_env_checker: bool = False
    custom: bool = False  # declared in a config (custom_suites), not built in

    def task_names(self) -> tuple[str, ...]:
        return tuple(self.tasks)


def _cheetah_suite(name: str, tasks: Mapping[str, Any]) -> SuiteSpec:
    """A HalfCheetah suite (env ids ``npf/cheetah-<task>-v0``) over ``tasks``: name -> task spec."""
    return SuiteSpec(
        name=name,
        id_prefix="cheetah",
        entry_point="npf.envs.cheetah:HalfCheetahMultitaskEnv",
        tasks={task: asdict(spec) for task, spec in tasks.items()},
        episode_length=_cheetah.EPISODE_LENGTH,
    )


SUITE_SPECS: dict[str, SuiteSpec] = {
    "cheetah": _cheetah_suite("cheetah", _cheetah.CHEETAH_TASKS),
    "cheetah_velocity": _cheetah_suite("cheetah_velocity", _cheetah.CHEETAH_VELOCITY_TASKS),
    "mt10": SuiteSpec(
        name="mt10",
        id_prefix="mt10",
        entry_point="npf.envs.metaworld:MetaWorldTaskEnv",
        tasks={name: {"task": name} for name in _metaworld.MT10_TASKS},
        episode_length=_metaworld.EPISODE_LENGTH,
        success_metric=True,
        # The passive checker only warns, here about the object entries' infinite bounds
        # (tests/test_env_checker.py runs Gymnasium's full check_env on every npf env).
        disable_env_checker=True,
    ),
    "quadruped": SuiteSpec(
        name="quadruped",
        id_prefix="quadruped",
        entry_point="npf.envs.quadruped:A1MultitaskEnv",
        tasks={name: {"task": name} for name in _quadruped.QUADRUPED_TASKS},
        episode_length=_quadruped.EPISODE_LENGTH,
    ),
}

#: the suites that ship with npf (a custom suite may not reuse these names).
BUILTIN_SUITES: tuple[str, ...] = tuple(SUITE_SPECS)

#: suite -> task names, in the paper's order (custom suites are added in place when registered).
SUITES: dict[str, tuple[str, ...]] = {name: spec.task_names() for name, spec in SUITE_SPECS.items()}

#: custom suite -> fingerprint of the declaration it was registered from.
_CUSTOM_REGISTERED: dict[str, str] = {}


def _suite_spec(suite: str) -> SuiteSpec:
    try:
        return SUITE_SPECS[suite]
    except KeyError:
        raise ValueError(
            f"unknown suite {suite!r}; valid suites: {', '.join(SUITE_SPECS)} (a suite declared under "
            f"custom_suites in a config is known once npf.config.validate(config) has run)"
        ) from None


def _check_task(suite: str, task: str) -> SuiteSpec:
    spec = _suite_spec(suite)
    if task not in spec.tasks:
        raise ValueError(f"unknown task {task!r} for suite {suite!r}; valid tasks: {', '.join(spec.task_names())}")
    return spec


def env_id(suite: str, task: str) -> str:
    """Gymnasium id of a task, e.g. ``env_id("cheetah", "forward") == "npf/cheetah-forward-v0"``."""
    spec = _check_task(suite, task)
    return f"npf/{spec.id_prefix}-{task}-v0"


def episode_length(suite: str) -> int:
    """Episode horizon (TimeLimit truncation) of a suite: 1000 cheetah, 150 mt10."""
    return _suite_spec(suite).episode_length


def is_success_suite(suite: str) -> bool:
    """True if the suite is scored by ``info["success"]`` (MT10) rather than return."""
    return _suite_spec(suite).success_metric


def make_env(suite: str, task: str, seed: int | None = None, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` the task, seeded at construction with ``seed``.

    Extra ``kwargs`` go to ``gymnasium.make`` (e.g. ``render_mode``,
    ``max_episode_steps``, or env kwargs such as ``goal_seed`` for MT10).
    """
    return gym.make(env_id(suite, task), seed=seed, **kwargs)


def make_vec_env(suite: str, task: str, num_envs: int, seed: int | None) -> gym.vector.VectorEnv:
    """``SyncVectorEnv`` of ``num_envs`` copies of a task, env ``i`` seeded ``seed + i``.

    Autoreset mode is ``SAME_STEP``: on the step an episode ends, the returned obs is
    already the next episode's first obs, and ``infos["final_obs"][i]`` /
    ``infos["final_info"]`` hold the true last obs/info (mask ``infos["_final_obs"]``).
    """
    env_id(suite, task)  # validate before building anything
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    fns = [partial(make_env, suite, task, seed=None if seed is None else seed + i) for i in range(num_envs)]
    venv = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
    if seed is not None:
        venv.action_space.seed(seed)
        venv.observation_space.seed(seed)
    return venv


def register_custom_suites(config: Mapping[str, Any] | None) -> list[str]:
    """Register the suites declared in a config's ``custom_suites`` block.

    Each task becomes ``npf/<suite>-<task>-v0`` and the suite is added to ``SUITE_SPECS`` and
    ``SUITES``, so :func:`make_env`, :func:`env_id`, :func:`episode_length` and
    :func:`is_success_suite` work for it. Every task is built once to check its spaces (flat
    ``Box`` observations, ``Box`` actions, equal sizes and episode lengths within the suite).
    Idempotent and cheap for a declaration registered before; a changed declaration replaces
    the old registration. Raises a one-line ``ValueError`` naming
    ``custom_suites.<suite>[.tasks.<task>]``. Returns the custom suites' names.
    """
    names = []
    for suite, decl in ((config or {}).get("custom_suites") or {}).items():
        names.append(suite)
        fp = _custom.fingerprint(decl)
        if _CUSTOM_REGISTERED.get(suite) == fp:
            continue
        if suite in BUILTIN_SUITES:
            raise ValueError(f"custom_suites.{suite}: {suite!r} is a built-in suite; choose another name")
        tasks = _custom.resolve_tasks(suite, decl)
        _, _, length = _custom.check_suite(suite, tasks)
        old = SUITE_SPECS.get(suite)
        if old is not None:
            for task in old.tasks:
                gym.registry.pop(f"npf/{old.id_prefix}-{task}-v0", None)
        spec = SuiteSpec(
            name=suite,
            id_prefix=suite,
            entry_point=_custom.ENTRY_POINT,
            tasks={t: c.entry_kwargs() for t, c in tasks.items()},
            episode_length=length,
            success_metric=bool(decl.get("success_metric", False)),
            custom=True,
        )
        SUITE_SPECS[suite] = spec
        SUITES[suite] = spec.task_names()
        for task, kwargs in spec.tasks.items():
            gym.register(
                id=env_id(suite, task),
                entry_point=spec.entry_point,
                kwargs=dict(kwargs),
                max_episode_steps=length,
                disable_env_checker=spec.disable_env_checker,
            )
        _CUSTOM_REGISTERED[suite] = fp
    return names


def forget_custom_suites() -> None:
    """Undo :func:`register_custom_suites` (every custom suite; tests use it to isolate configs)."""
    for suite in list(_CUSTOM_REGISTERED):
        spec = SUITE_SPECS.pop(suite, None)
        SUITES.pop(suite, None)
        for task in spec.tasks if spec else ():
            gym.registry.pop(f"npf/{spec.id_prefix}-{task}-v0", None)
        del _CUSTOM_REGISTERED[suite]


def register_all() -> None:
    """Register every suite's tasks with Gymnasium (idempotent)."""
    for suite, spec in SUITE_SPECS.items():
        for task, task_kwargs in spec.tasks.items():
            eid = env_id(suite, task)
            if eid in gym.registry:
                continue
            gym.register(
                id=eid,
                entry_point=spec.entry_point,
                kwargs=dict(task_kwargs),
                max_episode_steps=spec.episode_length,
                disable_env_checker=spec.disable_env_checker,
            )


register_all()

__all__ = [
    "BUILTIN_SUITES",
    "SUITES",
    "SUITE_SPECS",
    "SuiteSpec",
    "env_id",
    "episode_length",
    "forget_custom_suites",
    "is_success_suite",
    "make_env",
    "make_vec_env",
    "register_all",
    "register_custom_suites",
]
