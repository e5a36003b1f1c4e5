"""Shared entry for stage scripts: log to the rule's log file, one-line errors, exit codes.

* success: exit 0;
* preempted (SIGTERM/SIGUSR1 → checkpoint written at a safe point): one ``preempted: ...`` line,
  exit 75 (EX_TEMPFAIL) — the job is meant to be retried and resumes from its checkpoint;
* any error: one ``error: <Type>: <message naming the culprit>`` line, exit 1. The traceback is
  printed only with ``NPF_DEBUG=1`` (to the rule's log and stderr).

The line goes to the rule's log and to the job's stderr (what Snakemake / Slurm show).
Each attempt's wall time, status and resolved config are recorded beside the log
(:mod:`npf.provenance`; ``npf publish`` reads them).
"""

import os
import sys
import time
import traceback
from contextlib import contextmanager


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    if sys.stderr is not sys.__stderr__:
        print(line, file=sys.__stderr__, flush=True)


@contextmanager
def stage(snakemake):
    log = snakemake.log[0] if getattr(snakemake, "log", None) else None
    if log:
        os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
        f = open(log, "a", buffering=1)  # noqa: SIM115 (the stage's stdout/stderr until the process ends)
        sys.stdout = f
        sys.stderr = f
    start, status = time.time(), "failed"
    try:
        from npf.config import register_suites

        # custom_suites: a job process never ran npf.config.validate (a bare test harness has no config)
        register_suites(getattr(snakemake, "config", None) or {})
        yield
        status = "finished"
    except Exception as e:
        from npf.preemption import Preempted

        if isinstance(e, Preempted):
            _say(f"preempted: {e}".splitlines()[0])
            _record(snakemake, log, start, "preempted")
            # checkpoint written, tracker closed: skip the interpreter's teardown, which on a loaded
            # node can spend seconds of Slurm's grace before SIGKILL
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                stream.flush()
            os._exit(e.exit_code)
        if os.environ.get("NPF_DEBUG"):
            traceback.print_exc()
            if sys.stderr is not sys.__stderr__:
                traceback.print_exc(file=sys.__stderr__)
        msg = (str(e).strip().splitlines() or [""])[0]
        if not isinstance(e, (ValueError, RuntimeError, FloatingPointError, OSError)) and not os.environ.get(
            "NPF_DEBUG"
        ):
            msg += " (unexpected: NPF_DEBUG=1 shows the traceback)"
        _say(f"error: {type(e).__name__}: {msg}")
        sys.exit(1)
    finally:
        _record(snakemake, log, start, status)


def _record(snakemake, log, start: float, status: str) -> None:
    """One attempt record (npf.provenance); a job of a bare harness without rule or config has none."""
    cfg, rule = getattr(snakemake, "config", None), getattr(snakemake, "rule", None)
    if not (log and rule and cfg and "results_dir" in cfg):
        return
    try:
        from npf.provenance import record_attempt

        record_attempt(log, rule, dict(snakemake.wildcards.items()), cfg, start, status)
    except OSError as e:  # never fail a job for its bookkeeping
        _say(f"warning: attempt record not written ({e})")
