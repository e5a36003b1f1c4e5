"""Bit-identical guard: tiny runs of the expert, offline and online stages must reproduce the
checkpoints (every tensor value), curves, summaries and MLflow metric histories recorded in
``tests/data/golden_runs.json`` by the code before the online-stage redesign.

Tensors are compared by a SHA-256 of their raw bytes (with dtype and shape), other leaves by
value; MLflow histories by a SHA-256 of each key's ``(step, value)`` list. New keys (a new
summary field, a new MLflow metric) are allowed; every recorded one must be unchanged. Wall-clock numbers
(``rate/…``, ``timing``, ``env_steps_per_s``) are left out.

CPU kernels round differently on another CPU family (MKL and ATen pick AVX-512 or AVX2 code paths by
vendor and instruction set), so the fixture holds one record per machine class
(:func:`machine_class`: architecture, CPU vendor, ATen CPU capability, torch version), each made by
the same code. On a class with no record the guard cannot be evaluated and the test says so
(skip, naming the class). Record a new class from a commit whose results are known good (the test
passes on a recorded class); when a change of results is intended, regenerate, which drops the
other classes' records (they no longer hold and cannot be remade here):

    python tests/test_golden.py --record       # add (or replace) this machine class's record
    python tests/test_golden.py --regenerate   # results changed on purpose: this class's record only
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import sys
from pathlib import Path

import pytest
import torch

from npf import checkpoint as ckpt
from npf.config import validate
from npf.online.stages import train_dapd_variant, train_online
from npf.stages.expert import train_expert
from npf.stages.offline import discover_pathways, train_offline

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "data" / "golden_runs.json"
DATASETS = REPO / "tests" / "bad_inputs" / "datasets" / "good"
#: wall-clock quantities: differ between any two runs
CLOCK_KEYS = ("timing", "timing_s", "rates", "env_steps_per_s", "updates_per_s")
#: checkpoint entries compared (the rest: wall-clock timing, replay chunk names)
ONLINE_CKPT_KEYS = (
    "agent",
    "td",
    "gen",
    "global_rng",
    "step",
    "episodes",
    "update_debt",
    "started",
    "eval_rows",
    "grad_rows",
    "recent",
    "tasks",
    "method",
)


def config(results: Path) -> dict:
    h = [16, 16]
    return validate(
        {
            "results_dir": str(results),
            "device": "cpu",
            "tasks": {"mt10": ["reach", "drawer-close"], "cheetah": ["forward", "backward"]},
            "experts": {
                "seeds": [0],
                "total_steps": 1000,
                "learning_starts": 499,
                "updates_per_step": 0.25,
                "checkpoint_every": 500,
                "eval_episodes": 1,
                "log_every": 50,
                "sac": {"hidden": h, "batch_size": 16},
            },
            "pathways": {"score_batch_size": 16},
            "offline": {
                "methods": ["npf"],
                "algos": ["iql"],
                "updates": 60,
                "batch_size": 16,
                "eval_interval": 30,
                "eval_episodes": 1,
                "checkpoint_every": 20,
                "log_every": 5,
                "iql": {"actor_hidden": h, "critic_hidden": h, "value_hidden": h},
            },
            "online": {
                "total_steps": 450,
                "learning_starts": 150,
                "pretrain_steps": 150,
                "batch_size": 16,
                "eval_interval": 150,
                "eval_episodes": 1,
                "checkpoint_every": 150,
                "log_every": 10,
                "grad_norm_every": 25,
                "dapd": {"M": 2, "interval": 1},
                "sac": {"hidden": h},
                "dapd_ablation": {
                    "total_steps": 2000,
                    "learning_starts": 1000,
                    "batch_size": 16,
                    "eval_interval": 1000,
                    "checkpoint_every": 1000,
                    "return_threshold": -1e9,
                    "sac": {"hidden": h},
                },
            },
            "evaluation": {"episodes": 1, "envs_per_task": 1},
        }
    )


# ------------------------------------------------------------------------------------ fingerprints
def tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return f"{t.dtype}{list(t.shape)}:" + hashlib.sha256(raw).hexdigest()[:16]


def fingerprint(obj):
    """Nested state → the same structure with tensors replaced by digests (JSON-safe)."""
    if isinstance(obj, torch.Tensor):
        return tensor_digest(obj)
    if isinstance(obj, dict):
        return {str(k): fingerprint(v) for k, v in obj.items() if k not in CLOCK_KEYS}
    if isinstance(obj, (list, tuple)):
        return [fingerprint(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if hasattr(obj, "item") and not isinstance(obj, (int, float, str, bool)):  # numpy scalars
        return fingerprint(obj.item())
    return obj


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(fingerprint(obj), sort_keys=True).encode()).hexdigest()[:16]


def digest_tree(obj, opened: tuple[str, ...] = ("agent", "agent.dapd"), path: str = ""):
    """A state's top-level entries (and those under the ``opened`` paths) digested one by one, so
    that a new field of a state shows as an extra entry, not as a changed digest of its parent."""
    if isinstance(obj, dict) and (not path or path in opened):
        return {
            str(k): digest_tree(v, opened, f"{path}.{k}" if path else str(k))
            for k, v in obj.items()
            if k not in CLOCK_KEYS
        }
    return digest(obj)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def mlflow_histories(uri: str) -> dict[str, dict[str, str]]:
    """run name → metric key → digest of its ``(step, value)`` history (``rate/`` keys left out)."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    out = {}
    for e in c.search_experiments():
        for r in c.search_runs([e.experiment_id]):
            out[r.info.run_name] = {
                k: digest(sorted((m.step, m.value) for m in c.get_metric_history(r.info.run_id, k)))
                for k in sorted(r.data.metrics)
                if not k.startswith("rate/")
            }
    return out


def run_all(results: Path) -> dict:
    """The tiny runs; their fingerprints."""
    cfg = config(results)
    out: dict = {}

    d = results / "experts" / "cheetah" / "forward" / "seed0"
    train_expert(cfg, "cheetah", "forward", 0, d)
    out["expert"] = {
        "checkpoint": digest_tree(ckpt.load(d / "checkpoint.pt")),
        "policy": digest(ckpt.load(d / "policy.pt")["actor"]),
        "metrics": fingerprint(json.loads((d / "metrics.json").read_text())),
    }

    data = results / "datasets" / "cheetah"
    data.mkdir(parents=True)
    for f in DATASETS.iterdir():
        (data / f.name).write_bytes(f.read_bytes())
    masks = results / "pathways" / "cheetah" / "iql" / "seed0" / "masks.pt"
    discover_pathways(cfg, "cheetah", "iql", 0, masks)
    d = results / "runs" / "cheetah" / "npf-iql" / "seed0"
    train_offline(cfg, "cheetah", "npf", "iql", 0, d, pathways_path=masks)
    out["offline"] = {
        "masks": digest_tree(ckpt.load(masks)),
        "final": digest_tree(ckpt.load(d / "final.pt")),
        "checkpoint": digest_tree(ckpt.load(d / "checkpoint.pt")),
        "curve": file_digest(d / "metrics.csv"),
    }

    for method in ("sac-npf", "pcgrad"):
        d = results / "online" / "runs" / "mt10" / method / "seed0"
        extra = (
            {"grad_norms_out": d / "tidy_grads.csv", "curves_out": d / "tidy_curves.csv"} if method == "sac-npf" else {}
        )
        summary = train_online(cfg, "mt10", method, 0, d, **extra)
        state = ckpt.load(d / "checkpoint.pt")
        out[f"online/{method}"] = {
            "final": digest_tree(ckpt.load(d / "final.pt")),
            "checkpoint": digest_tree({k: state[k] for k in ONLINE_CKPT_KEYS}),
            "summary": fingerprint(summary),
            "files": {p.name: file_digest(p) for p in sorted(d.glob("*.csv"))},
        }

    d = results / "online" / "dapd" / "forward" / "dapd-M2" / "seed0"
    summary = train_dapd_variant(cfg, "forward", "dapd-M2", 0, d, curves_out=d / "tidy_curves.csv")
    state = ckpt.load(d / "checkpoint.pt")
    out["dapd/dapd-M2"] = {
        "final": digest_tree(ckpt.load(d / "final.pt")),
        "checkpoint": digest_tree({k: state[k] for k in ONLINE_CKPT_KEYS}),
        "summary": fingerprint(summary),
        "files": {p.name: file_digest(p) for p in sorted(d.glob("*.csv"))},
    }
    out["mlflow"] = mlflow_histories(f"sqlite:///{results / 'mlflow.db'}")
    return out


def machine_class() -> str:
    """The class of machines whose CPU kernels round alike: e.g. ``x86_64 GenuineIntel AVX512 torch 2.13.0+cpu``."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    vendors = [line.split(":", 1)[1].strip() for line in lines if line.startswith("vendor_id")]
    vendor = vendors[0] if vendors else platform.processor() or "unknown"
    return f"{platform.machine()} {vendor} {torch.backends.cpu.get_cpu_capability()} torch {torch.__version__}"


def golden_record() -> dict:
    """This machine class's recorded fingerprints; skips (naming the class) where none is recorded."""
    records = json.loads(GOLDEN.read_text())
    cls = machine_class()
    if cls not in records:
        pytest.skip(
            f"no golden record for machine class {cls!r} (recorded: {sorted(records)}); "
            "record it with `python tests/test_golden.py --record` on a known-good commit"
        )
    return records[cls]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    results = tmp_path_factory.mktemp("golden") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{results / 'mlflow.db'}")
        mp.setenv("NPF_MLFLOW_FLUSH_S", "0")
        torch.set_num_threads(1)
        yield run_all(results)


@pytest.mark.parametrize("part", ["expert", "offline", "online/sac-npf", "online/pcgrad", "dapd/dapd-M2", "mlflow"])
def test_results_are_bit_identical_to_the_golden_runs(part, request):
    golden = golden_record()  # before the runs: an unrecorded class skips without running them
    assert_holds(request.getfixturevalue("fresh")[part], golden[part], part)


def test_machine_class_names_architecture_vendor_isa_and_torch():
    arch, *_, isa, _, version = machine_class().split()
    assert (arch, isa, version) == (platform.machine(), torch.backends.cpu.get_cpu_capability(), torch.__version__)
    cpuinfo = Path("/proc/cpuinfo")
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo.read_text(), re.M) if cpuinfo.exists() else None
    if vendor:
        assert f" {vendor[1]} " in machine_class()


def test_unrecorded_machine_class_skips_naming_it(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "machine_class", lambda: "riscv64 Acme RVV torch 9.9")
    with pytest.raises(pytest.skip.Exception, match="'riscv64 Acme RVV torch 9.9'.*--record"):
        golden_record()


def assert_holds(got, golden, where: str) -> None:
    """Every value of ``golden`` is in ``got``, equal; ``got``'s dicts may hold new keys (a new
    summary field or MLflow metric is not a change of results)."""
    if isinstance(golden, dict):
        assert isinstance(got, dict), where
        for k, v in golden.items():
            assert k in got, f"{where}.{k} missing"
            assert_holds(got[k], v, f"{where}.{k}")
    else:
        assert got == golden, where


if __name__ == "__main__" and sys.argv[1:] in (["--record"], ["--regenerate"]):
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{results / 'mlflow.db'}", NPF_MLFLOW_FLUSH_S="0")
        torch.set_num_threads(1)
        records = json.loads(GOLDEN.read_text()) if GOLDEN.exists() and sys.argv[1] == "--record" else {}
        records[machine_class()] = run_all(results)
        GOLDEN.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN.relative_to(REPO)} for {machine_class()!r}")
