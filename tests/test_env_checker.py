"""Gymnasium's own checker (``gymnasium.utils.env_checker.check_env``) passes on every env that
npf registers: the built-in suites' envs and a config-declared suite's (docs/examples/pendulum.yaml).
It checks, among others, that ``reset()`` and ``step()`` return observations inside
``observation_space`` and that ``reset(seed=...)`` is deterministic."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import npf.envs as envs

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = yaml.safe_load((REPO / "docs/examples/pendulum.yaml").read_text())
envs.register_custom_suites(EXAMPLE)
NPF_IDS = sorted(i for i in gym.registry if i.startswith("npf/"))
envs.forget_custom_suites()  # other test modules expect the built-in suites only


@pytest.fixture(scope="module", autouse=True)
def _example_suite():
    envs.register_custom_suites(EXAMPLE)
    yield
    envs.forget_custom_suites()


def test_every_suite_is_covered():
    prefixes = {i.split("/")[1].rsplit("-v", 1)[0].split("-")[0] for i in NPF_IDS}
    assert prefixes == {"cheetah", "mt10", "quadruped", "pendulum"}
    assert len([i for i in NPF_IDS if i.startswith("npf/mt10-")]) == 10


@pytest.mark.parametrize("env_id", NPF_IDS)
def test_check_env(env_id):
    env = gym.make(env_id)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # infinite bounds of unbounded entries only warn
            check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_mt10_observation_space_bounds_the_goal():
    """Entries 36-38 (the goal) were declared [0, 0] by Meta-World; the goal lies outside that."""
    env = gym.make("npf/mt10-reach-v0")
    obs, _ = env.reset()
    space = env.observation_space
    goal = obs[36:39]
    assert (goal != 0).any() and space.contains(obs)
    assert (space.low[36:39] < space.high[36:39]).all()
    env.close()
