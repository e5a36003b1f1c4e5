"""One MLflow run for one pipeline job, that training never waits for (or dies with).

Every call appends to the job's spool (:mod:`~npf.tracking.spool`); metrics are batched and the
spool is sent (:mod:`~npf.tracking.sync`) every ``NPF_MLFLOW_FLUSH_S`` seconds (default 10), at
the end of the job, and when a later run of the same job starts. When the store fails, training
goes on and the sends are retried with backoff up to 30 s.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from npf.tracking.spool import Spool, spool_path, warn
from npf.tracking.sync import Syncer

RETRY_MAX_S = 30.0


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Tracker:
    """One MLflow run for one pipeline job; ``run_id_file`` makes a re-run continue the same run.

    ``fresh=True``: the job starts from scratch (no checkpoint), so a new run is created even if
    ``run_id_file`` names one (the old one is marked KILLED, tag ``npf.restarted_as``).
    """

    def __init__(
        self,
        experiment: str,
        run_name: str,
        run_id_file: str | os.PathLike,
        params: dict,
        tags: dict[str, str],
        uri: str,
        flush_every_s: float | None = None,
        fresh: bool = False,
    ):
        self.uri = uri
        self.run_id_file = Path(run_id_file)
        self.spool = Spool(spool_path(self.run_id_file))
        self._sync = Syncer(uri, self.run_id_file, self.spool)
        self.resumed = self._sync.run_id is not None and not fresh
        if flush_every_s is None:
            flush_every_s = float(os.environ.get("NPF_MLFLOW_FLUSH_S", "10"))
        self.flush_every_s, self._last_flush = flush_every_s, time.monotonic()
        self._pending: list[list] = []
        self._records: list[dict] = []
        self._offline_since: float | None = None
        self._next_try, self._backoff = 0.0, 1.0
        params = {k: str(v)[:6000] for k, v in flatten(params).items()}
        self._records.append(
            {
                "op": "open",
                "fresh": bool(fresh),
                "experiment": experiment,
                "run_name": run_name,
                "tags": {k: str(v) for k, v in tags.items()},
                "params": params,
                "ts": int(time.time() * 1000),
            }
        )
        self.flush(force=True)

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None while the store has been unreachable since the job started)."""
        return self._sync.run_id

    @property
    def client(self):
        return self._sync.client

    @property
    def online(self) -> bool:
        return self._offline_since is None

    def log_params(self, params: dict) -> None:
        self._records.append({"op": "params", "p": {k: str(v)[:6000] for k, v in flatten(params).items()}})
        self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._pending += [[k, float(v), ts, int(step)] for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Spool what was logged, then send the spool (unless the store failed moments ago)."""
        self._spool_pending()
        if not force and time.monotonic() < self._next_try:
            return
        if not self.spool.path.exists():
            return
        left = self._sync.sync()
        if left:
            self._next_try = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)
            if self._offline_since is None:
                self._offline_since = time.monotonic()
                warn(
                    f"store {self.uri} unreachable ({getattr(self._sync, 'last_error', '?')}); "
                    f"spooling to {self.spool.path}, retrying"
                )
        else:
            if self._offline_since is not None:
                warn(f"store reachable again after {time.monotonic() - self._offline_since:.0f} s; spool sent")
            self._offline_since, self._backoff, self._next_try = None, 1.0, 0.0

    def _spool_pending(self) -> None:
        if self._pending:
            self._records.append({"op": "metrics", "m": self._pending})
            self._pending = []
        with self.spool.lock():
            self.spool.append(self._records)
        self._records = []
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        self._records.append({"op": "tags", "t": {k: str(v) for k, v in tags.items()}})
        self.flush()

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._records.append({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})
        self.flush()

    def log_dict(self, d: dict, name: str) -> None:
        self._records.append({"op": "dict", "d": d, "name": name})
        self.flush()

    def finish(self, status: str = "FINISHED") -> None:
        """End the run (FINISHED, FAILED or KILLED). Records the store did not take stay spooled."""
        self._records.append({"op": "end", "status": status, "ts": int(time.time() * 1000)})
        self.flush(force=True)
        if self.spool.path.exists():
            n = len(self.spool.read())
            warn(
                f"store {self.uri} still unreachable: {n} record(s) kept in {self.spool.path}; they are sent "
                f"when this job runs again or by `python -m npf.tracking sync <results_dir>`"
            )

    def send_within(self, seconds: float) -> int:
        """Spool everything logged, then send for at most ``seconds``: between records the send
        stops at the deadline, and a request still hanging then (a dead HTTP server) is left to a
        daemon thread that dies with the process. Returns the records left in the spool (-1:
        unknown, the send was cut mid-request)."""
        self._spool_pending()
        left = [-1]
        deadline = time.monotonic() + max(seconds, 0.0)
        sender = threading.Thread(
            target=lambda: left.__setitem__(0, self._sync.sync(deadline)), name="npf-tracking-send", daemon=True
        )
        sender.start()
        sender.join(max(seconds, 0.0) + 0.5)
        if left[0]:
            warn(
                f"{'some' if left[0] < 0 else left[0]} record(s) left in {self.spool.path} after {seconds:.1f} s; "
                "they are sent when this job runs again or by `python -m npf.tracking sync <results_dir>`"
            )
        return left[0]

    def close(
        self, status: str, step: int | None = None, error: BaseException | None = None, within_s: float = 5.0
    ) -> None:
        """End a stage's run from its ``finally`` block.

        ``FINISHED`` / ``FAILED``: terminate (a failure's one-line error becomes tag ``npf.error``).
        ``PREEMPTED``: stopped at a checkpoint on SIGTERM; status KILLED and tag
        ``npf.preempted_at_step`` until the job resumes the run. The store gets ``within_s``
        seconds (Slurm's SIGKILL follows): what it did not take by then stays in the spool and is
        sent when the job resumes. ``KILLED`` (the tests' simulated kill): only flush, the run
        stays RUNNING as after a real kill."""
        if status == "KILLED":
            self.flush(force=True)
            return
        if status == "PREEMPTED":
            self._spool_pending()  # the metrics first, then the tag and the status
            self._records.append({"op": "tags", "t": {"npf.preempted_at_step": str(step)}})
            self._records.append({"op": "end", "status": "KILLED", "ts": int(time.time() * 1000)})
            self.send_within(within_s)
            return
        if status != "FINISHED" and error is not None:
            line = (str(error).strip().splitlines() or [""])[0]
            self.set_tags({"npf.error": f"{type(error).__name__}: {line}"[:5000]})
        self.finish(status)
