"""A dataset whose expert is no better than random makes normalized scores meaningless (the
denominator expert − random is noise): the datasets stage says so, in its log and on its run."""
from __future__ import annotations

import pytest
import torch

from npf.algos.sac import SAC, SACConfig
from npf.config import validate
from npf.evaluate import normalized_score, weak_expert
from npf.stages import dataset
from npf.expert_policy import save_expert_policy

torch.set_num_threads(1)


def test_expert_within_one_random_std_is_weak():
    # the quadruped pace-forward expert of a 30K-step run: 81.4 vs random 75.7 ± 38.4
    s = {"random": 75.69, "random_std": 38.37, "expert": 81.36}
    msg = weak_expert(s)
    assert msg.startswith("the expert (81.4) is not clearly better than random (75.7 ± 38.4)")
    # ... where a policy with return 150 would score 1,310 "normalized"
    assert normalized_score(150.0, s["random"], s["expert"]) > 1000
    assert "experts.total_steps" in msg


@pytest.mark.parametrize("scores", [{"random": 100.0, "random_std": 10.0, "expert": 50.0},   # worse
                                    {"random": 100.0, "random_std": 0.0, "expert": 100.0}])  # equal
def test_expert_not_above_random_is_weak(scores):
    assert weak_expert(scores) is not None


def test_expert_clearly_above_random_is_fine():
    assert weak_expert({"random": 122.5, "random_std": 54.0, "expert": 477.9}) is None  # quadruped hop-turn
    assert weak_expert({"random": -280.0, "random_std": 80.0, "expert": 4000.0}) is None


def test_dataset_stage_warns_in_the_log_and_on_the_run(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    seen = []
    monkeypatch.setattr(dataset, "weak_expert", lambda s: seen.append(s) or "too weak for this test")
    policy = tmp_path / "policy.pt"
    save_expert_policy(policy, SAC(39, 4, SACConfig(hidden=[8]), torch.device("cpu"), seed=0), 39, 4, {})
    cfg = validate({"results_dir": str(tmp_path / "results"), "device": "cpu",
                    "datasets": {"episodes": 2, "num_envs": 2, "random_episodes": 2, "eval_episodes": 1}})
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
