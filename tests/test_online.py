"""Online stage end to end on tiny budgets: SAC+NPF on two MT10 tasks (DAPD, pretraining copies,
merge) is resumable bit for bit across kills in both phases, logs success rates and the
per-pathway gradient norms, writes the eval JSON the tables read; the baselines run; the DAPD
ablation on HalfCheetah honours the stop rule and writes the curves the figures read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from npf import checkpoint as ckpt
from npf.config import validate
from npf.online.evaluate import evaluate_online_run
from npf.online.stages import train_dapd_variant, train_online

torch.set_num_threads(1)

TASKS = ["reach", "drawer-close"]


def tiny(results: Path, **online) -> dict:
    o = {
        "total_steps": 600,
        "learning_starts": 150,
        "pretrain_steps": 300,
        "batch_size": 32,
        "eval_interval": 150,
        "eval_episodes": 1,
        "checkpoint_every": 150,
        "log_every": 50,
        "grad_norm_every": 50,
        "dapd": {"M": 2, "interval": 1},
        "sac": {"hidden": [32, 32], "optimizer": "adamw"},
        "dapd_ablation": {
            "total_steps": 2000,
            "learning_starts": 1000,
            "batch_size": 16,
            "eval_interval": 1000,
            "checkpoint_every": 1000,
            "sac": {"hidden": [16, 16], "optimizer": "adam"},
        },
    }
    o.update(online)
    return validate(
        {
            "results_dir": str(results),
            "device": "cpu",
            "tasks": {"mt10": TASKS},
            "online": o,
            "evaluation": {"episodes": 2, "envs_per_task": 2},
        }
    )


def run_dir(results: Path, method: str, tag: str = "") -> Path:
    return results / f"online{tag}" / "runs" / "mt10" / method / "seed0"


def read(path: Path) -> str:
    return Path(path).read_text()


def metric_history(results: Path, run_dir: Path, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of one metric of the MLflow run that ``run_dir`` logged to."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    run_id = (run_dir / "mlflow_run_id.txt").read_text().strip()
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)  # the sqlite store under results_dir
    yield tmp_path_factory.mktemp("online") / "results"
    mp.undo()


@pytest.fixture(scope="module")
def npf_runs(results):
    cfg = tiny(results)
    straight = run_dir(results, "sac-npf", "-straight")
    out_s = train_online(
        cfg,
        "mt10",
        "sac-npf",
        0,
        straight,
        grad_norms_out=straight / "tidy_grads.csv",
        curves_out=straight / "tidy_curves.csv",
    )
    killed = run_dir(results, "sac-npf")
    kills = []
    for stop in (300, 450):  # during pretraining (copies), then after the merge (shared network)
        r = train_online(cfg, "mt10", "sac-npf", 0, killed, stop_after_steps=stop)
        state = ckpt.load(killed / "checkpoint.pt")
        kills.append(
            {
                "result": r,
                "phase": state["agent"]["phase"],
                "step": state["step"],
                "files": sorted(p.name for p in killed.iterdir()),
                "chunks": sorted(p.name for p in (killed / "replay").iterdir()),
                "listed": state["replay_chunks"],
            }
        )
    out_k = train_online(
        cfg,
        "mt10",
        "sac-npf",
        0,
        killed,
        grad_norms_out=killed / "tidy_grads.csv",
        curves_out=killed / "tidy_curves.csv",
    )
    return dict(cfg=cfg, straight=straight, killed=killed, out_s=out_s, out_k=out_k, kills=kills)


def test_kill_leaves_checkpoint_with_buffers_and_no_outputs(npf_runs):
    k1, k2 = npf_runs["kills"]
    assert k1["result"] == {"stopped_at": 300} and k1["phase"] == "pretrain"
    assert k2["result"] == {"stopped_at": 450} and k2["phase"] == "shared"
    for k in (k1, k2):
        assert "final.pt" not in k["files"] and "checkpoint.pt" in k["files"]
        assert k["chunks"] == sorted(k["listed"]) and k["chunks"]  # replay stored incrementally
        assert not any(".tmp" in f for f in k["files"])
    # the run finished: replay chunks dropped, checkpoint kept
    assert not (npf_runs["killed"] / "replay").exists()
    assert ckpt.load(npf_runs["killed"] / "checkpoint.pt")["replay_dropped"]


def test_resume_is_identical_to_an_uninterrupted_run(npf_runs):
    s, k = npf_runs["straight"], npf_runs["killed"]
    fs, fk = ckpt.load(s / "final.pt"), ckpt.load(k / "final.pt")
    for part in ("actor", "critic", "critic_target"):
        for name, v in fs["algo"][part].items():
            assert torch.equal(v, fk["algo"][part][name]), (part, name)
    assert torch.equal(fs["algo"]["log_alpha"], fk["algo"]["log_alpha"])
    assert fs["pathways"]["masks"].keys() == fk["pathways"]["masks"].keys()
    for role, d in fs["pathways"]["masks"].items():
        for name, e in d.items():
            assert torch.equal(e["bits"], fk["pathways"]["masks"][role][name]["bits"])
    for f in ("metrics.csv", "grad_norms.csv", "tidy_grads.csv", "tidy_curves.csv"):
        assert read(s / f) == read(k / f), f
    assert npf_runs["out_s"]["dapd"] == npf_runs["out_k"]["dapd"]


def test_npf_run_logs_success_dapd_and_grad_norms(npf_runs, results):
    out, d = npf_runs["out_s"], npf_runs["straight"]
    curve = pd.read_csv(d / "metrics.csv")
    assert list(curve["step"]) == [0, 150, 300, 450, 600]
    assert {f"score/{t}" for t in TASKS} <= set(curve.columns) and "score_mean" in curve.columns
    assert curve[[f"score/{t}" for t in TASKS]].isin([0.0, 100.0]).all().all()  # success %, 1 episode
    assert out["updates"] == 450 and out["env_steps_per_task"] == 600
    dapd = out["dapd"]
    assert dapd["merged_at_update"] == 300
    assert all(n == 2 for n in dapd["rescores"].values())  # discovery at 150 + one DAPD re-score at 300
    assert all(dapd["frozen"].values())
    # frozen by the merge (at update 300 = env step 150 + 300), not by the stop rule
    assert dapd["frozen_by"] == {t: "merge" for t in TASKS} and dapd["merged_at_step"] == 450
    assert dapd["frozen_at_step"] == {t: None for t in TASKS}
    hist = metric_history(results, d, "dapd/frozen_by_merge")
    assert hist[-1] == (600, 2.0) and all(v == 0 for s, v in hist if s < 450)
    assert all(v == 0 for _, v in metric_history(results, d, "dapd/frozen_by_threshold"))
    assert metric_history(results, d, "dapd/merged_at_step") == [(450, 450.0)]
    for role in ("actor", "critic"):
        assert all(abs(x - 0.05) < 0.01 for x in dapd["density"][role])
    g = pd.read_csv(d / "tidy_grads.csv")
    assert {"step", "task", "grad_norm", "variant", "seed"} <= set(g.columns)
    assert set(g["variant"]) == {"pretrain"} and set(g["task"]) == set(TASKS)
    assert set(g["phase"]) == {"pretrain", "shared"} and (g["grad_norm"] > 0).all()
    assert list(g["updates"].unique()) == list(range(50, 451, 50))
    c = pd.read_csv(d / "tidy_curves.csv")
    assert list(c.columns) == ["step", "task", "variant", "seed", "success"]
    for key in ("raw_env_steps_per_s", "env_steps_per_s", "updates_per_s"):
        assert out["rates"][key] > 0


def test_final_evaluation_json_is_read_by_the_tables(npf_runs, results):
    from npf.report.tables.scores import load_eval_results

    out_json = results / "eval" / "mt10" / "sac-npf-sac" / "seed0.json"
    ev = evaluate_online_run(npf_runs["cfg"], "mt10", "sac-npf", 0, npf_runs["straight"] / "final.pt", out_json)
    assert ev["metric"] == "success" and ev["algo"] == "sac" and ev["method"] == "sac-npf"
    assert set(ev["tasks"]) == set(TASKS) and all(r["episodes"] == 2 for r in ev["tasks"].values())
    df = load_eval_results(results)
    assert set(df["task"]) == set(TASKS) and set(df["metric"]) == {"success"}
    assert set(zip(df["method"], df["algo"])) == {("sac-npf", "sac")}


@pytest.mark.parametrize("method", ["sac-npf-nopretrain", "mt-sac", "mh-sac", "pcgrad"])
def test_other_methods_run(results, method):
    cfg = tiny(results, total_steps=300, eval_interval=300, checkpoint_every=300)
    d = run_dir(results, method)
    out = train_online(cfg, "mt10", method, 0, d)
    curve = pd.read_csv(d / "metrics.csv")
    assert list(curve["step"]) == [0, 300] and {f"score/{t}" for t in TASKS} <= set(curve.columns)
    assert out["updates"] == 150
    assert (d / "grad_norms.csv").exists() == (method == "sac-npf-nopretrain")
    if method == "sac-npf-nopretrain":
        assert out["dapd"]["merged_at_update"] is None and not any(out["dapd"]["frozen"].values())
        assert all(n == 2 for n in out["dapd"]["rescores"].values())  # DAPD on the shared network
        g = pd.read_csv(d / "grad_norms.csv")
        assert set(g["phase"]) == {"shared"}


def test_dapd_ablation_stop_rule_and_figure_inputs(results):
    from npf.report.figures.build import read_tidy
    from npf.report.figures.online import figure3

    cfg = tiny(results)
    cfg["online"]["dapd_ablation"]["return_threshold"] = -1e9  # any return meets T_H
    outs = {}
    for variant in ("dapd-M2", "dapd-nothreshold"):
        d = results / "online" / "dapd" / "forward" / variant / "seed0"
        tidy = results / "online" / "dapd_curves" / "forward" / variant / "seed0.csv"
        outs[variant] = train_dapd_variant(cfg, "forward", variant, 0, d, curves_out=tidy)
    th, no = outs["dapd-M2"]["dapd"], outs["dapd-nothreshold"]["dapd"]
    assert th["frozen_at_step"] == {"forward": 2000} and th["rescores"] == {"forward": 1}
    assert th["frozen_by"] == {"forward": "threshold"} and th["merged_at_step"] is None
    assert no["frozen_by"] == {"forward": None}
    d = results / "online" / "dapd" / "forward" / "dapd-M2" / "seed0"
    assert metric_history(results, d, "dapd/frozen_by_threshold") == [(2000, 1.0)]
    assert metric_history(results, d, "dapd/frozen_by_merge") == [(2000, 0.0)]
    assert no["frozen"] == {"forward": False} and no["rescores"] == {"forward": 2} and no["M"] == 2  # online.dapd.M
    df = read_tidy(results / "online" / "dapd_curves.csv")
    assert list(df.columns) == ["step", "task", "variant", "seed", "return"]
    assert set(df["variant"]) == {"dapd-M2", "dapd-nothreshold"} and set(df["step"]) == {0, 1000, 2000}
    fig = figure3(df, results / "fig03_test")
    assert (results / "fig03_test.png").exists() and fig is not None
