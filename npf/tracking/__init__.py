"""MLflow tracking for pipeline stages: one run per job, resumed by the run id kept in a file,
and training that never waits for (or dies with) the tracking store.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<results_dir>/mlflow.db``.

Write-ahead spool. Everything a job logs (the run's creation/resumption, params, metrics,
tags, artifacts, the final status) is first appended to a local JSONL file next to the run-id
file (``mlflow_run_id.txt`` → ``mlflow_run_id.spool.jsonl``), then sent to the store in order;
records the store accepted are removed (the file is deleted when empty). When the store is
unreachable or fails, the records simply stay: training continues, and the spool is sent at a
later flush (retried with backoff up to 30 s), at the end of the job, when a later run of the
same job starts (a resume), or by ``python -m npf.tracking sync RESULTS_DIR``.

Idempotent metrics. A (key, step) pair is stored at most once per run: before sending, metrics
at a step not above the highest step the store already holds for that key (or the batch already
sent) are dropped. So metrics re-logged after a resume from an older checkpoint, a batch that
reached the store but whose reply was lost, or a spool sent twice, never duplicate a step; the
training stages are deterministic, so the dropped values equal the stored ones. Steps must
therefore grow per key (log a key at most once per step).

HTTP stores: the MLflow client's retries are shortened (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``,
``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` seconds, unless set in the environment): a dead server costs
one failed request per retry interval, not minutes of backoff; the spool does the retrying.
``NPF_MLFLOW_FLUSH_S`` sets the flush interval (default 10 s). See docs/fault-tolerance.md.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from npf.data import atomic_write_bytes

HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RETRY_MAX_S = 30.0


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
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def spool_path(run_id_file: str | os.PathLike) -> Path:
    p = Path(run_id_file)
    return p.with_name(p.stem + ".spool.jsonl")


def run_id_file_of(spool: str | os.PathLike) -> Path:
    p = Path(spool)
    return p.with_name(p.name[: -len(".spool.jsonl")] + ".txt")


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
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


def _warn(msg: str) -> None:
    print(f"warning: tracking: {msg}".splitlines()[0], file=sys.stderr, flush=True)


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


def _experiment_id(client, name: str) -> str:
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


class Spool:
    """Append-only JSONL file of tracking records, guarded by a lock file (job vs. ``sync`` CLI)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_path = self.path.with_name("." + self.path.name + ".lock")
        self.torn = False

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with open(self.path, "a") as f:
            if f.tell() and not self._ends_with_newline():
                f.write("\n")  # a torn last line (killed mid-write) stays on its own line
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def read(self) -> list[dict]:
        """The records; a torn line (a process killed while appending) is dropped with a warning:
        it was never sent, and the job regenerates it when it resumes from its checkpoint."""
        self.torn = False
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                self.torn = True
                _warn(f"{self.path}: dropped an incomplete record (written by a killed process)")
        return out

    def rewrite(self, records: list[dict]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            return
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        atomic_write_bytes(self.path, lambda tmp: Path(tmp).write_text(text))


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

            with _store_lock(self.uri):  # creating a client creates/migrates a sqlite store: one process at a time
                self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def sync(self) -> int:
        """Send every spooled record. Returns how many are left (0: all sent); raises nothing."""
        with self.spool.lock():
            records = self.spool.read()
            done = 0
            try:
                while done < len(records):
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
                        _warn(f"the store rejected a {rec.get('op')} record, dropped ({_short(e)})")
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
                _warn(f"artifact {rec['path']} no longer exists, not uploaded")
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
            _warn(f"{self.spool.path}: unknown record {op!r} skipped")
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
        with _store_lock(self.uri):
            exp_id = _experiment_id(c, rec["experiment"])
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
        if self._pending:
            self._records.append({"op": "metrics", "m": self._pending})
            self._pending = []
        with self.spool.lock():
            self.spool.append(self._records)
        self._records = []
        self._last_flush = time.monotonic()
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
                _warn(
                    f"store {self.uri} unreachable ({getattr(self._sync, 'last_error', '?')}); "
                    f"spooling to {self.spool.path}, retrying"
                )
        else:
            if self._offline_since is not None:
                _warn(f"store reachable again after {time.monotonic() - self._offline_since:.0f} s; spool sent")
            self._offline_since, self._backoff, self._next_try = None, 1.0, 0.0

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
            _warn(
                f"store {self.uri} still unreachable: {n} record(s) kept in {self.spool.path}; they are sent "
                f"when this job runs again or by `python -m npf.tracking sync <results_dir>`"
            )

    def close(self, status: str, step: int | None = None, error: BaseException | None = None) -> None:
        """End a stage's run from its ``finally`` block.

        ``FINISHED`` / ``FAILED``: terminate (a failure's one-line error becomes tag ``npf.error``).
        ``PREEMPTED``: stopped at a checkpoint on SIGTERM; status KILLED and tag
        ``npf.preempted_at_step`` until the job resumes the run. ``KILLED`` (the tests'
        simulated kill): only flush, the run stays RUNNING as after a real kill."""
        if status == "KILLED":
            self.flush(force=True)
            return
        if status == "PREEMPTED":
            self.set_tags({"npf.preempted_at_step": step})
            self.finish("KILLED")
            return
        if status != "FINISHED" and error is not None:
            line = (str(error).strip().splitlines() or [""])[0]
            self.set_tags({"npf.error": f"{type(error).__name__}: {line}"[:5000]})
        self.finish(status)


def stage_tracker(
    cfg: dict,
    stage: str,
    suite: str,
    run_name: str,
    run_id_file: str | os.PathLike,
    wildcards: dict[str, Any],
    fresh: bool = False,
) -> Tracker:
    """Tracker for one pipeline job: experiment per suite, full config as params, standard tags."""
    tcfg = cfg.get("tracking", {})
    uri = tracking_uri(cfg.get("results_dir", "results"), tcfg.get("uri"))
    tags = {
        "npf.stage": stage,
        "npf.config_hash": config_hash(cfg),
        "mlflow.source.git.commit": git_commit(),
        **{f"npf.{k}": str(v) for k, v in wildcards.items()},
    }
    return Tracker(
        f"{tcfg.get('experiment_prefix', 'npf')}-{suite}", run_name, run_id_file, cfg, tags, uri, fresh=fresh
    )


def sync_dir(root: str | os.PathLike, uri: str) -> tuple[int, int]:
    """Send every spool under ``root``; returns (spools fully sent, spools still pending)."""
    sent = pending = 0
    for sp in sorted(Path(root).rglob("*.spool.jsonl")):
        left = Syncer(uri, run_id_file_of(sp), Spool(sp)).sync()
        print(f"{sp}: {'sent' if not left else f'{left} record(s) still pending'}")
        sent, pending = sent + (not left), pending + bool(left)
    return sent, pending


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m npf.tracking", description="send spooled MLflow records (kept while the store was down)"
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sync", help="send every *.spool.jsonl under RESULTS_DIR")
    s.add_argument("results_dir", nargs="?", default="results")
    s.add_argument("--uri", help="tracking URI (default: MLFLOW_TRACKING_URI, else sqlite under RESULTS_DIR)")
    args = p.parse_args(argv)
    _, pending = sync_dir(args.results_dir, args.uri or tracking_uri(args.results_dir))
    return 1 if pending else 0


if __name__ == "__main__":
    sys.exit(main())
