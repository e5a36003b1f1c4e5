"""`offline.per_algo`: one algorithm's runs get their own seeds / updates / intervals
(BCQ costs far more per update)."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
from dag import dry_run

from npf.config import ConfigError, offline_section, validate

REPO = Path(__file__).resolve().parent.parent


def test_per_algo_merges_over_block_and_per_suite():
    cfg = validate(
        {
            "offline": {
                "updates": 1000,
                "seeds": [0, 1],
                "eval_interval": 500,
                "per_algo": {"bcq": {"updates": 300, "seeds": [0]}},
                "per_suite": {"cheetah": {"eval_interval": 100, "per_algo": {"bcq": {"batch_size": 64}}}},
            }
        }
    )
    bcq, iql = offline_section(cfg, "cheetah", "bcq"), offline_section(cfg, "cheetah", "iql")
    assert (bcq["updates"], bcq["seeds"], bcq["batch_size"], bcq["eval_interval"]) == (300, [0], 64, 100)
    assert (iql["updates"], iql["seeds"], iql["batch_size"], iql["eval_interval"]) == (1000, [0, 1], 256, 100)
    assert "per_algo" not in bcq and "per_suite" not in bcq
    # the other suites see only the global per_algo block
    assert offline_section(cfg, "mt10", "bcq")["batch_size"] == 256
    assert offline_section(cfg, "mt10", "bcq")["eval_interval"] == 500


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"offline": {"per_algo": {"sac": {"updates": 3}}}}, "offline.per_algo"),
        ({"offline": {"per_algo": {"bcq": {"actor_hidden": [8]}}}}, "offline.per_algo.bcq"),
        ({"offline": {"per_algo": {"iql": {"updates": 0}}}}, "offline.per_algo.iql.updates"),
        ({"offline": {"per_algo": {"iql": {"seeds": []}}}}, "offline.per_algo.iql.seeds"),
    ],
)
def test_bad_per_algo_is_one_line_naming_the_key(raw, key):
    with pytest.raises(ConfigError) as e:
        validate(raw)
    msg = str(e.value)
    assert "\n" not in msg and key in msg, msg


def test_snakemake_plans_per_algo_seeds(tmp_path):
    out = dry_run(
        tmp_path,
        "suites: [cheetah]\noffline: {seeds: [0, 1, 2], per_algo: {bcq: {seeds: [0]}}}\nonline: {methods: []}\n",
    )
    planned = set(re.findall(r"runs/cheetah/(\w+-\w+/seed\d+)/final\.pt", out))
    want = {f"{m}-iql/seed{s}" for m in ("npf", "mt", "mhmt") for s in (0, 1, 2)} | {
        f"{m}-bcq/seed0" for m in ("npf", "mt", "mhmt")
    }
    assert planned == want, out


def test_training_stops_at_its_algorithms_update_budget(tmp_path, monkeypatch):
    import torch

    from npf.stages.offline import train_offline

    torch.set_num_threads(1)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    (results / "datasets" / "cheetah").mkdir(parents=True)
    for f in (REPO / "tests" / "bad_inputs" / "datasets" / "good").iterdir():
        shutil.copy(f, results / "datasets" / "cheetah" / f.name)
    h = [16, 16]
    cfg = validate(
        {
            "results_dir": str(results),
            "device": "cpu",
            "tasks": {"cheetah": ["forward", "backward"]},
            "offline": {
                "updates": 400,
                "batch_size": 8,
                "eval_interval": 400,
                "eval_episodes": 1,
                "checkpoint_every": 400,
                "log_every": 5,
                "per_algo": {"iql": {"updates": 12, "eval_interval": 6}},
                "iql": {"actor_hidden": h, "critic_hidden": h, "value_hidden": h},
            },
        }
    )
    out = results / "runs" / "cheetah" / "mt-iql" / "seed0"
    assert train_offline(cfg, "cheetah", "mt", "iql", 0, out)["updates"] == 12
    with open(out / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [6, 12]
