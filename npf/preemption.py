"""Graceful stop on preemption (SIGTERM) and checkpoints that are never worse than the last one.

Slurm sends SIGTERM when a job is preempted or reaches its time limit (then SIGKILL after the
cluster's ``KillWait``, 30 s by default). A long stage wraps its training loop in
:func:`preemption_guard`; the handler only records the request, the loop keeps going to its
next *safe point* (experts: the next episode boundary, offline: the current update), writes a
checkpoint and raises :class:`Preempted`. The stage wrapper (``workflow/scripts/_stage.py``)
turns that into exit code :data:`EX_TEMPFAIL` (75, "temporary failure, try again"), and the
retried job resumes from the checkpoint. See docs/fault-tolerance.md.

Repeated signals are ignored (Slurm escalates with SIGKILL after ``KillWait``; a killed job
loses at most one checkpoint interval and resumes from the previous checkpoint).
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path


from npf.checkpoint import first_non_finite

EX_TEMPFAIL = 75  # sysexits.h: temporary failure; the job should be retried
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # USR1: `sbatch --signal=USR1@120` early warning


class Preempted(Exception):
    """The stage stopped at a safe point after SIGTERM; its checkpoint is written. Retry it."""

    exit_code = EX_TEMPFAIL

    def __init__(self, step: int, checkpoint: str | os.PathLike, signame: str = "SIGTERM"):
        self.step, self.checkpoint, self.signame = int(step), Path(checkpoint), signame
        super().__init__(f"{signame} received: stopped at step {self.step}, checkpoint {self.checkpoint} written; "
                         f"exit {EX_TEMPFAIL} (run the job again to resume)")


class PreemptionGuard:
    """``requested`` becomes true once one of ``signals`` arrived (set by the signal handler).

    Use as ``with preemption_guard() as guard:``, or ``guard = preemption_guard().install()`` …
    ``guard.restore()`` in a ``finally``. Outside the main thread Python cannot install signal
    handlers: the guard then never fires (the process keeps the default SIGTERM action)."""

    def __init__(self, signals=SIGNALS) -> None:
        self.signals = tuple(signals)
        self.requested = False
        self.signame: str | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if not self.requested:
            self.requested = True
            self.signame = signal.Signals(signum).name  # no I/O here: the handler may interrupt a print

    def install(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous.setdefault(s, signal.signal(s, self._handler))
        return self

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __enter__(self) -> "PreemptionGuard":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()

    def request(self, signame: str = "SIGTERM") -> None:
        """Ask for a stop without a signal (tests, or code that learns of a preemption otherwise)."""
        self.requested, self.signame = True, signame

    def preempted(self, step: int, checkpoint: str | os.PathLike) -> Preempted:
        return Preempted(step, checkpoint, self.signame or "SIGTERM")


def preemption_guard(signals=SIGNALS) -> PreemptionGuard:
    """A guard for ``signals`` (SIGTERM, SIGUSR1); installed by ``with`` or ``.install()``."""
    return PreemptionGuard(signals)


# ------------------------------------------------------------------------------ safe checkpoints
def save_checkpoint(state: dict, path: str | os.PathLike, step: int, skip: tuple[str, ...] = ()) -> None:
    """Write ``state`` atomically, unless a network/optimizer tensor is NaN/inf: then raise
    FloatingPointError naming the tensor, and the previous (good) checkpoint stays in place.

    ``skip``: top-level keys not checked (e.g. a replay buffer, which may legitimately hold inf)."""
    from npf import checkpoint as ckpt

    bad = first_non_finite({k: v for k, v in state.items() if k not in skip})
    if bad:
        path = Path(path)
        kept = f"{path} from an earlier step kept" if path.exists() else "no checkpoint written"
        raise FloatingPointError(f"non-finite values in {bad} at step {step}; checkpoint not written ({kept})")
    ckpt.save(state, path)
