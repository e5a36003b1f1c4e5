"""What each pipeline job ran with and how long it took, kept in the results directory.

Every stage job (``workflow/scripts/_stage.py``) records, when it ends, one attempt:

- ``{results_dir}/configs/{hash}.yaml``: the resolved config the job ran with (written once per
  config hash, :func:`npf.tracking.config_hash`, the hash the MLflow runs carry as a tag);
- a line of ``{log}.attempts.jsonl`` beside the rule's log: ``rule``, the job's wildcards,
  ``config_hash``, ``start`` (UTC), ``wall_s`` and ``status`` (``finished``, ``preempted`` or
  ``failed``). A job resumed after a preemption adds a line, so a job's wall time is the sum of
  its attempts; a job killed without a chance to run ``finally`` (SIGKILL, power loss) leaves none.

:func:`load_attempts` and :func:`load_config` read them back (``npf publish`` shows each run's
budget and wall time from them).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from npf import layout

ATTEMPTS_SUFFIX = ".attempts.jsonl"
ATTEMPT_COLUMNS = [
    "rule",
    "suite",
    "method",
    "algo",
    "seed",
    "task",
    "config_hash",
    "start",
    "wall_s",
    "status",
    "file",
]


def attempts_path(log: str | os.PathLike) -> Path:
    log = Path(log)
    return log.with_name(log.stem + ATTEMPTS_SUFFIX)


def save_config(cfg: dict) -> str:
    """Write ``cfg`` under its results directory's ``configs/`` once; returns its hash."""
    from npf.data import atomic_write_bytes
    from npf.tracking import config_hash

    h = config_hash(cfg)
    path = Path(layout.config_record(cfg["results_dir"], h))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(json.loads(json.dumps(cfg, default=str)), sort_keys=True)

        def write(tmp):
            Path(tmp).write_text(text)

        atomic_write_bytes(path, write)
    return h


def record_attempt(log: str | os.PathLike, rule: str, wildcards: dict, cfg: dict, start: float, status: str) -> Path:
    """Append one attempt of a job (``start``: ``time.time()`` when it began) beside its log."""
    h = save_config(cfg)
    rec = {
        "rule": rule,
        **{k: str(v) for k, v in wildcards.items()},
        "config_hash": h,
        "start": datetime.fromtimestamp(start, UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.time() - start, 3),
        "status": status,
    }
    path = attempts_path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return path


def load_attempts(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every attempt recorded under ``results_dir/logs`` (one row each); empty if none."""
    rows = []
    for p in sorted(Path(layout.logs_dir(results_dir)).glob(f"**/*{ATTEMPTS_SUFFIX}")):
        for i, line in enumerate(p.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rec["wall_s"] = float(rec["wall_s"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise ValueError(f"{p}: line {i + 1} is not an attempt record") from None
            rows.append(rec | {"file": str(p)})
    df = pd.DataFrame(rows)
    for c in ATTEMPT_COLUMNS:
        if c not in df:
            df[c] = None
    return df[ATTEMPT_COLUMNS]


def load_config(results_dir: str | os.PathLike, config_hash: str) -> dict | None:
    path = Path(layout.config_record(results_dir, config_hash))
    if not path.exists():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def _param_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def unflatten(params: dict[str, str]) -> dict:
    """MLflow params (:func:`npf.tracking.flatten`ed config, values as strings) → nested config."""
    cfg: dict = {}
    for key, text in sorted(params.items()):
        node = cfg
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = _param_value(text)
    return cfg


def mlflow_attempts(results_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, dict]]:
    """For results directories from before the attempt records: one row per finished MLflow run
    of the local store (``results_dir/mlflow.db``), ``wall_s`` = its end − start time (an upper
    bound when it was resumed: column ``resumed``), and the configs rebuilt from its params."""
    db = Path(layout.mlflow_db(results_dir))
    empty = pd.DataFrame(columns=[*ATTEMPT_COLUMNS, "resumed"])
    if not db.exists():
        return empty, {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db.resolve()}")
    rows, configs = [], {}
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=50_000):
            tags, info = run.data.tags, run.info
            if "npf.stage" not in tags or info.end_time is None:
                continue
            h = tags.get("npf.config_hash", "")
            if h and h not in configs:
                configs[h] = unflatten(run.data.params)
            rows.append(
                {
                    "rule": tags["npf.stage"],
                    **{k: tags.get(f"npf.{k}") for k in ("suite", "method", "algo", "seed", "task")},
                    "config_hash": h or None,
                    "start": None,
                    "wall_s": (info.end_time - info.start_time) / 1000,
                    "status": "finished",
                    "file": str(db),
                    "resumed": int(tags.get("npf.resumes", "0")) > 0,
                }
            )
    return (pd.DataFrame(rows, columns=empty.columns) if rows else empty), configs
