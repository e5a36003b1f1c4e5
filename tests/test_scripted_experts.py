"""experts.source scripted: Meta-World's controllers (+ Gaussian noise) collect the MT10 datasets."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from dag import dry_run

from npf.config import ConfigError, validate
from npf.data import load_dataset
from npf.envs import SUITES, make_env
from npf.envs.scripted import scripted_policy, scripted_policy_name, with_gaussian_noise
from npf.rollout import evaluate_policy
from npf.stages.dataset import collect_dataset


@pytest.mark.parametrize("task", SUITES["mt10"])
def test_scripted_policy_solves_each_mt10_task(task):
    ev = evaluate_policy(scripted_policy("mt10", task), [make_env("mt10", task)], episodes=1, seed=0)
    assert ev["lengths"].tolist() == [150]
    assert ev["success"].tolist() == [1.0], f"{scripted_policy_name('mt10', task)} fails {task}"


def test_policy_names_follow_metaworld():
    assert scripted_policy_name("mt10", "reach") == "SawyerReachV3Policy"
    assert scripted_policy_name("mt10", "peg-insert-side") == "SawyerPegInsertionSideV3Policy"
    with pytest.raises(ValueError, match="cheetah"):
        scripted_policy("cheetah", "forward")


def test_noise_has_the_configured_std_and_is_clipped():
    zeros = lambda obs: np.zeros((len(obs), 4), np.float32)
    obs = np.zeros((50_000, 39))
    a = with_gaussian_noise(zeros, 0.2, np.random.default_rng(0))(obs)
    assert a.shape == (50_000, 4) and a.dtype == np.float32
    assert abs(a.std() - 0.2) < 0.002 and abs(a.mean()) < 0.002
    # std 2: values beyond ±1 are clipped, P(|N(0, 2²)| > 1) = 1 - erf(0.5 / √2)
    b = with_gaussian_noise(zeros, 2.0, np.random.default_rng(1))(obs)
    assert b.min() == -1.0 and b.max() == 1.0
    assert abs((np.abs(b) == 1.0).mean() - (1 - math.erf(0.5 / math.sqrt(2)))) < 0.005
    assert np.array_equal(with_gaussian_noise(zeros, 0.0, np.random.default_rng(2))(obs[:3]), zeros(obs[:3]))


def test_scripted_source_is_validated():
    cfg = validate({"suites": ["mt10"], "experts": {"source": "scripted", "noise_std": 0.3}})
    assert cfg["experts"]["source"] == "scripted" and cfg["experts"]["noise_std"] == 0.3
    assert validate({})["experts"]["source"] == "sac"
    for raw, key in (
        ({"suites": ["cheetah"], "experts": {"source": "scripted"}}, "suite cheetah"),
        ({"experts": {"source": "script"}}, "experts.source"),
        ({"experts": {"noise_std": -0.1}}, "experts.noise_std"),
    ):
        with pytest.raises(ConfigError) as e:
            validate(raw)
        assert "\n" not in str(e.value) and key in str(e.value), str(e.value)
    # per suite: scripted MT10 beside SAC cheetah experts
    validate({"suites": ["cheetah", "mt10"], "experts": {"per_suite": {"mt10": {"source": "scripted"}}}})


def test_snakemake_plans_no_experts_jobs_for_scripted_suites(tmp_path):
    out = dry_run(
        tmp_path,
        "suites: [cheetah, mt10]\ntasks: {mt10: [reach, push], cheetah: [forward]}\n"
        "experts: {per_suite: {mt10: {source: scripted}}}\noffline: {methods: [mt], algos: [iql]}\n"
        "online: {methods: [], dapd_ablation: {variants: []}}\n",
    )
    assert set(re.findall(r"experts/(\w+)/([\w-]+)/seed\d+/policy\.pt", out)) == {("cheetah", "forward")}, out
    assert set(re.findall(r"datasets/(\w+)/([\w-]+)\.npz", out)) == {
        ("cheetah", "forward"),
        ("mt10", "reach"),
        ("mt10", "push"),
    }, out


def test_scripted_dataset_round_trip(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    std = 0.05
    cfg = validate(
        {
            "results_dir": str(tmp_path),
            "device": "cpu",
            "suites": ["mt10"],
            "tasks": {"mt10": ["reach"]},
            "experts": {"source": "scripted", "noise_std": std},
            "datasets": {"episodes": 3, "num_envs": 2, "random_episodes": 1, "eval_episodes": 1},
        }
    )
    man = collect_dataset(cfg, "mt10", "reach", None, tmp_path / "reach.npz")
    ds = load_dataset(tmp_path / "reach.npz")
    assert ds.manifest == man
    assert man["expert"] == {"source": "scripted", "policy": "SawyerReachV3Policy", "noise_std": std}
    assert "SawyerReachV3Policy" in man["policy"]
    assert man["counts"]["episodes"] == 3 and len(ds) == 3 * 150
    assert int((ds.arrays["timeouts"] | ds.arrays["terminals"]).sum()) == 3
    assert man["scores"]["expert_success"] == 1.0 and man["scores"]["random_success"] == 0.0
    assert man["scores"]["expert"] > man["scores"]["random"]
    a = ds.arrays["actions"]
    assert a.min() >= -1.0 and a.max() <= 1.0
    # the noise is what is left after subtracting the controller's action at the recorded states
    clean = scripted_policy("mt10", "reach")(ds.arrays["observations"])
    free = np.abs(clean) < 0.8  # entries the clip cannot have touched
    noise = (a - clean)[free]
    assert noise.size > 900
    assert abs(noise.std() - std) < 0.1 * std and abs(noise.mean()) < 0.1 * std
