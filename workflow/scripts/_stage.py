"""Shared entry for stage scripts: log to the rule's log file, one-line errors, exit codes."""
import os
import sys
import traceback
from contextlib import contextmanager


@contextmanager
def stage(snakemake):
    log = snakemake.log[0] if snakemake.log else None
    if log:
        os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
        f = open(log, "a", buffering=1)
        sys.stdout = f
        sys.stderr = f
    try:
        yield
    except (ValueError, RuntimeError, FloatingPointError, OSError) as e:
        if os.environ.get("NPF_DEBUG"):
            traceback.print_exc()
        msg = f"error: {type(e).__name__}: {e}".splitlines()[0]
        print(msg, file=sys.stderr)
        print(msg, file=sys.__stderr__)
        sys.exit(1)
