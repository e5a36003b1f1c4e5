"""A dataset whose expert is no better than random makes normalized scores meaningless (the
denominator expert − random is noise): the datasets stage says so, in its log and on its run."""

from __future__ import annotations

import pytest
import torch

from npf.algos.sac import SAC, SACConfig
from npf.config import validate
from npf.evaluate import normalized_score, weak_expert
from npf.expert_policy import save_expert_policy
from npf.stages import dataset

torch.set_num_threads(1)


def test_expert_within_one_random_std_is_weak():
    # the quadruped pace-forward expert of a 30K-step run: 81.4 vs random 75.7 ± 38.4
    s = {"random": 75.69, "random_std": 38.37, "expert": 81.36}
    msg = weak_expert(s)
    assert msg.startswith("the expert (81.4) is not clearly better than random (75.7 ± 38.4)")
    # ... where a policy with return 150 would score 1,310 "normalized"
    assert normalized_score(150.0, s["random"], s["expert"]) > 1000
    assert "experts.total_steps" in msg


@pytest.mark.parametrize(
    "scores",
    [
        {"random": 100.0, "random_std": 10.0, "expert": 50.0},  # worse
        {"random": 100.0, "random_std": 0.0, "expert": 100.0},
    ],
)  # equal
def test_expert_not_above_random_is_weak(scores):
    assert weak_expert(scores) is not None


def test_expert_clearly_above_random_is_fine():
    assert weak_expert({"random": 122.5, "random_std": 54.0, "expert": 477.9}) is None  # quadruped hop-turn
    assert weak_expert({"random": -280.0, "random_std": 80.0, "expert": 4000.0}) is None


def test_expert_must_also_beat_the_mid_range_action():
    # the quadruped 30K-step experts beat random by more than a std but not the A1 standing still
    s = {"random": 100.1, "random_std": 47.3, "expert": 436.1, "neutral": 467.1, "neutral_std": 0.5}  # pace-backward
    assert weak_expert(s).startswith(
        "the expert (436.1) is not clearly better than the constant mid-range action (467.1 ± 0.5)"
    )
    assert weak_expert({**s, "expert": 467.5}) is not None  # within one std of standing still
    assert weak_expert({**s, "expert": 900.0}) is None


def test_dataset_stage_warns_in_the_log_and_on_the_run(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    seen = []
    monkeypatch.setattr(dataset, "weak_expert", lambda s: seen.append(s) or "too weak for this test")
    policy = tmp_path / "policy.pt"
    save_expert_policy(policy, SAC(39, 4, SACConfig(hidden=[8]), torch.device("cpu"), seed=0), 39, 4, {})
    cfg = validate(
        {
            "results_dir": str(tmp_path / "results"),
            "device": "cpu",
            "datasets": {"episodes": 2, "num_envs": 2, "random_episodes": 2, "eval_episodes": 1, "weak_expert": "warn"},
        }
    )
    out = tmp_path / "results" / "datasets" / "mt10" / "reach.npz"
    manifest = dataset.collect_dataset(cfg, "mt10", "reach", policy, out)
    assert seen == []  # MT10 is scored by success, not normalized returns: no check
    out = tmp_path / "results" / "datasets" / "cheetah" / "forward.npz"
    save_expert_policy(policy, SAC(17, 6, SACConfig(hidden=[8]), torch.device("cpu"), seed=0), 17, 6, {})
    manifest = dataset.collect_dataset(cfg, "cheetah", "forward", policy, out)
    assert seen == [manifest["scores"]]
    assert "warning: dataset cheetah/forward: too weak for this test" in capsys.readouterr().err
    run_id = out.with_suffix(".mlflow_run_id.txt").read_text().strip()
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["npf.warning"] == "too weak for this test" and run.info.status == "FINISHED"


def test_dataset_stage_stops_on_a_weak_expert_by_default(tmp_path, monkeypatch):
    """A published config never gets a dataset from an expert that is not clearly better than the
    baselines: the job fails with one line before the .npz/.json exist."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    policy = tmp_path / "policy.pt"
    save_expert_policy(policy, SAC(17, 6, SACConfig(hidden=[8]), torch.device("cpu"), seed=0), 17, 6, {})
    cfg = validate(
        {
            "results_dir": str(tmp_path / "results"),
            "device": "cpu",
            "datasets": {"episodes": 2, "num_envs": 2, "random_episodes": 2, "eval_episodes": 1},
        }
    )
    assert cfg["datasets"]["weak_expert"] == "error"
    seen = []
    monkeypatch.setattr(dataset, "weak_expert", lambda s: seen.append(s) or "too weak for this test")
    out = tmp_path / "results" / "datasets" / "cheetah" / "forward.npz"
    with pytest.raises(dataset.WeakExpertError) as e:
        dataset.collect_dataset(cfg, "cheetah", "forward", policy, out)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("dataset cheetah/forward: too weak for this test;")
    assert "datasets.weak_expert: warn" in msg
    assert not out.exists() and not out.with_suffix(".json").exists()
    # the baselines the check saw: random and the constant mid-range action (zero torque for the cheetah)
    assert {"random", "random_std", "neutral", "neutral_std", "expert"} <= set(seen[0])
    run = MlflowClient(uri).get_run(out.with_suffix(".mlflow_run_id.txt").read_text().strip())
    assert run.info.status == "FAILED" and "too weak for this test" in run.data.tags["npf.error"]


def test_neutral_score_is_the_mid_range_action_return(tmp_path, monkeypatch):
    """scores.neutral is the return of the constant action (low + high) / 2, computed here by
    stepping the env by hand with the same reset seeds."""
    import numpy as np

    from npf.envs import make_env
    from npf.rollout import episode_seed

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    policy = tmp_path / "policy.pt"
    save_expert_policy(policy, SAC(17, 6, SACConfig(hidden=[8]), torch.device("cpu"), seed=0), 17, 6, {})
    cfg = validate(
        {
            "results_dir": str(tmp_path / "results"),
            "device": "cpu",
            "datasets": {
                "episodes": 1,
                "num_envs": 1,
                "random_episodes": 1,
                "eval_episodes": 1,
                "weak_expert": "warn",
                "seed": 7,
            },
        }
    )
    manifest = dataset.collect_dataset(cfg, "cheetah", "forward", policy, tmp_path / "d.npz")
    env = make_env("cheetah", "forward")
    env.reset(seed=episode_seed(7 + 3, 0, 0))  # the neutral episodes' base seed: datasets.seed + 3
    ret, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.zeros(6, dtype=np.float32))
        ret, done = ret + r, term or trunc
    assert manifest["scores"]["neutral"] == pytest.approx(ret) and manifest["scores"]["neutral_std"] == 0.0
