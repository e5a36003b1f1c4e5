"""Sending a spool to the store, in order, idempotently.

Idempotent metrics. A (key, step) pair is stored at most once per run: before sending, metrics
at a step not above the highest step the store already holds for that key (or the batch already
sent) are dropped. So metrics re-logged after a resume from an older checkpoint, a batch that
reached the store but whose reply was lost, or a spool sent twice, never duplicate a step; the
training stages are deterministic, so the dropped values equal the stored ones. Steps must
therefore grow per key (log a key at most once per step).

HTTP stores: the MLflow client's retries are shortened (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``,
``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` seconds, unless set in the environment): a dead server costs
one failed request per retry interval, not minutes of backoff; the spool does the retrying.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from npf.data import atomic_write_bytes
from npf.tracking.spool import Spool, run_id_file_of, warn
from npf.tracking.store import experiment_id, store_lock

HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def _permanent(e: BaseException) -> bool:
    """A rejection the store will repeat (bad request), as opposed to an outage worth retrying."""
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException) and "API request to" not in str(e):
        code = e.get_http_status_code()
        return 400 <= code < 500 and code not in (408, 429)
    return False


class _Transient(Exception):
    pass


class Syncer:
    """Sends a spool's records to the store, in order, for the run named in ``run_id_file``."""

    def __init__(self, uri: str, run_id_file: str | os.PathLike, spool: Spool):
        self.uri, self.run_id_file, self.spool = uri, Path(run_id_file), spool
        self.run_id: str | None = (self.run_id_file.read_text().strip() or None) if self.run_id_file.exists() else None
        self.store_hw: dict[str, int] | None = None  # highest step per key in the store (None: ask it)
        self.last_error = ""
        self._client = None

    @property
    def client(self):
        if self._client is None:
            for k, v in HTTP_DEFAULTS.items():
                os.environ.setdefault(k, v)
            from mlflow.tracking import MlflowClient

            with store_lock(self.uri):  # creating a client creates/migrates a sqlite store: one process at a time
                self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def sync(self, deadline: float | None = None) -> int:
        """Send every spooled record. Returns how many are left (0: all sent); raises nothing.
        ``deadline`` (``time.monotonic()``): send no further record after it; the rest stay spooled."""
        with self.spool.lock():
            records = self.spool.read()
            done = 0
            try:
                while done < len(records):
                    if deadline is not None and time.monotonic() >= deadline:
                        raise _Transient("out of time")
                    rec, nxt = records[done], done + 1
                    if rec["op"] == "metrics":  # consecutive metric records go out as one batch
                        rows = list(rec["m"])
                        while nxt < len(records) and records[nxt]["op"] == "metrics":
                            rows += records[nxt]["m"]
                            nxt += 1
                        rec = {"op": "metrics", "m": rows}
                    try:
                        follow_up = self._apply(rec)
                    except _Transient:
                        raise
                    except Exception as e:
                        if not _permanent(e):
                            raise _Transient(_short(e)) from e
                        warn(f"the store rejected a {rec.get('op')} record, dropped ({_short(e)})")
                        follow_up = None
                    if follow_up is not None:  # the run was created: never create it twice, commit now
                        records[done:nxt] = follow_up
                        self.spool.rewrite(records[done:])
                    else:
                        done = nxt
            except _Transient as e:
                self.store_hw = None  # the failed request may or may not have landed
                if done or self.spool.torn:
                    self.spool.rewrite(records[done:])
                self.last_error = str(e)
                return len(records) - done
            self.spool.rewrite([])
            return 0

    # -- one record -----------------------------------------------------------------------
    def _apply(self, rec: dict) -> list[dict] | None:
        """Send one record; returns the records that replace it (run creation), else None."""
        op = rec["op"]
        if op == "open":
            return self._open(rec)
        if self.run_id is None:
            raise _Transient("no run yet")
        c = self.client
        if op == "metrics":
            self._send_metrics(rec["m"])
        elif op == "params":
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in rec["p"].items()]
            for i in range(0, len(items), 100):
                c.log_batch(self.run_id, params=items[i : i + 100])
        elif op == "tags":
            from mlflow.entities import RunTag

            c.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in rec["t"].items()])
        elif op == "artifact":
            if not Path(rec["path"]).exists():
                warn(f"artifact {rec['path']} no longer exists, not uploaded")
            else:
                c.log_artifact(self.run_id, rec["path"], rec.get("artifact_path"))
        elif op == "dict":
            c.log_dict(self.run_id, rec["d"], rec["name"])
        elif op == "end":
            c.set_terminated(self.run_id, status=rec["status"], end_time=rec.get("ts"))
        elif op == "superseded":  # a fresh start replaced a run that could not be continued
            from mlflow.entities import RunTag

            try:
                if c.get_run(rec["old"]).info.status == "RUNNING":
                    c.set_terminated(rec["old"], status="KILLED")
                c.log_batch(rec["old"], tags=[RunTag("npf.restarted_as", self.run_id)])
            except Exception as e:
                if not _permanent(e):
                    raise
        else:
            warn(f"{self.spool.path}: unknown record {op!r} skipped")
        return None

    def _open(self, rec: dict) -> list[dict] | None:
        """Resume the run of ``run_id_file`` (None: done), or create one and return what follows
        (its params, and the marking of a replaced run) as records of their own."""
        c = self.client
        if self.run_id is not None and not rec.get("fresh"):
            try:
                run = c.get_run(self.run_id)
            except Exception as e:
                if not _permanent(e):
                    raise
                run = None  # the store was reset: start a new run
            if run is not None:
                c.update_run(self.run_id, status="RUNNING")
                prev = run.data.tags.get("npf.resumes", "0")
                c.set_tag(self.run_id, "npf.resumes", str(int(prev) + 1))
                self.store_hw = None
                return None
        with store_lock(self.uri):
            exp_id = experiment_id(c, rec["experiment"])
        old = self.run_id
        run = c.create_run(exp_id, run_name=rec["run_name"], tags=rec["tags"], start_time=rec.get("ts"))
        self.run_id = run.info.run_id
        atomic_write_bytes(self.run_id_file, lambda tmp: Path(tmp).write_text(self.run_id))
        self.store_hw = {}
        return [{"op": "params", "p": rec["params"]}] + ([{"op": "superseded", "old": old}] if old else [])

    def _send_metrics(self, rows: list) -> None:
        from mlflow.entities import Metric

        c = self.client
        if self.store_hw is None:
            run = c.get_run(self.run_id)
            self.store_hw = {m.key: int(m.step) for m in run.data._metric_objs}
        hw = dict(self.store_hw)
        keep = []
        for key, value, ts, step in rows:
            if step > hw.get(key, -(2**62)):
                hw[key] = step
                keep.append(Metric(key, float(value), int(ts), int(step)))
        for i in range(0, len(keep), 1000):
            chunk = keep[i : i + 1000]
            c.log_batch(self.run_id, metrics=chunk)
            for m in chunk:
                self.store_hw[m.key] = max(self.store_hw.get(m.key, m.step), m.step)


def sync_dir(root: str | os.PathLike, uri: str) -> tuple[int, int]:
    """Send every spool under ``root``; returns (spools fully sent, spools still pending)."""
    sent = pending = 0
    for sp in sorted(Path(root).rglob("*.spool.jsonl")):
        left = Syncer(uri, run_id_file_of(sp), Spool(sp)).sync()
        print(f"{sp}: {'sent' if not left else f'{left} record(s) still pending'}")
        sent, pending = sent + (not left), pending + bool(left)
    return sent, pending
