"""Expert stage: checkpoint → kill → resume is bit-identical to an uninterrupted run, and the
MLflow run continues (same run, one run per job, no duplicated metric steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from npf import checkpoint as ckpt
from npf.config import validate
from npf.expert_policy import load_expert_policy
from npf.stages.expert import train_expert
from npf.tracking import tracking_uri

torch.set_num_threads(1)

SUITE, TASK, SEED = "cheetah", "forward", 3
RUN_NAME = f"expert/{SUITE}/{TASK}/seed{SEED}"


def tiny_config(results_dir: Path) -> dict:
    return validate(
        {
            "results_dir": str(results_dir),
            "device": "cpu",
            "experts": {
                "seeds": [SEED],
                "total_steps": 3000,
                "checkpoint_every": 1000,
                "learning_starts": 500,
                "eval_episodes": 1,
                "log_every": 500,
                "sac": {"hidden": [32, 32], "batch_size": 32},
            },
            "datasets": {"expert_seed": SEED},
        }
    )


def runs_in_store(results_dir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(results_dir))
    exps = client.search_experiments()
    runs = [r for e in exps for r in client.search_runs([e.experiment_id])]
    return client, [r for r in runs if r.info.run_name == RUN_NAME]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # each run uses the sqlite store under its results_dir
    root = tmp_path_factory.mktemp("resume")
    out = {}
    try:
        # killed after the first checkpoint, then resumed in the same directory
        res_k = root / "killed"
        cfg_k = tiny_config(res_k)
        dir_k = res_k / "experts" / SUITE / TASK / f"seed{SEED}"
        first = train_expert(cfg_k, SUITE, TASK, SEED, dir_k, stop_after_steps=1000)
        after_kill = {
            "result": first,
            "files": sorted(p.name for p in dir_k.iterdir()),
            "run_id": (dir_k / "mlflow_run_id.txt").read_text(),
            "ckpt_step": ckpt.load(dir_k / "checkpoint.pt")["step"],
        }
        _, killed_runs = runs_in_store(res_k)
        after_kill["status"] = [r.info.status for r in killed_runs]
        final_k = train_expert(cfg_k, SUITE, TASK, SEED, dir_k)
        # uninterrupted
        res_u = root / "straight"
        dir_u = res_u / "experts" / SUITE / TASK / f"seed{SEED}"
        final_u = train_expert(tiny_config(res_u), SUITE, TASK, SEED, dir_u)
        out = dict(
            after_kill=after_kill, final_k=final_k, final_u=final_u, dir_k=dir_k, dir_u=dir_u, res_k=res_k, res_u=res_u
        )
        yield out
    finally:
        mp.undo()


def test_kill_leaves_a_checkpoint_and_no_outputs(runs):
    a = runs["after_kill"]
    assert a["result"] == {"stopped_at": 1000}
    assert a["ckpt_step"] == 1000
    assert "checkpoint.pt" in a["files"] and "mlflow_run_id.txt" in a["files"]
    assert "policy.pt" not in a["files"] and "metrics.json" not in a["files"]
    assert not any(".tmp" in f for f in a["files"])
    assert a["status"] == ["RUNNING"]  # as after a real kill


def test_resumed_weights_identical_to_uninterrupted(runs):
    sk = ckpt.load(runs["dir_k"] / "checkpoint.pt")
    su = ckpt.load(runs["dir_u"] / "checkpoint.pt")
    assert sk["step"] == su["step"] == 3000
    for role in ("actor", "critic", "critic_target"):
        a, b = sk["algo"][role], su["algo"][role]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{role}.{k} differs after resume"
    assert torch.equal(sk["algo"]["log_alpha"], su["algo"]["log_alpha"])
    assert sk["algo"]["num_updates"] == su["algo"]["num_updates"] == 3000 - 500 + 1
    for k in sk["buffer"]["data"]:
        assert torch.equal(sk["buffer"]["data"][k], su["buffer"]["data"][k]), k
    # Adam moments too (a resume that reset the optimizer would still diverge later)
    for opt in ("actor_opt", "critic_opt", "alpha_opt"):
        for pid, st in sk["algo"][opt]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, su["algo"][opt]["state"][pid][k]), f"{opt}.{pid}.{k}"
    # the exported policy
    pk, pu = load_expert_policy(runs["dir_k"] / "policy.pt"), load_expert_policy(runs["dir_u"] / "policy.pt")
    for (n, a), (_, b) in zip(pk.state_dict().items(), pu.state_dict().items()):
        assert torch.equal(a, b), n
    assert all(torch.equal(pk.state_dict()[k], sk["algo"]["actor"][k]) for k in pk.state_dict())


def test_resumed_metrics_identical(runs):
    mk = json.loads((runs["dir_k"] / "metrics.json").read_text())
    mu = json.loads((runs["dir_u"] / "metrics.json").read_text())
    assert mk["env_steps"] == mu["env_steps"] == 3000
    assert mk["updates"] == mu["updates"] == 3000 - 500 + 1
    assert mk["eval_return_mean"] == mu["eval_return_mean"]
    assert mk["train_return_last10"] == mu["train_return_last10"]
    assert runs["final_k"]["eval_return_mean"] == mk["eval_return_mean"]


def test_mlflow_run_continues(runs):
    dir_k = runs["dir_k"]
    assert (dir_k / "mlflow_run_id.txt").read_text() == runs["after_kill"]["run_id"]
    client, rk = runs_in_store(runs["res_k"])
    assert len(rk) == 1, [r.info.run_id for r in rk]
    run = rk[0]
    assert run.info.run_id == runs["after_kill"]["run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("npf.resumes") == "1"
    assert run.data.tags.get("npf.stage") == "experts"
    assert run.data.params["experts.total_steps"] == "3000"

    hist_k = client.get_metric_history(run.info.run_id, "train/episode_return")
    steps = [m.step for m in hist_k]
    assert sorted(steps) == [1000, 2000, 3000], steps  # one value per episode, none duplicated
    # and the same values as the uninterrupted run
    client_u, ru = runs_in_store(runs["res_u"])
    assert len(ru) == 1 and ru[0].data.tags.get("npf.resumes") is None
    hist_u = client_u.get_metric_history(ru[0].info.run_id, "train/episode_return")
    assert sorted((m.step, m.value) for m in hist_k) == sorted((m.step, m.value) for m in hist_u)
    for name in ("eval/return", "loss/critic"):
        sk = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert len(sk) == len(set(sk)), (name, sk)
    assert client.get_metric_history(run.info.run_id, "eval/return")[0].value == runs["final_k"]["eval_return_mean"]
