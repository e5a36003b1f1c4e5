"""Memory per job (npf.resources, the rules' mem_mb): the config key wins; train_offline's
estimate follows its datasets' size and networks and leaves room for several jobs on a small node."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from npf.config import ConfigError, deep_merge, validate
from npf.resources import FIXED_MB, mem_mb

REPO = Path(__file__).resolve().parent.parent


def repo_config(*files: str, **over) -> dict:
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for f in files:
        raw = deep_merge(raw, yaml.safe_load((REPO / "config" / f).read_text()))
    return validate(deep_merge(raw, over))


def test_config_key_wins():
    cfg = repo_config(mem_mb={"train_offline": 6000, "experts": 1234})
    assert mem_mb(cfg, "train_offline", suite="cheetah", algo="iql", input_mb=900) == 6000
    assert mem_mb(cfg, "experts") == 1234
    assert mem_mb(cfg, "datasets") == FIXED_MB["datasets"]
    with pytest.raises(ConfigError, match="mem_mb.train_ofline"):
        validate({"mem_mb": {"train_ofline": 100}})


def test_offline_estimate_follows_the_data_and_the_networks():
    cfg = repo_config()
    small = mem_mb(cfg, "train_offline", suite="cheetah", algo="iql", input_mb=10)
    big = mem_mb(cfg, "train_offline", suite="cheetah", algo="iql", input_mb=1000)
    assert small % 500 == 0 and big % 500 == 0
    assert 2500 <= big - small <= 3500  # the data are held ~3x (arrays, replay buffer, normalized copy)
    wide = repo_config(
        offline={"iql": {"actor_hidden": [2048] * 4, "critic_hidden": [2048] * 4, "value_hidden": [2048] * 4}}
    )
    assert mem_mb(wide, "train_offline", suite="cheetah", algo="iql", input_mb=10) > small
    # the node: 18 GB for 2 cores must run two default training jobs at once
    assert 2 * small <= 18000


def test_paper_budgets_fit_a_modest_node():
    cfg = repo_config("paper.yaml")
    for suite in cfg["suites"]:
        for algo in ("iql", "bcq"):
            # 1000 trajectories per task: ~900 MB of cheetah data, less for the others
            assert 3000 <= mem_mb(cfg, "train_offline", suite=suite, algo=algo, input_mb=900) <= 8000


def test_online_estimate_follows_the_replay_it_holds():
    """Replay: N tasks x min(buffer_size, total_steps x envs_per_task) transitions, held twice."""
    from npf.resources import TRANSITION_BYTES

    def online(**o):
        return mem_mb(repo_config(online=o), "train_online")

    base = dict(total_steps=200_000, buffer_size=1_000_000)
    ten = {"tasks": {"mt10": ["reach", "push", "pick-place", "door-open", "drawer-open"] * 1}}
    small, big = online(**base), online(**{**base, "total_steps": 400_000})
    n = 2  # the default config's MT10 tasks
    grown = n * 200_000 * 2 * TRANSITION_BYTES / 2**20
    assert abs((big - small) - grown) <= 500  # rounded up to 500 MB
    assert online(**{**base, "buffer_size": 200_000, "total_steps": 10**7}) == small  # capped by the buffer
    assert mem_mb(repo_config(**ten, online=base), "train_online") > small  # more tasks, more replay
    # the configs in the repo fit a small node (the one-node test cluster has 24 GB)
    for f in ("mt10_online_small.yaml", "dapd_cheetah_small.yaml", "paper.yaml"):
        cfg = repo_config(f)
        assert all(mem_mb(cfg, r) <= 16000 for r in ("train_online", "train_online_npf", "dapd_ablation")), f
