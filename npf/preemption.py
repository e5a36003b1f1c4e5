"""Graceful stop on preemption (SIGTERM) and checkpoints that are never worse than the last one.

Slurm sends SIGTERM when a job is preempted or reaches its time limit (then SIGKILL after the
cluster's ``KillWait``, 30 s by default). A long stage wraps its training loop in
:func:`preemption_guard`; the handler only records the request, the loop keeps going to its
next *safe point* (experts and online: the current env step, mid-episode if need be; offline:
the current update; an evaluation in progress is cut short), writes a checkpoint and raises
:class:`Preempted`. The stage wrapper (``workflow/scripts/_stage.py``) turns that into exit
code :data:`EX_TEMPFAIL` (75, "temporary failure, try again"), and the retried job resumes
from the checkpoint. See docs/fault-tolerance.md.

Repeated signals are ignored (Slurm escalates with SIGKILL after ``KillWait``; a killed job
loses at most one checkpoint interval and resumes from the previous checkpoint).
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from npf.checkpoint import first_non_finite

EX_TEMPFAIL = 75  # sysexits.h: temporary failure; the job should be retried
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # USR1: `sbatch --signal=USR1@120` early warning
EXIT_WITHIN_S = 10.0  # from the signal to the exit, Slurm's KillWait (30 s by default) with room to spare
TRACKER_UNTIL_S = 6.0  # the tracker's share ends this long after the signal (at least 1 s from its start)
DEBUG_SHUTDOWN = "NPF_DEBUG_SHUTDOWN"  # =1: time each step from the signal to the exit (stderr)


class Preempted(Exception):
    """The stage stopped at a safe point after SIGTERM; its checkpoint is written. Retry it."""

    exit_code = EX_TEMPFAIL

    def __init__(self, step: int, checkpoint: str | os.PathLike, signame: str = "SIGTERM"):
        self.step, self.checkpoint, self.signame = int(step), Path(checkpoint), signame
        super().__init__(
            f"{signame} received: stopped at step {self.step}, checkpoint {self.checkpoint} written; "
            f"exit {EX_TEMPFAIL} (run the job again to resume)"
        )


class EvaluationCut(Exception):
    """A stop was asked during an evaluation: it is dropped (the checkpoint comes first) and the
    resume evaluates again, with the same weights and env seeds."""


def stoppable(policy: Callable, guard: PreemptionGuard) -> Callable:
    """``policy`` that raises :class:`EvaluationCut` at its next call once ``guard`` fired."""

    def policy_or_stop(obs):
        if guard.requested:
            raise EvaluationCut
        return policy(obs)

    return policy_or_stop


class PreemptionGuard:
    """``requested`` becomes true once one of ``signals`` arrived (set by the signal handler).

    Use as ``with preemption_guard() as guard:``, or ``guard = preemption_guard().install()`` …
    ``guard.restore()`` in a ``finally``. Outside the main thread Python cannot install signal
    handlers: the guard then never fires (the process keeps the default SIGTERM action)."""

    def __init__(self, signals=SIGNALS) -> None:
        self.signals = tuple(signals)
        self.requested = False
        self.signame: str | None = None
        self.received_at: float | None = None  # time.monotonic() of the signal
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        if not self.requested:
            self.requested = True
            self.signame = signal.Signals(signum).name  # no I/O here: the handler may interrupt a print
            self.received_at = time.monotonic()

    def time_left(self, until_s: float, at_least_s: float = 1.0) -> float:
        """Seconds until ``until_s`` after the signal, at least ``at_least_s`` (``until_s`` if none came)."""
        if self.received_at is None:
            return until_s
        return max(at_least_s, until_s - (time.monotonic() - self.received_at))

    def trace(self, what: str) -> None:
        """With ``NPF_DEBUG_SHUTDOWN=1``: one stderr line, the seconds from the signal to ``what``."""
        if self.received_at is not None and os.environ.get(DEBUG_SHUTDOWN):
            print(
                f"shutdown: {what} {time.monotonic() - self.received_at:.2f} s after {self.signame}",
                file=sys.__stderr__,
                flush=True,
            )

    def install(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous.setdefault(s, signal.signal(s, self._handler))
        return self

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __enter__(self) -> PreemptionGuard:
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


# ------------------------------------------------------------------------------ resumable runs
def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type when empty), at most 300 characters."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


class ResumableRun:
    """What every resumable training stage shares, around its own step: the signal guard, the
    checkpoint interval, the last good checkpoint, the tests' simulated kill (``stop_after``),
    the one-line error for a NaN/inf, and the tracker's final status.

    ::

        run = ResumableRun(name, ckpt_path, every, total, stop_after=...)
        run.resumed(step)                      # when a checkpoint was loaded
        with run.running(tracker, lambda: step):
            while step < total:
                ...                            # the stage's own step
                if at_safe_point and run.due(step):
                    run.save(state, step)
                    if run.stop_here(step):    # raises Preempted after a signal
                        return {"stopped_at": step}
            run.stop_before_final(step)
            ...                                # final outputs
            run.status = "FINISHED"
    """

    def __init__(
        self,
        name: str,
        checkpoint: str | os.PathLike,
        every: int,
        total: int,
        *,
        stop_after: int | None = None,
        unit: str = "step",
        position: str | None = "env step",
    ):
        self.name, self.checkpoint, self.every, self.total = name, Path(checkpoint), int(every), int(total)
        self.stop_after, self.unit, self.position = stop_after, unit, position
        self.guard = preemption_guard()
        self.status = "FAILED"
        self.last_good: int | None = None
        self.next_due = self.every

    def resumed(self, step: int) -> None:
        """The run continues from a checkpoint at ``step``."""
        self.last_good = step
        self.next_due = (step // self.every + 1) * self.every

    def interval_due(self, step: int) -> bool:
        """The checkpoint interval is reached, or the last step."""
        return step >= self.next_due or step >= self.total

    def due(self, step: int) -> bool:
        """A checkpoint is due at this safe point (interval reached, last step, or a stop asked)."""
        return self.interval_due(step) or self.guard.requested

    def save(self, state: dict, step: int, skip: tuple[str, ...] = ()) -> None:
        """Write the checkpoint (never over a good one with NaN/inf: :func:`save_checkpoint`)."""
        save_checkpoint(state, self.checkpoint, step, skip=skip)
        self.last_good = step
        self.next_due = (step // self.every + 1) * self.every

    def stop_here(self, step: int) -> bool:
        """After a checkpoint: raise :class:`Preempted` when a signal asked for a stop; True when the
        simulated kill (``stop_after``) ends the run here."""
        if self.guard.requested and step < self.total:
            self.status = "PREEMPTED"
            raise self.guard.preempted(step, self.checkpoint)
        if self.stop_after is not None and self.stop_after <= step < self.total:
            self.status = "KILLED"
            return True
        return False

    def stop_before_final(self, step: int) -> None:
        """A signal during the last steps: stop at the final checkpoint, before long final work."""
        if self.guard.requested and self.last_good == step:
            self.status = "PREEMPTED"
            raise self.guard.preempted(step, self.checkpoint)

    def fault_line(self, error: BaseException, step: int) -> str:
        msg = one_line(error)
        where = f" ({self.position} {step})" if self.position else ""
        kept = (
            f"{self.checkpoint} ({self.unit} {self.last_good}) kept"
            if self.last_good is not None
            else "no checkpoint yet"
        )
        return f"{self.name}: {msg}{where}; last good checkpoint: {kept}"

    @contextmanager
    def running(self, tracker, step: Callable[[], int], closing: Iterable = ()) -> Iterator[ResumableRun]:
        """Guard installed inside; a FloatingPointError becomes one line naming the run, the step and
        the kept checkpoint; on the way out ``closing`` objects are closed and the tracker's run
        ends with :attr:`status` (the error, if any, as its tag)."""
        self.guard.install()
        try:
            yield self
        except FloatingPointError as e:
            raise FloatingPointError(self.fault_line(e, step())) from None
        finally:
            guard = self.guard
            guard.restore()
            guard.trace(f"checkpoint at {self.unit} {step()} written,")
            for thing in closing:
                thing.close()
                guard.trace(f"{type(thing).__name__} closed")
            tracker.close(self.status, step(), error=sys.exc_info()[1], within_s=guard.time_left(TRACKER_UNTIL_S))
            guard.trace("tracker closed")
            if guard.received_at is not None and os.environ.get(DEBUG_SHUTDOWN):
                atexit.register(guard.trace, "atexit handlers begin")
                faulthandler.dump_traceback_later(2.0, repeat=True, file=sys.__stderr__)
