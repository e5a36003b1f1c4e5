"""offline.dataset_sizes (Fig. 5): runs on the first K trajectories per task, their tidy scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dag import dry_run

from npf.config import ConfigError, validate
from npf.data import Dataset, DatasetError, first_episodes, load_dataset, save_dataset
from npf.report.figures.build import write_figures
from npf.sample_complexity import tidy_scores, write_scores
from npf.stages.offline import evaluate_run, load_suite_data, train_offline

LENGTHS = [3, 5, 4, 2]  # episode lengths; the 2nd ends in a terminal, the others at the time limit


def episodes_dataset(obs_dim=39, act_dim=4, lengths=LENGTHS, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    t = sum(lengths)
    ends = np.cumsum(lengths) - 1
    term = np.zeros(t, bool)
    term[ends[1]] = True
    tout = np.zeros(t, bool)
    tout[np.delete(ends, 1)] = True
    return {
        "observations": rng.standard_normal((t, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (t, act_dim)).astype(np.float32),
        "rewards": np.arange(t, dtype=np.float32),  # row number: shows which rows were kept
        "next_observations": rng.standard_normal((t, obs_dim)).astype(np.float32),
        "terminals": term,
        "timeouts": tout,
    }


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_first_episodes_takes_exactly_k_whole_episodes(k):
    arrays = episodes_dataset()
    sub = first_episodes(Dataset(arrays, {"scores": {"random": 1.0}}, Path("x.npz")), k)
    rows = sum(LENGTHS[:k])
    assert len(sub) == rows and sub.arrays["rewards"].tolist() == list(range(rows))
    for key, a in arrays.items():
        assert np.array_equal(sub.arrays[key], a[:rows]), key
    assert int((sub.arrays["terminals"] | sub.arrays["timeouts"]).sum()) == k
    assert sub.arrays["terminals"][-1] or sub.arrays["timeouts"][-1]  # ends on an episode boundary
    assert sub.manifest == {"scores": {"random": 1.0}}


def test_more_episodes_than_the_dataset_holds_is_an_error():
    with pytest.raises(DatasetError, match="x.npz: holds 4 whole episodes, 5 requested"):
        first_episodes(Dataset(episodes_dataset(), {}, Path("x.npz")), 5)


def test_dataset_sizes_are_validated():
    assert validate({})["offline"]["dataset_sizes"] == []
    for raw, key in (
        ({"offline": {"dataset_sizes": [0]}}, "offline.dataset_sizes"),
        ({"offline": {"dataset_sizes": [5, 5]}}, "offline.dataset_sizes"),
        ({"datasets": {"episodes": 10}, "offline": {"dataset_sizes": [5, 20]}}, "datasets.episodes"),
    ):
        with pytest.raises(ConfigError) as e:
            validate(raw)
        assert "\n" not in str(e.value) and key in str(e.value), str(e.value)


def test_snakemake_plans_the_sample_complexity_runs(tmp_path):
    out = dry_run(
        tmp_path,
        "suites: [cheetah]\ntasks: {cheetah: [forward, jump]}\ndatasets: {episodes: 8}\n"
        "offline: {methods: [npf, mt], algos: [iql], seeds: [0, 1], dataset_sizes: [2, 5, 8]}\n"
        "online: {methods: [], dapd_ablation: {variants: []}}\n",
    )
    runs = set(re.findall(r"sample_complexity/runs/cheetah/(\w+-\w+/n\d+/seed\d+)/final\.pt", out))
    assert runs == {f"{m}-iql/n{k}/seed{s}" for m in ("npf", "mt") for k in (2, 5) for s in (0, 1)}, out
    masks = set(re.findall(r"sample_complexity/pathways/cheetah/(iql/n\d+/seed\d+)/masks\.pt", out))
    assert masks == {f"iql/n{k}/seed{s}" for k in (2, 5) for s in (0, 1)}, out
    evals = set(re.findall(r"sample_complexity/eval/cheetah/(\w+-\w+/n\d+/seed\d+)\.json", out))
    assert evals == runs
    assert "sample_complexity/scores.csv" in out
    # K = datasets.episodes is the main run, not trained again: the scores job reads its JSON
    job = out[out.index("rule sample_complexity_scores:") :]
    inputs = job[job.index("input:") + len("input:") :].splitlines()[0].split(", ")
    main = {i.split("/results/eval/cheetah/")[1] for i in inputs if "/results/eval/" in i}
    assert main == {f"{m}-iql/seed{s}.json" for m in ("npf", "mt") for s in (0, 1)}, inputs
    assert sum("/sample_complexity/eval/" in i for i in inputs) == 8 and len(inputs) == 12, inputs
    assert "n8/" not in out
    # the main runs are still planned, once each
    assert set(re.findall(r"/runs/cheetah/(\w+-\w+/seed\d+)/final\.pt", out)) == {
        f"{m}-iql/seed{s}" for m in ("npf", "mt") for s in (0, 1)
    }


def test_runs_train_on_the_subset_and_tidy_rows_match_the_eval_jsons(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tasks = ["reach", "push"]
    cfg = validate(
        {
            "results_dir": str(tmp_path),
            "device": "cpu",
            "suites": ["mt10"],
            "tasks": {"mt10": tasks},
            "experts": {"source": "scripted"},
            "datasets": {"episodes": 4},
            "offline": {
                "methods": ["mt"],
                "algos": ["iql"],
                "updates": 3,
                "batch_size": 8,
                "eval_interval": 3,
                "eval_episodes": 1,
                "checkpoint_every": 3,
                "log_every": 1,
                "dataset_sizes": [2],
                "iql": {"actor_hidden": [16], "critic_hidden": [16], "value_hidden": [16]},
            },
            "evaluation": {"episodes": 1, "envs_per_task": 1},
        }
    )
    for i, t in enumerate(tasks):
        save_dataset(
            tmp_path / "datasets" / "mt10" / f"{t}.npz",
            episodes_dataset(seed=i),
            {"suite": "mt10", "task": t, "scores": {"random": 0.0, "expert": 1.0}},
        )
    full = load_suite_data(cfg, "mt10", torch.device("cpu"))
    sub = load_suite_data(cfg, "mt10", torch.device("cpu"), max_episodes=2)
    assert [b.size for b in full.buffers] == [14, 14] and [b.size for b in sub.buffers] == [8, 8]
    assert np.allclose(
        sub.normalizers[0].mean, load_dataset(tmp_path / "datasets/mt10/reach.npz").arrays["observations"][:8].mean(0)
    )
    paths = []
    for seed in (0, 1):
        run = tmp_path / "sample_complexity" / "runs" / "mt10" / "mt-iql" / "n2" / f"seed{seed}"
        train_offline(cfg, "mt10", "mt", "iql", seed, run, max_episodes=2)
        assert torch.load(run / "final.pt", weights_only=True)["dataset_size"] == 2
        out = tmp_path / "sample_complexity" / "eval" / "mt10" / "mt-iql" / "n2" / f"seed{seed}.json"
        evaluate_run(cfg, "mt10", "mt", "iql", seed, run / "final.pt", out, dataset_size=2)
        paths.append(out)
    frame = write_scores(paths, tmp_path / "sample_complexity" / "scores.csv")
    back = pd.read_csv(tmp_path / "sample_complexity" / "scores.csv")
    assert len(back) == len(frame) == 4
    for p in paths:
        ev = json.loads(p.read_text())
        assert ev["dataset_size"] == 2
        for task, r in ev["tasks"].items():
            row = back[(back.seed == ev["seed"]) & (back.task == task)]
            assert len(row) == 1
            assert (row.dataset_size.item(), row.method.item(), row.algo.item(), row.suite.item()) == (
                2,
                "mt",
                "iql",
                "mt10",
            )
            assert row.score.item() == pytest.approx(r["success"]) and row.metric.item() == "success"
    # Fig. 5 picks the tidy file up
    figs = write_figures(tmp_path, tmp_path / "figures")
    assert tmp_path / "figures" / "fig05_sample_complexity.png" in figs


def test_tidy_takes_a_main_run_with_its_listed_size(tmp_path):
    main, sub = tmp_path / "seed0.json", tmp_path / "n5_seed0.json"
    ev = {
        "suite": "cheetah",
        "method": "npf",
        "algo": "iql",
        "seed": 0,
        "metric": "normalized",
        "tasks": {"forward": {"normalized_mean": 50.0}, "jump": {"normalized_mean": 70.0}},
    }
    main.write_text(json.dumps(ev))
    sub.write_text(json.dumps(ev | {"dataset_size": 5, "tasks": {"forward": {"normalized_mean": 20.0}}}))
    with pytest.raises(ValueError, match="no 'dataset_size'"):
        tidy_scores([main])
    with pytest.raises(ValueError, match="trained on 5 trajectories per task, listed as 7"):
        tidy_scores([sub], sizes=[7])
    t = tidy_scores([main, sub], sizes=[100, 5])
    assert t[["dataset_size", "task", "score"]].values.tolist() == [
        [5, "forward", 20.0],
        [100, "forward", 50.0],
        [100, "jump", 70.0],
    ]
