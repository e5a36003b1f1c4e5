"""MLflow tracking for pipeline stages: one run per job, resumed by the run id kept in a file.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<results_dir>/mlflow.db``.
Metrics are buffered and sent with ``log_batch`` (one round trip per flush, not per step).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from npf.data import atomic_write_bytes


def tracking_uri(results_dir: str | os.PathLike = "results", configured: str | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """Commit of the npf checkout (not of wherever the job happens to run)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize first-time creation of a local sqlite store (two jobs migrating one file race)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Tracker:
    """One MLflow run for one pipeline job; ``run_id_file`` makes a re-run continue the same run."""

    def __init__(self, experiment: str, run_name: str, run_id_file: str | os.PathLike,
                 params: dict, tags: dict[str, str], uri: str, flush_every_s: float = 10.0):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with _store_lock(uri):
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.run_id_file = Path(run_id_file)
        run_id = self.run_id_file.read_text().strip() if self.run_id_file.exists() else ""
        self.resumed = False
        if run_id:
            try:
                self.client.get_run(run_id)
                self.resumed = True
            except Exception:
                run_id = ""  # the store was reset: start a new run
        if self.resumed:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            prev = self.client.get_run(run_id).data.tags.get("npf.resumes", "0")
            self.client.set_tag(run_id, "npf.resumes", str(int(prev) + 1))
        else:
            run = self.client.create_run(exp_id, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id
            atomic_write_bytes(self.run_id_file, lambda tmp: Path(tmp).write_text(self.run_id))
            self.log_params(params)
        self._pending: list = []
        self.flush_every_s, self._last_flush = flush_every_s, time.monotonic()

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[:1000], self._pending[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, d: dict, name: str) -> None:
        self.client.log_dict(self.run_id, d, name)

    def finish(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def stage_tracker(cfg: dict, stage: str, suite: str, run_name: str, run_id_file: str | os.PathLike,
                  wildcards: dict[str, Any]) -> Tracker:
    """Tracker for one pipeline job: experiment per suite, full config as params, standard tags."""
    tcfg = cfg.get("tracking", {})
    uri = tracking_uri(cfg.get("results_dir", "results"), tcfg.get("uri"))
    tags = {"npf.stage": stage, "npf.config_hash": config_hash(cfg), "mlflow.source.git.commit": git_commit(),
            **{f"npf.{k}": str(v) for k, v in wildcards.items()}}
    return Tracker(f"{tcfg.get('experiment_prefix', 'npf')}-{suite}", run_name, run_id_file, cfg, tags, uri)
