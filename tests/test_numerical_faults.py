"""Numerical faults injected into real training runs: a NaN/inf loss (or NaN weights) stops the
job with one line naming the loss or tensor and the step, the MLflow run is marked FAILED with
the error as tag ``npf.error``, and the last good checkpoint is kept — never overwritten with
NaN weights — so a fixed re-run can resume from it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from npf import checkpoint as ckpt
from npf.algos.sac import SAC
from npf.config import validate
from npf.preemption import first_non_finite
from npf.rollout import EnvPool
from npf.stages import offline
from npf.stages.expert import train_expert

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from _stage import stage  # noqa: E402


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"  # one store: created once


def only_run(db: str, name: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(db)
    runs = [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id]) if r.info.run_name == name]
    assert len(runs) == 1
    return runs[0]


@pytest.fixture
def store(tmp_path, monkeypatch, db):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", db)
    monkeypatch.delenv("NPF_DEBUG", raising=False)
    return tmp_path / "results"


def run_like_a_stage_script(fn, capsys) -> str:
    """Run ``fn`` inside the stage scripts' wrapper; return its one error line (exit 1)."""
    with pytest.raises(SystemExit) as e, stage(SimpleNamespace(log=[])):
        fn()
    err = capsys.readouterr().err
    assert e.value.code == 1, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ----------------------------------------------------------------------------- train_offline
def test_offline_nan_rewards_after_validation(store, db, monkeypatch, capsys):
    """Rewards of one task turn NaN from update 40 on (after the dataset passed validation)."""
    d = store / "datasets" / "cheetah"
    d.mkdir(parents=True)
    for f in (REPO / "tests" / "bad_inputs" / "datasets" / "good").iterdir():
        shutil.copy(f, d / f.name)
    h = [32, 32]
    cfg = validate(
        {
            "results_dir": str(store),
            "device": "cpu",
            "tasks": {"cheetah": ["forward", "backward"]},
            "offline": {
                "updates": 60,
                "batch_size": 16,
                "eval_interval": 1000,
                "eval_episodes": 1,
                "checkpoint_every": 25,
                "log_every": 5,
                "iql": {"actor_hidden": h, "critic_hidden": h, "value_hidden": h},
            },
        }
    )
    calls = {"n": 0}
    sample = offline.SuiteData.sample

    def poisoned(self, batch_size, gen):
        batches = sample(self, batch_size, gen)
        calls["n"] += 1
        if calls["n"] >= 40:
            batches[0]["rew"] = torch.full_like(batches[0]["rew"], float("nan"))
        return batches

    monkeypatch.setattr(offline.SuiteData, "sample", poisoned)
    out = store / "runs" / "cheetah" / "mt-iql" / "seed0"
    line = run_like_a_stage_script(lambda: offline.train_offline(cfg, "cheetah", "mt", "iql", 0, out), capsys)
    assert line.startswith("error: FloatingPointError: train_offline cheetah mt-iql seed 0: non-finite loss/critic")
    assert "at update 40" in line and f"{out / 'checkpoint.pt'} (update 25) kept" in line, line
    state = ckpt.load(out / "checkpoint.pt")
    assert state["step"] == 25 and first_non_finite(state) is None
    assert not (out / "final.pt").exists()
    run = only_run(db, "train/cheetah/mt-iql/seed0")
    assert run.info.status == "FAILED"
    assert "non-finite loss/critic" in run.data.tags["npf.error"]


# ----------------------------------------------------------------------------------- experts
def expert_cfg(results: Path, seed: int) -> dict:
    return validate(
        {
            "results_dir": str(results),
            "device": "cpu",
            "datasets": {"expert_seed": seed},
            "experts": {
                "seeds": [seed],
                "total_steps": 3000,
                "checkpoint_every": 1000,
                "learning_starts": 499,
                "updates_per_step": 0.25,
                "eval_episodes": 1,
                "log_every": 250,
                "sac": {"hidden": [32, 32], "batch_size": 32},
            },
        }
    )


def test_expert_nan_weights_never_replace_the_good_checkpoint(store, db, monkeypatch, capsys):
    """The actor's weights turn NaN in the last update before the step-2000 checkpoint, after that
    update's losses were checked: the checkpoint refuses them, step 1000 stays."""
    update = SAC.update
    # updates run at env steps 502, 506, …; the last one before step 2000 is at 1998: update 375

    def poisoned(self, batch):
        m = update(self, batch)
        if self.num_updates == 375:
            with torch.no_grad():
                next(self.actor.parameters()).fill_(float("nan"))
        return m

    monkeypatch.setattr(SAC, "update", poisoned)
    out = store / "experts" / "cheetah" / "forward" / "seed0"
    line = run_like_a_stage_script(lambda: train_expert(expert_cfg(store, 0), "cheetah", "forward", 0, out), capsys)
    assert line.startswith("error: FloatingPointError: expert cheetah/forward seed 0: non-finite values in algo.actor.")
    assert "at step 2000; checkpoint not written" in line and f"{out / 'checkpoint.pt'} (step 1000) kept" in line, line
    state = ckpt.load(out / "checkpoint.pt")
    assert state["step"] == 1000 and first_non_finite(state) is None
    assert not (out / "policy.pt").exists() and not (out / "metrics.json").exists()
    run = only_run(db, "expert/cheetah/forward/seed0")
    assert run.info.status == "FAILED" and "non-finite values in algo.actor" in run.data.tags["npf.error"]


def test_expert_inf_reward_from_the_env(store, db, monkeypatch, capsys):
    """The environment returns an infinite reward at env step 1500: the next critic loss is
    non-finite and the job stops naming it; the step-1000 checkpoint stays."""
    step = EnvPool.step
    count = {"n": 0}

    def poisoned(self, actions):
        res = step(self, actions)
        count["n"] += 1
        if count["n"] == 1500:
            res.reward[:] = float("inf")
        return res

    monkeypatch.setattr(EnvPool, "step", poisoned)
    out = store / "experts" / "cheetah" / "forward" / "seed1"
    line = run_like_a_stage_script(lambda: train_expert(expert_cfg(store, 1), "cheetah", "forward", 1, out), capsys)
    assert "non-finite loss/critic" in line and "(env step 15" in line, line
    assert f"{out / 'checkpoint.pt'} (step 1000) kept" in line
    state = ckpt.load(out / "checkpoint.pt")
    assert state["step"] == 1000 and first_non_finite(state["algo"]) is None
    assert only_run(db, "expert/cheetah/forward/seed1").info.status == "FAILED"


# ------------------------------------------------------------------------------------ online
def test_online_nan_rewards_stop_at_the_first_bad_update(store, db, monkeypatch, capsys):
    """Rewards sampled from the replay turn NaN at update 200 (env step 350, after the step-300
    checkpoint): the job stops at that update naming the loss, the step-300 checkpoint stays."""
    from npf.online import stages as online
    from npf.online_buffers import TaskReplay

    cfg = validate(
        {
            "results_dir": str(store),
            "device": "cpu",
            "tasks": {"mt10": ["reach", "drawer-close"]},
            "online": {
                "total_steps": 600,
                "learning_starts": 150,
                "pretrain_steps": 0,
                "batch_size": 16,
                "eval_interval": 300,
                "eval_episodes": 1,
                "checkpoint_every": 150,
                "log_every": 50,
                "dapd": {"M": 2, "interval": 1},
                "sac": {"hidden": [16, 16]},
            },
        }
    )
    sample, calls = TaskReplay.sample, {"n": 0}

    def poisoned(self, batch_size, gen):
        batch = sample(self, batch_size, gen)
        calls["n"] += 1
        if calls["n"] >= 200:
            batch["rew"] = torch.full_like(batch["rew"], float("nan"))
        return batch

    monkeypatch.setattr(TaskReplay, "sample", poisoned)
    out = store / "online" / "runs" / "mt10" / "sac-npf" / "seed0"
    line = run_like_a_stage_script(lambda: online.train_online(cfg, "mt10", "sac-npf", 0, out), capsys)
    assert line.startswith("error: FloatingPointError: online/mt10/sac-npf/seed0: non-finite loss/critic"), line
    assert "at update 200" in line and "(env step 350)" in line, line
    assert f"{out / 'checkpoint.pt'} (step 300) kept" in line, line
    state = ckpt.load(out / "checkpoint.pt")
    assert state["step"] == 300 and first_non_finite(state["agent"]) is None
    assert not (out / "final.pt").exists()
    run = only_run(db, "online/mt10/sac-npf/seed0")
    assert run.info.status == "FAILED" and "non-finite loss/critic" in run.data.tags["npf.error"]
