"""Configuration: schema defaults, one-line errors naming the key, and Snakemake planning."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from npf.config import ConfigError, deep_merge, load, load_schema, validate
from npf.envs import SUITES

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")


def schema_defaults(schema: dict) -> dict:
    """Every default declared in the schema, as a nested dict (read straight from the YAML)."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            if "default" in sub:  # an object without a default (e.g. offline.per_algo.bcq) is not filled in
                out[key] = schema_defaults(sub)
        elif "default" in sub:
            out[key] = sub["default"]
    return out


def test_defaults_filled():
    cfg = validate({})
    assert cfg == schema_defaults(load_schema())  # the YAML with the generated algorithm blocks
    # spot checks against the documented defaults
    assert cfg["results_dir"] == "results" and cfg["device"] == "auto" and cfg["torch_threads"] == 1
    assert cfg["suites"] == ["cheetah"] and cfg["tasks"] == {}
    assert cfg["experts"]["seeds"] == [0] and cfg["experts"]["total_steps"] == 20000
    assert cfg["experts"]["sac"]["hidden"] == [256, 256] and cfg["experts"]["sac"]["target_entropy"] is None
    assert cfg["datasets"]["expert_seed"] == 0 and cfg["datasets"]["episodes"] == 10
    assert cfg["tracking"] == {"uri": None, "experiment_prefix": "npf"}
    assert validate(None) == cfg


def test_partial_nested_values_keep_other_defaults_and_input_is_not_mutated():
    raw = {"experts": {"sac": {"lr": 3e-4}, "total_steps": 5}}
    cfg = validate(raw)
    assert raw == {"experts": {"sac": {"lr": 3e-4}, "total_steps": 5}}
    assert cfg["experts"]["sac"]["lr"] == 3e-4 and cfg["experts"]["sac"]["batch_size"] == 256
    assert cfg["experts"]["total_steps"] == 5 and cfg["experts"]["learning_starts"] == 2000
    assert validate(cfg) == cfg  # idempotent
    # defaults are copies: mutating one config does not change the next one
    cfg["experts"]["sac"]["hidden"].append(7)
    assert validate({})["experts"]["sac"]["hidden"] == [256, 256]


def test_repo_configs_are_valid():
    for name in ("config.yaml", "paper.yaml"):
        cfg = load(REPO / "config" / name)
        assert cfg["datasets"]["expert_seed"] in cfg["experts"]["seeds"]
    assert load(REPO / "config/paper.yaml")["suites"] == ["cheetah", "cheetah_velocity", "mt10", "quadruped"]


BAD = [
    ({"foo": 1}, "foo"),
    ({"experts": {"sac": {"foo": 1}}}, "experts.sac.foo"),
    ({"datasets": {"episodez": 3}}, "datasets.episodez"),
    ({"experts": {"total_steps": "1000"}}, "experts.total_steps"),
    ({"experts": {"sac": {"hidden": "256"}}}, "experts.sac.hidden"),
    ({"experts": {"total_steps": -5}}, "experts.total_steps"),
    ({"experts": {"learning_starts": -1}}, "experts.learning_starts"),
    ({"suites": ["walker"]}, "suites"),
    ({"tasks": {"walker": ["run"]}}, "tasks.walker"),
    ({"tasks": {"cheetah": ["fly"]}}, "tasks.cheetah"),
    ({"tasks": {"mt10": ["reach", "push-wall"]}}, "tasks.mt10"),
    ({"device": "gpu"}, "device"),
    ({"device": "cuda:x"}, "device"),
    ({"experts": {"seeds": [0, 1]}, "datasets": {"expert_seed": 2}}, "datasets.expert_seed"),
    ({"experts": {"sac": {"activation": "swish"}}}, "experts.sac.activation"),
    ({"tracking": {"uri": 3}}, "tracking.uri"),
    ({"fused_adam": "yes"}, "fused_adam"),
]


@pytest.mark.parametrize("raw,key", BAD, ids=[k for _, k in BAD])
def test_invalid_config_one_line_naming_key(raw, key):
    with pytest.raises(ConfigError) as e:
        validate(raw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert msg.startswith("config: "), msg
    assert re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", msg), f"{key!r} not named in: {msg}"


def test_unknown_task_names_the_task():
    with pytest.raises(ConfigError, match="'fly'"):
        validate({"tasks": {"cheetah": ["forward", "fly"]}})


def test_every_known_task_is_accepted():
    cfg = validate({"suites": list(SUITES), "tasks": {s: list(t) for s, t in SUITES.items()}})
    assert cfg["tasks"]["mt10"] == list(SUITES["mt10"])


def test_load_missing_file(tmp_path):
    p = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "not found" in msg


@pytest.mark.parametrize("text", ["experts: [1, 2\n", "a: b: c\n", "experts:\n  total_steps: 1\n\tseeds: [0]\n"])
def test_load_invalid_yaml(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "YAML" in msg


def test_load_with_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("experts:\n  total_steps: 100\n  sac: {lr: 0.01}\n")
    cfg = load(p, {"experts": {"sac": {"batch_size": 8}}})
    assert cfg["experts"]["total_steps"] == 100
    assert cfg["experts"]["sac"]["lr"] == 0.01 and cfg["experts"]["sac"]["batch_size"] == 8
    with pytest.raises(ConfigError, match="experts.sac.batch_size"):
        load(p, {"experts": {"sac": {"batch_size": 0}}})
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_empty_file_gives_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load(p) == validate({})


def test_schema_keys_are_documented():
    """Every leaf option of the schema carries a type (unknown keys are rejected everywhere)."""

    def walk(s, path):
        if s.get("type") == "object" and "properties" in s:
            assert s.get("additionalProperties") is False, path
            for k, sub in s["properties"].items():
                walk(sub, f"{path}.{k}" if path else k)
        else:
            assert "type" in s, path

    walk(load_schema(), "")


# ---------------------------------------------------------------- snakemake


def snakemake(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([SNAKEMAKE, *args], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def job_stats(out: str) -> dict[str, int]:
    m = re.search(r"Job stats:\n\s*job\s+count\n[-\s]+\n(.*?)\n\s*total\s+(\d+)", out, re.S)
    assert m, f"no Job stats table in:\n{out}"
    counts = {}
    for line in m.group(1).splitlines():
        name, n = line.split()
        counts[name] = int(n)
    assert sum(counts.values()) == int(m.group(2))
    return counts


@pytest.mark.parametrize(
    "args,key",
    [
        (["--config", "experts={stepz: 1}"], "experts.stepz"),
        (["--configfile", "BAD"], "experts.total_steps"),
    ],
    ids=["config-unknown-key", "configfile-negative"],
)
def test_snakemake_rejects_bad_config(tmp_path, args, key):
    (tmp_path / "bad.yaml").write_text("experts:\n  total_steps: -3\n")
    args = [str(tmp_path / "bad.yaml") if a == "BAD" else a for a in args]
    results = f"results_dir={tmp_path / 'results'}"
    # repeated --config flags replace each other: pass every item after one flag
    args = [*args, "--config", results] if "--config" not in args else [*args, results]
    r = snakemake("-n", *args, tmp_path=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert errors[0].startswith("error: config: ") and key in errors[0], out
    assert "Traceback" not in out, out


def test_snakemake_plans_paper_config(tmp_path):
    r = snakemake(
        "--configfile", "config/paper.yaml", "-n", "--config", f"results_dir={tmp_path / 'results'}", tmp_path=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    stats = job_stats(r.stdout + r.stderr)
    n_tasks = sum(len(SUITES[s]) for s in ("cheetah", "cheetah_velocity", "mt10", "quadruped"))
    assert n_tasks == 5 + 6 + 10 + 4 == 25
    assert stats["experts"] == 25 and stats["datasets"] == 25
    # offline: 3 gym suites x seeds 0-4 + MT10 x seeds 0-9, each with 3 methods x 2 algorithms
    assert stats["train_offline"] == (3 * 5 + 10) * 3 * 2 == stats["evaluate"]
    assert stats["pathways"] == (3 * 5 + 10) * 2
    assert str(tmp_path / "results" / "experts" / "mt10" / "window-close" / "seed0" / "policy.pt") in r.stdout


def test_snakemake_plans_seeds_and_task_subsets(tmp_path):
    # two seeds and a task subset: experts = tasks × seeds, datasets = tasks
    (tmp_path / "c.yaml").write_text(
        "suites: [cheetah, mt10]\ntasks: {mt10: [reach, push]}\nexperts: {seeds: [0, 1]}\n"
    )
    r = snakemake(
        "-n",
        "--configfile",
        str(tmp_path / "c.yaml"),
        "--config",
        f"results_dir={tmp_path / 'results'}",
        tmp_path=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    stats = job_stats(r.stdout + r.stderr)
    assert stats["experts"] == (5 + 2) * 2 and stats["datasets"] == 5 + 2


def test_snakemake_lint(tmp_path):
    r = snakemake("--lint", tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def online_only_example() -> str:
    """The online-only config of docs/online.md (its YAML block with ``suites: []``)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", (REPO / "docs" / "online.md").read_text(), re.S | re.M)
    return next(b for b in blocks if b.startswith("suites: []"))


def test_snakemake_plans_an_online_only_config(tmp_path):
    (tmp_path / "online_only.yaml").write_text(online_only_example())
    cfg = load(tmp_path / "online_only.yaml")
    assert cfg["suites"] == [] and cfg["online"]["methods"] == ["sac-npf", "mt-sac"]
    r = snakemake(
        "-n",
        "--configfile",
        str(tmp_path / "online_only.yaml"),
        "--config",
        f"results_dir={tmp_path / 'results'}",
        tmp_path=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    stats = job_stats(r.stdout + r.stderr)
    # 2 seeds: sac-npf + its no-pretrain variant (Fig. 4, grad_norm_ablation) and mt-sac; 2 evaluations each
    assert stats == {
        "train_online_npf": 2 * 2,
        "train_online": 2,
        "online_evaluate": 2 * 2,
        "figures_tables": 1,
        "all": 1,
    }, stats
    assert "/experts/" not in r.stdout and "/datasets/" not in r.stdout


def test_empty_suites_without_online_runs_is_rejected():
    with pytest.raises(ConfigError, match="suites is empty") as e:
        validate({"suites": [], "online": {"methods": [], "dapd_ablation": {"variants": []}}})
    assert "\n" not in str(e.value)
    assert validate({"suites": [], "online": {"methods": [], "dapd_ablation": {"variants": ["dense"]}}})["suites"] == []


@pytest.mark.parametrize(
    "online,message",
    [
        (
            {"learning_starts": 500, "total_steps": 500},
            "online.learning_starts (500) must be below online.total_steps (500)",
        ),
        (
            {"batch_size": 64, "sac": {"batch_size": 32}},
            "online.sac.batch_size: set the batch size with the block's batch_size key, not in sac",
        ),
        (
            {"dapd_ablation": {"variants": ["dapd"], "batch_size": 16, "sac": {"batch_size": 32}}},
            "online.dapd_ablation.sac.batch_size: set the batch size",
        ),
        ({"dapd_ablation": {"variants": ["dapd-M0"]}}, "online.dapd_ablation.variants.0: 'dapd-M0' does not match"),
        (
            {"dapd_ablation": {"variants": ["dense"], "learning_starts": 90, "total_steps": 80}},
            "online.dapd_ablation: learning_starts (90) must be below total_steps (80)",
        ),
        ({"dapd_ablation": {"tasks": ["sideways"]}}, "online.dapd_ablation.tasks: unknown task 'sideways'"),
    ],
)
def test_online_block_checks_in_config(online, message):
    with pytest.raises(ConfigError) as e:
        validate({"online": online})
    assert str(e.value).startswith(f"config: {message}"), str(e.value)


def test_online_sac_batch_size_equal_to_the_blocks_is_accepted_and_backend_read_from_the_top_level():
    from npf.config import pathway_backend

    cfg = validate({"online": {"batch_size": 64, "sac": {"batch_size": 64}}, "pathway_backend": "sparse"})
    assert cfg["online"]["sac"] == {"batch_size": 64} and pathway_backend(cfg) == "sparse"
    assert pathway_backend(validate({})) == "auto"
