"""Bad-input corpus (tests/bad_inputs/): every bad config, dataset, checkpoint or environment
stops the pipeline with ONE line naming the culprit, a non-zero exit, no traceback (unless
NPF_DEBUG=1) and no output that looks complete.

Entry points, as a user meets them:
* configs (tests/bad_inputs/config/*.yaml): ``npf validate FILE`` and ``snakemake -n --configfile
  FILE`` (one ``error: config: ...`` line);
* datasets (tests/bad_inputs/datasets/<case>/, built by make_corpus.py), checkpoints, devices,
  results dirs: the stage functions run inside workflow/scripts/_stage.py's wrapper by
  tests/bad_inputs/run_stage.py (the stage scripts' code path), and two cases through
  ``snakemake`` running the real stage scripts.
Plus the security checks: every torch.load / np.load in the code refuses pickles, and the
documented MLflow UI/server commands bind to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from npf import checkpoint as ckpt
from npf.algos.sac import SAC, SACConfig
from npf.config import validate
from npf.expert_policy import save_expert_policy
from npf.stages.offline import build_algo, discover_pathways, train_offline

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "bad_inputs"
PY = str(REPO / ".venv" / "bin" / "python")
SNAKEMAKE = str(REPO / ".venv" / "bin" / "snakemake")

# ------------------------------------------------------------------------------------- configs
# corpus file → substring of the single error line (npf validate and snakemake -n)
CONFIG_CASES = {
    # corpus file: (the key named, the offending value or word) — both must be in the one error line
    "unknown_top_key": ("unknown key", "'epochs'"),
    "unknown_nested_key": ("unknown key", "experts.sac.learning_rate"),
    "misspelled_block": ("unknown key", "'ofline'"),
    "mistyped_int": ("experts.total_steps", "'20k'"),
    "mistyped_list": ("offline.seeds", "array"),
    "mistyped_bool": ("offline.normalize_states", "'yes please'"),
    "keep_ratio_zero": ("pathways.keep_ratio", "minimum of 0"),
    "keep_ratio_above_one": ("pathways.keep_ratio", "1.5"),
    "negative_steps": ("experts.total_steps", "-100"),
    "negative_updates": ("offline.updates", "-1"),
    "zero_eval_episodes": ("evaluation.episodes", "minimum of 1"),
    "unknown_suite": ("suites", "'walker'"),
    "unknown_suite_in_tasks": ("tasks.walker", "unknown suite"),
    "unknown_task": ("tasks.cheetah", "'fly'"),
    "empty_suites": ("suites is empty", "nothing to do"),
    "missing_block_value": ("experts", "None"),
    "bad_device": ("device", "'gpu'"),
    "expert_seed_not_trained": ("datasets.expert_seed", "experts.seeds"),
    "per_suite_override_invalid": ("experts.per_suite.mt10", "total_steps"),
    "per_suite_unknown_suite": ("offline.per_suite", "'walker'"),
    "algo_hparam_typo": ("unknown key", "offline.iql.temprature"),
    "iql_actor_hidden_zero": ("offline.iql.actor_hidden.0", "0 is less than the minimum of 1"),
    "iql_critic_hidden_negative": ("offline.iql.critic_hidden.0", "-3 is less than the minimum of 1"),
    "iql_actor_hidden_string": ("offline.iql.actor_hidden", "'256' is not of type 'array'"),
    "iql_expectile_above_one": ("offline.iql.expectile", "1.5 is greater than or equal to the maximum of 1"),
    "bcq_num_samples_zero": ("offline.bcq.num_samples", "0 is less than the minimum of 1"),
    "experts_total_steps_huge": ("experts.total_steps", "1e+29 is greater than the maximum of 1000000000000"),
    "unknown_method": ("offline.methods", "'dqn'"),
    "online_unknown_method": ("online.methods", "'ppo'"),
    "tracking_uri_mistyped": ("tracking.uri", "5000"),
    "results_dir_empty": ("results_dir", "''", "empty"),
    "keep_ratio_nan": ("pathways.keep_ratio", "nan"),
    "duplicate_task": ("tasks.cheetah", "non-unique"),
    "duplicate_expert_seed": ("experts.seeds", "non-unique"),
    "duplicate_offline_seed": ("offline.seeds", "non-unique"),
}
# Snakemake parses the YAML itself before the Snakefile runs: its own message, still no traceback
SNAKEMAKE_PARSE_CASES = {
    "broken_yaml": "Config file is not valid JSON or YAML",
    "top_level_list": "Config file must be given as JSON or YAML with keys at top level",
}
# ... and `npf validate` parses it with npf.config.load: the file is named, the reason given
CLI_PARSE_CASES = {
    "broken_yaml": "broken_yaml.yaml: not valid YAML",
    "top_level_list": "top_level_list.yaml: a config file must be a mapping of keys, not a list",
}


def test_corpus_is_complete():
    files = {p.stem for p in (CORPUS / "config").glob("*.yaml")}
    assert files == set(CONFIG_CASES) | set(SNAKEMAKE_PARSE_CASES)
    datasets = {p.name for p in (CORPUS / "datasets").iterdir() if p.is_dir()} - {"good"}
    assert datasets == {n[len("dataset_") :] for n in RUNTIME_CASES if n.startswith("dataset_")}
    assert len(CONFIG_CASES) + len(SNAKEMAKE_PARSE_CASES) + len(RUNTIME_CASES) + len(SNAKEMAKE_STAGE_CASES) >= 25


def one_error_line(out: str, prefix: str = "error:") -> str:
    lines = [ln for ln in out.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, f"expected exactly one {prefix!r} line:\n{out}"
    return lines[0]


@pytest.mark.parametrize("name", [*CONFIG_CASES, *SNAKEMAKE_PARSE_CASES])
def test_npf_validate_rejects(name, capsys):
    from npf.cli import main

    rc = main(["validate", str(CORPUS / "config" / f"{name}.yaml")])
    out = capsys.readouterr()
    assert rc != 0
    line = one_error_line(out.err)
    if name in CLI_PARSE_CASES:
        assert line.startswith("error: ") and CLI_PARSE_CASES[name] in line, line
    else:
        assert line.startswith("error: config: ") and all(w in line for w in CONFIG_CASES[name]), line
    assert "Traceback" not in out.err + out.out
    assert "config: valid" not in out.out


@pytest.fixture(scope="session")
def no_slurm_path(tmp_path_factory) -> dict:
    """An environment where `scontrol` fails at once: the Slurm executor plugin, loaded by every
    snakemake start, otherwise waits 10 s for a slurmctld when slurm is installed but not running."""
    bin_dir = tmp_path_factory.mktemp("bin")
    (bin_dir / "scontrol").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "NPF_DEBUG")}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    return env


# a few in the quick suite; every config case with -m slow (each snakemake start costs ~2 s)
QUICK_SNAKEMAKE = {
    "unknown_nested_key",
    "per_suite_override_invalid",
    "broken_yaml",
    "iql_actor_hidden_zero",
    "results_dir_empty",
}


@pytest.mark.parametrize(
    "name",
    [
        n if n in QUICK_SNAKEMAKE else pytest.param(n, marks=pytest.mark.slow)
        for n in [*CONFIG_CASES, *SNAKEMAKE_PARSE_CASES]
    ],
)
def test_snakemake_dry_run_rejects(name, tmp_path, no_slurm_path):
    # outputs go to tmp_path, unless results_dir is what the case is about
    where = [] if name == "results_dir_empty" else ["--config", f"results_dir={tmp_path / 'results'}"]
    r = subprocess.run(
        [SNAKEMAKE, "-n", "--configfile", str(CORPUS / "config" / f"{name}.yaml"), *where],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env=no_slurm_path,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    assert "Job stats" not in out, out  # nothing planned
    if name in CONFIG_CASES:
        line = one_error_line(out)
        assert line.startswith("error: config: ") and all(w in line for w in CONFIG_CASES[name]), out
    else:
        assert SNAKEMAKE_PARSE_CASES[name] in out, out


# ---------------------------------------------------------------------------------- runtime cases
HID = [32, 32]


def base_config(results: Path, **over) -> dict:
    cfg = {
        "results_dir": str(results),
        "device": "cpu",
        "suites": ["cheetah"],
        "tasks": {"cheetah": ["forward", "backward"]},
        "experts": {
            "seeds": [0],
            "total_steps": 1000,
            "learning_starts": 100,
            "checkpoint_every": 1000,
            "eval_episodes": 1,
            "sac": {"hidden": HID, "batch_size": 16},
        },
        "datasets": {"episodes": 1, "num_envs": 1, "random_episodes": 1, "eval_episodes": 1, "weak_expert": "warn"},
        "pathways": {"score_batch_size": 8},
        "offline": {
            "methods": ["npf", "mt"],
            "algos": ["iql", "bcq"],
            "updates": 4,
            "batch_size": 8,
            "eval_interval": 100,
            "eval_episodes": 1,
            "checkpoint_every": 2,
            "log_every": 2,
            "iql": {"actor_hidden": HID, "critic_hidden": HID, "value_hidden": HID},
            "bcq": {"actor_hidden": HID, "critic_hidden": HID, "vae_hidden": HID},
        },
        "evaluation": {"episodes": 1, "envs_per_task": 1},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


def small_nets(cfg: dict, hidden=(16, 16)) -> dict:
    h = list(hidden)
    cfg = json.loads(json.dumps(cfg))
    cfg["offline"]["iql"] = {"actor_hidden": h, "critic_hidden": h, "value_hidden": h}
    cfg["experts"]["sac"]["hidden"] = h
    return cfg


def install_datasets(results: Path, case: str | None = None) -> Path:
    d = results / "datasets" / "cheetah"
    d.mkdir(parents=True, exist_ok=True)
    for f in (CORPUS / "datasets" / "good").iterdir():
        shutil.copy(f, d / f.name)
    if case:
        src = CORPUS / "datasets" / case
        for f in src.iterdir():
            if f.name not in ("REMOVE", "MKDIR"):
                shutil.copy(f, d / f.name)
        for n in (src / "REMOVE").read_text().split() if (src / "REMOVE").exists() else ():
            (d / n).unlink()
        for n in (src / "MKDIR").read_text().split() if (src / "MKDIR").exists() else ():
            (d / n).unlink()
            (d / n).mkdir()
    return d


def run_dir(results: Path, method="mt", algo="iql") -> Path:
    return results / "runs" / "cheetah" / f"{method}-{algo}" / "seed0"


def offline_spec(results: Path, cfg: dict | None = None, method="mt", algo="iql", masks: str | None = None) -> dict:
    out = run_dir(results, method, algo)
    return {
        "stage": "train_offline",
        "config": cfg or base_config(results),
        "args": ["cheetah", method, algo, 0, str(out)],
        "kwargs": {"pathways_path": masks},
        "outputs": [str(out / "final.pt"), str(out / "metrics.csv")],
    }


def expert_spec(results: Path, cfg: dict | None = None) -> dict:
    out = results / "experts" / "cheetah" / "forward" / "seed0"
    return {
        "stage": "train_expert",
        "config": cfg or base_config(results),
        "args": ["cheetah", "forward", 0, str(out)],
        "outputs": [str(out / "policy.pt"), str(out / "metrics.json")],
    }


def dataset_spec(results: Path, policy: Path) -> dict:
    out = results / "datasets" / "cheetah" / "forward.npz"
    return {
        "stage": "collect_dataset",
        "config": base_config(results),
        "args": ["cheetah", "forward", str(policy), str(out)],
        "outputs": [str(out), str(out.with_suffix(".json"))],
    }


def evaluate_spec(results: Path, final: Path) -> dict:
    out = results / "eval" / "cheetah" / "mt-iql" / "seed0.json"
    return {
        "stage": "evaluate_run",
        "config": base_config(results),
        "args": ["cheetah", "mt", "iql", 0, str(final), str(out)],
        "outputs": [str(out)],
    }


# case → expected substring of the one error line. dataset_<name>: tests/bad_inputs/datasets/<name>,
# given to train_offline; the others are built by `runtime_cases` below.
RUNTIME_CASES = {
    "dataset_truncated": "forward.npz: cannot read arrays (truncated or corrupted",
    "dataset_corrupted_bytes": "forward.npz: cannot read arrays (truncated or corrupted: Bad CRC-32",
    "dataset_checksum_mismatch": "forward.npz: sha256 does not match the manifest",
    "dataset_wrong_shape": "forward.npz: array 'next_observations' has shape (15, 17), expected (16, 17)",
    "dataset_wrong_action_dim": (
        "forward.npz: observations/actions have sizes (17, 4), task cheetah/forward has (17, 6)"
    ),
    "dataset_wrong_dtype": "forward.npz: array 'observations' has dtype float64, expected float32",
    "dataset_nonfinite_rewards": "forward.npz: array 'rewards' holds non-finite values",
    "dataset_inf_observations": "forward.npz: array 'next_observations' holds non-finite values",
    "dataset_missing_array": "forward.npz: missing array 'terminals'",
    "dataset_empty": "forward.npz: dataset is empty",
    "dataset_pickled_object_array": "forward.npz: cannot read arrays (truncated or corrupted: Object arrays cannot be "
    "loaded when allow_pickle=False",
    "dataset_manifest_not_json": "forward.json: manifest is not valid JSON",
    "dataset_schema_version_unknown": "forward.json: schema_version 99, expected 1",
    "dataset_transition_count_mismatch": "forward.npz: holds 16 transitions, manifest says 21",
    "dataset_missing_manifest": "forward.json: manifest not found",
    "dataset_missing_dataset": "forward.npz: dataset file not found",
    "dataset_obs_act_swapped": "forward.npz: observations/actions have sizes (6, 17), manifest says (17, 6)",
    "dataset_actions_out_of_range": "forward.npz: array 'actions' holds values outside [-1, 1] (min",
    "dataset_transitions_count_string": "forward.json: manifest counts.transitions is '16' (str), expected an integer",
    "dataset_npy_renamed_npz": "forward.npz: a single .npy array, not an .npz archive",
    "dataset_npz_is_directory": "forward.npz: is a directory, expected the dataset file",
    "dataset_manifest_is_directory": "forward.json: is a directory, expected the manifest",
    "dataset_obs_dim_mismatch_between_tasks": "backward.npz: observations/actions have sizes (18, 6)",
    "masks_other_architecture": "masks.pt: checkpoint does not match the configured network",
    "masks_other_task_order": "masks are for tasks ['backward', 'forward'], config has ['forward', 'backward']",
    "masks_other_algo": "masks.pt: masks were discovered for bcq, not iql",
    "masks_not_a_pathways_file": "policy.pt: not a pathways file (no 'tasks')",
    "masks_missing": "masks.pt: checkpoint not found",
    "masks_truncated_bits": "masks.pt: unusable pathway masks (mask critic/q1.2.weight: bit array holds 71 uint8 "
    "values, shape [2, 32, 32] needs 256 uint8",
    "masks_task_without_pathway": "masks.pt: unusable pathway masks (task 'backward' has an empty pathway through "
    "network 'value'",
    "masks_missing_role": "masks.pt: unusable pathway masks (no masks for network 'value' of IQL",
    "masks_nonfinite_weight": "masks.pt: non-finite values in init.critic.q1.0.weight",
    "offline_checkpoint_other_architecture": "checkpoint.pt: cannot resume from this checkpoint, it does not match",
    "offline_checkpoint_truncated": "checkpoint.pt: not a readable npf checkpoint",
    "expert_checkpoint_pickle_payload": "checkpoint.pt: not a readable npf checkpoint (UnpicklingError",
    "expert_checkpoint_other_architecture": "checkpoint.pt: cannot resume from this checkpoint",
    "expert_policy_wrong_task_dims": "policy.pt: policy for obs/act sizes (39, 4), task cheetah/forward has (17, 6)",
    "expert_policy_missing": "policy.pt: checkpoint not found",
    "expert_policy_not_a_policy": "masks.pt: not an expert policy file (no 'actor')",
    "final_other_tasks": "final.pt: trained on tasks ['backward', 'forward'], config has ['forward', 'backward']",
    "final_other_architecture": "final.pt: does not match the configured mt-iql networks",
    "final_not_a_final": "checkpoint.pt: not a trained run's final.pt (no 'tasks')",
    "results_dir_unwritable": "Not a directory",
    "cuda_forced_without_gpu": "device: 'cuda' was requested but no CUDA GPU is available",
}


@pytest.fixture(scope="module")
def runtime_cases(tmp_path_factory):
    """Build every runtime case, run them all through run_stage.py (one forked child each)."""
    root = tmp_path_factory.mktemp("bad")
    mp = pytest.MonkeyPatch()
    store = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", store)
    specs: dict[str, dict] = {}
    try:
        # ---- foreign files made by the real stages (16-unit networks, other algo, other task order)
        src = root / "src"
        install_datasets(src)
        cfg = validate(base_config(src))
        masks16 = src / "p16" / "masks.pt"
        discover_pathways(validate(small_nets(cfg)), "cheetah", "iql", 0, masks16)
        masks_bcq = src / "pbcq" / "masks.pt"
        discover_pathways(cfg, "cheetah", "bcq", 0, masks_bcq)
        masks_order = src / "porder" / "masks.pt"
        discover_pathways(
            validate(base_config(src, tasks={"cheetah": ["backward", "forward"]})), "cheetah", "iql", 0, masks_order
        )
        masks_iql = src / "piql" / "masks.pt"
        discover_pathways(cfg, "cheetah", "iql", 0, masks_iql)
        good = torch.load(masks_iql, weights_only=True)
        bad_masks = {}
        for name in ("truncated_bits", "task_without_pathway", "missing_role", "nonfinite_weight"):
            bad = copy.deepcopy(good)
            if name == "truncated_bits":
                entry = bad["pathways"]["masks"]["critic"]["q1.2.weight"]
                entry["bits"] = entry["bits"][:71]
            elif name == "task_without_pathway":
                for entry in bad["pathways"]["masks"]["value"].values():
                    bits = np.unpackbits(entry["bits"].numpy(), count=int(np.prod(entry["shape"]))).reshape(2, -1)
                    bits[1] = 0
                    entry["bits"] = torch.from_numpy(np.packbits(bits.reshape(-1)))
            elif name == "missing_role":
                del bad["pathways"]["masks"]["value"]
            else:  # a weight in no task's pathway
                entry = bad["pathways"]["masks"]["critic"]["q1.0.weight"]
                bits = np.unpackbits(entry["bits"].numpy(), count=int(np.prod(entry["shape"]))).reshape(entry["shape"])
                row, col = np.argwhere(~bits.any(0))[0]
                bad["init"]["critic"]["q1.0.weight"][row, col] = float("nan")
            bad_masks[name] = src / f"p_{name}" / "masks.pt"
            bad_masks[name].parent.mkdir()
            torch.save(bad, bad_masks[name])
        ck16 = src / "r16"
        train_offline(validate(small_nets(cfg)), "cheetah", "mt", "iql", 0, ck16, stop_after_updates=2)
        pol_good = src / "pol" / "policy.pt"
        save_expert_policy(pol_good, SAC(17, 6, SACConfig(hidden=HID)), 17, 6, {})
        pol_mt10 = src / "pol39" / "policy.pt"
        save_expert_policy(pol_mt10, SAC(39, 4, SACConfig(hidden=HID)), 39, 4, {})
        model = build_algo(cfg, "cheetah", "iql", "mt", 17, 6, 2, 0, torch.device("cpu"))
        norms = [{"mean": torch.zeros(17), "std": torch.ones(17)}] * 2

        def case_dir(name):
            r = root / name / "results"
            install_datasets(r)
            return r

        for name in RUNTIME_CASES:
            if name.startswith("dataset_"):
                r = root / name / "results"
                install_datasets(r, name[len("dataset_") :])
                specs[name] = offline_spec(r)
        r = case_dir("masks_other_architecture")
        specs["masks_other_architecture"] = offline_spec(r, method="npf", masks=str(masks16))
        r = case_dir("masks_other_task_order")
        specs["masks_other_task_order"] = offline_spec(r, method="npf", masks=str(masks_order))
        r = case_dir("masks_other_algo")
        specs["masks_other_algo"] = offline_spec(r, method="npf", masks=str(masks_bcq))
        for name, path in bad_masks.items():
            specs[f"masks_{name}"] = offline_spec(case_dir(f"masks_{name}"), method="npf", masks=str(path))
        r = case_dir("masks_not_a_pathways_file")
        specs["masks_not_a_pathways_file"] = offline_spec(r, method="npf", masks=str(pol_good))
        r = case_dir("masks_missing")
        specs["masks_missing"] = offline_spec(r, method="npf", masks=str(r / "pathways" / "masks.pt"))
        r = case_dir("offline_checkpoint_other_architecture")
        run_dir(r).mkdir(parents=True)
        shutil.copy(ck16 / "checkpoint.pt", run_dir(r) / "checkpoint.pt")
        specs["offline_checkpoint_other_architecture"] = offline_spec(r)
        r = case_dir("offline_checkpoint_truncated")
        run_dir(r).mkdir(parents=True)
        data = (ck16 / "checkpoint.pt").read_bytes()
        (run_dir(r) / "checkpoint.pt").write_bytes(data[: len(data) // 2])
        specs["offline_checkpoint_truncated"] = offline_spec(r)

        r = case_dir("expert_checkpoint_pickle_payload")
        spec = specs["expert_checkpoint_pickle_payload"] = expert_spec(r)
        Path(spec["args"][3]).mkdir(parents=True)
        torch.save({"algo": argparse.Namespace(payload="would run on load")}, Path(spec["args"][3]) / "checkpoint.pt")
        r = case_dir("expert_checkpoint_other_architecture")
        spec = specs["expert_checkpoint_other_architecture"] = expert_spec(r)
        Path(spec["args"][3]).mkdir(parents=True)
        ckpt.save(
            {"algo": SAC(17, 6, SACConfig(hidden=[16, 16])).state_dict()}, Path(spec["args"][3]) / "checkpoint.pt"
        )
        specs["expert_policy_wrong_task_dims"] = dataset_spec(case_dir("expert_policy_wrong_task_dims"), pol_mt10)
        r = case_dir("expert_policy_missing")
        specs["expert_policy_missing"] = dataset_spec(r, r / "experts" / "policy.pt")
        specs["expert_policy_not_a_policy"] = dataset_spec(case_dir("expert_policy_not_a_policy"), masks16)
        for s in ("expert_policy_wrong_task_dims", "expert_policy_missing", "expert_policy_not_a_policy"):
            for o in specs[s]["outputs"]:  # collect_dataset's outputs must not pre-exist
                Path(o).unlink()

        r = case_dir("final_other_tasks")
        final = r / "final.pt"
        ckpt.save({"tasks": ["backward", "forward"], "algo": model.state_dict(), "normalizers": norms}, final)
        specs["final_other_tasks"] = evaluate_spec(r, final)
        r = case_dir("final_other_architecture")
        final = r / "final.pt"
        small = build_algo(validate(small_nets(cfg)), "cheetah", "iql", "mt", 17, 6, 2, 0, torch.device("cpu"))
        ckpt.save({"tasks": ["forward", "backward"], "algo": small.state_dict(), "normalizers": norms}, final)
        specs["final_other_architecture"] = evaluate_spec(r, final)
        r = case_dir("final_not_a_final")
        specs["final_not_a_final"] = evaluate_spec(r, ck16 / "checkpoint.pt")

        blocker = root / "results_dir_unwritable" / "a-file"
        blocker.parent.mkdir(parents=True)
        blocker.write_text("not a directory")
        specs["results_dir_unwritable"] = expert_spec(blocker / "results")
        r = case_dir("cuda_forced_without_gpu")
        specs["cuda_forced_without_gpu"] = expert_spec(r, base_config(r, device="cuda"))
        # the same bad dataset once more with NPF_DEBUG=1: now with the traceback
        r = root / "debug" / "results"
        install_datasets(r, "nonfinite_rewards")
        specs["debug_traceback"] = {**offline_spec(r), "env": {"NPF_DEBUG": "1"}}
        assert set(specs) == set(RUNTIME_CASES) | {"debug_traceback"}

        (root / "cases.json").write_text(json.dumps(specs))
        env = {k: v for k, v in os.environ.items() if k != "NPF_DEBUG"}
        p = subprocess.run(
            [PY, str(CORPUS / "run_stage.py"), "--many", str(root / "cases.json"), str(root / "out")],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=REPO,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        yield {
            name: (
                (root / "out" / f"{name}.out").read_text(),
                int((root / "out" / f"{name}.rc").read_text()),
                specs[name],
            )
            for name in specs
        }
    finally:
        mp.undo()


@pytest.mark.parametrize("name", list(RUNTIME_CASES))
def test_stage_rejects(name, runtime_cases):
    if name == "cuda_forced_without_gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out, rc, spec = runtime_cases[name]
    assert rc == 1, f"exit {rc}:\n{out}"
    line = one_error_line(out)
    assert RUNTIME_CASES[name] in line, f"{RUNTIME_CASES[name]!r} not in: {line}"
    assert len(line) < 600
    assert "Traceback" not in out, out
    for o in spec["outputs"]:
        assert not Path(o).exists(), f"{o} exists after a failed job"


def test_npf_debug_shows_traceback(runtime_cases):
    out, rc, _ = runtime_cases["debug_traceback"]
    assert rc == 1 and "Traceback (most recent call last)" in out
    assert one_error_line(out).startswith("error: DatasetError: ") and "holds non-finite values" in out


# ------------------------------------------------------------------ stage scripts through snakemake
SNAKEMAKE_STAGE_CASES = {
    # rule, corpus dataset case, extra config, target (relative to results), expected line
    "pathways_corrupted_dataset": (
        "pathways",
        "corrupted_bytes",
        {},
        "pathways/cheetah/iql/seed0/masks.pt",
        "error: DatasetError: ",
        "forward.npz: cannot read arrays",
    ),
    "experts_cuda_without_gpu": (
        "experts",
        None,
        {"device": "cuda"},
        "experts/cheetah/forward/seed0/policy.pt",
        "error: RuntimeError: ",
        "no CUDA GPU is available",
    ),
}


@pytest.mark.parametrize(
    "name",
    [
        n if n == "pathways_corrupted_dataset" else pytest.param(n, marks=pytest.mark.slow)
        for n in SNAKEMAKE_STAGE_CASES
    ],
)
def test_stage_script_through_snakemake(name, tmp_path, no_slurm_path):
    rule, case, extra, target, prefix, needle = SNAKEMAKE_STAGE_CASES[name]
    if "cuda" in name and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    results = tmp_path / "results"
    install_datasets(results, case)
    cfg = base_config(results, **extra)
    cfg["offline"]["methods"], cfg["offline"]["algos"] = ["npf"], ["iql"]
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    env = {**no_slurm_path, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    r = subprocess.run(
        [
            SNAKEMAKE,
            "--cores",
            "1",
            "--nolock",
            "--configfile",
            str(tmp_path / "c.yaml"),
            "--allowed-rules",
            rule,
            "--",
            str(results / target),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    line = one_error_line(out)
    assert line.startswith(prefix) and needle in line, out
    assert "Traceback" not in out, out
    assert not (results / target).exists()
    log = next((results / "logs" / rule).rglob("*.log")).read_text()
    assert one_error_line(log) == line


# ------------------------------------------------------------------------------------- security
CODE = [
    *sorted((REPO / "npf").rglob("*.py")),
    *sorted((REPO / "workflow").rglob("*.py")),
    *sorted((REPO / "workflow").rglob("*.smk")),
    REPO / "Snakefile",
    *sorted((REPO / "benchmarks").rglob("*.py")),
]


def calls(text: str, func: str) -> list[str]:
    """Source of every call ``func(...)`` (balanced parentheses, may span lines)."""
    out = []
    for m in re.finditer(re.escape(func) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.start() : i])
    return out


def test_every_load_refuses_pickles():
    offenders, n = [], 0
    for path in CODE:
        text = path.read_text()
        for call in calls(text, "torch.load"):
            n += 1
            if not re.search(r"weights_only\s*=\s*True", call):
                offenders.append(f"{path.relative_to(REPO)}: {call}")
        for call in calls(text, "np.load") + calls(text, "numpy.load"):
            n += 1
            if not re.search(r"allow_pickle\s*=\s*False", call):
                offenders.append(f"{path.relative_to(REPO)}: {call}")
        for bad in (
            "pickle.load(",
            "pickle.loads(",
            "yaml.load(",
            "yaml.unsafe_load(",
            "yaml.full_load(",
            "read_pickle(",
            "joblib.load(",
            "dill.load",
        ):
            if bad in text:
                offenders.append(f"{path.relative_to(REPO)}: {bad}")
    assert n >= 2, "no loads found: is the grep still looking at the right files?"
    assert not offenders, "\n".join(offenders)


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def shell_commands(md: str) -> list[str]:
    """Commands in a markdown text: lines of fenced code blocks (with ``\\`` continuations
    joined) and inline code spans (which may wrap over lines)."""
    cmds, block, fence = [], [], False
    for line in md.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            block.append(line)
            if not line.rstrip().endswith("\\"):
                cmds.append(" ".join(x.rstrip(" \\") for x in block))
                block = []
    prose = re.sub(r"```.*?```", "", md, flags=re.S)
    cmds += [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    return cmds


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_documented_mlflow_servers_bind_to_localhost(doc):
    servers = [c for c in shell_commands(doc.read_text()) if re.search(r"\bmlflow\s+(ui|server)\b.*\s--", c)]
    for cmd in servers:
        assert re.search(r"--host[ =]127\.0\.0\.1\b", cmd), f"{doc.name}: {cmd}"
