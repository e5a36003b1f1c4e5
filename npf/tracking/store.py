"""Where the MLflow store is, and the steps every writer to it takes one at a time.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<results_dir>/mlflow.db``.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from npf import layout


def tracking_uri(results_dir: str | os.PathLike = "results", configured: str | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    if uri:
        return uri
    return f"sqlite:///{layout.mlflow_db(Path(results_dir).resolve())}"


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Serialize first-time creation of a local sqlite store (two jobs migrating one file race)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another job created it between the two calls
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id
