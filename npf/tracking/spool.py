"""The write-ahead spool: a local JSONL file of tracking records, next to the run-id file
(``mlflow_run_id.txt`` → ``mlflow_run_id.spool.jsonl``).

Everything a job logs is first appended here, then sent to the store in order
(:class:`~npf.tracking.sync.Syncer`); records the store accepted are removed (the file is deleted
when empty). When the store is unreachable the records simply stay until a later send.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from npf.data import atomic_write_bytes


def spool_path(run_id_file: str | os.PathLike) -> Path:
    p = Path(run_id_file)
    return p.with_name(p.stem + ".spool.jsonl")


def run_id_file_of(spool: str | os.PathLike) -> Path:
    p = Path(spool)
    return p.with_name(p.name[: -len(".spool.jsonl")] + ".txt")


def warn(msg: str) -> None:
    print(f"warning: tracking: {msg}".splitlines()[0], file=sys.stderr, flush=True)


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
                warn(f"{self.path}: dropped an incomplete record (written by a killed process)")
        return out

    def rewrite(self, records: list[dict]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            return
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        atomic_write_bytes(self.path, lambda tmp: Path(tmp).write_text(text))
