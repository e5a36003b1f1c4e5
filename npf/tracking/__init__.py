"""MLflow tracking for pipeline stages: one run per job, resumed by the run id kept in a file,
and training that never waits for (or dies with) the tracking store.

Modules: :mod:`~npf.tracking.store` (where the store is), :mod:`~npf.tracking.spool` (the
write-ahead spool), :mod:`~npf.tracking.sync` (sending it, idempotently),
:mod:`~npf.tracking.tracker` (the job's run), :mod:`~npf.tracking.stage` (a stage's tracker), and
``python -m npf.tracking sync RESULTS_DIR`` (:mod:`~npf.tracking.__main__`).

Write-ahead spool. Everything a job logs (the run's creation/resumption, params, metrics,
tags, artifacts, the final status) is first appended to a local JSONL file next to the run-id
file, then sent to the store in order. When the store is unreachable or fails, the records
simply stay: training continues, and the spool is sent at a later flush (retried with backoff up
to 30 s), at the end of the job, when a later run of the same job starts (a resume), or by
``python -m npf.tracking sync RESULTS_DIR``. See docs/fault-tolerance.md.
"""

from npf.tracking.spool import Spool, run_id_file_of, spool_path
from npf.tracking.stage import config_hash, git_commit, stage_tracker
from npf.tracking.store import tracking_uri
from npf.tracking.sync import Syncer, sync_dir
from npf.tracking.tracker import Tracker, flatten

__all__ = [
    "Spool",
    "Syncer",
    "Tracker",
    "config_hash",
    "flatten",
    "git_commit",
    "run_id_file_of",
    "spool_path",
    "stage_tracker",
    "sync_dir",
    "tracking_uri",
]
