"""The config key ``compile: auto | on | off`` for an :class:`~npf.algos.base.Algorithm`.

``on`` wraps the algorithm's :attr:`~npf.algos.base.Algorithm.compilable` loss functions in
``torch.compile`` (static shapes: compiled once at the first update, the same graphs every update
after; the optimizer steps, noise draws and Python control flow stay eager) and switches its
optimizers to the fused Adam kernel. The numbers then equal eager ones within float rounding, not
bit for bit (a fused kernel sums in another order). ``off`` is eager with foreach Adam: bit for bit
today's numbers; the separate key ``fused_adam: true`` keeps eager losses but steps with the fused
kernel (the eager side of ``auto``'s measurement then uses it too). ``auto`` decides at the first
update from a measurement on that batch (below).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch

#: ``auto`` keeps the compiled update only when eager ÷ compiled time is at least this
MIN_GAIN = 1.1
#: interleaved eager/compiled updates that ``auto`` times (after one warm-up update of each)
AUTO_ROUNDS = 5


def compile_mode(value) -> str:
    """The config value as a mode: YAML reads a bare ``on`` / ``off`` as True / False."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


def set_mode(algo, mode: str) -> None:
    """Apply ``mode`` (validated by ``Algorithm.set_compile``) to ``algo``."""
    _eager(algo)
    algo.compile_report = {"mode": mode, "compiled": False}
    if mode == "on":
        _compiled(algo)
        algo.compile_report["compiled"] = True
    elif mode == "auto":
        algo.update = _deciding_update(algo)  # instance attribute: the first update decides, then removes it


def optimizers(algo) -> list[torch.optim.Optimizer]:
    return [v for v in vars(algo).values() if isinstance(v, torch.optim.Optimizer)]


def _set_fused(algo, fused: bool) -> None:
    for opt in optimizers(algo):
        for group in opt.param_groups:
            group["fused"], group["foreach"] = (True, None) if fused else (None, True)


def _compiled(algo) -> None:
    wrappers = algo.__dict__.setdefault("_compiled_fns", {})
    for name in algo.compilable:
        if name not in wrappers:  # one wrapper per function for the algorithm's lifetime: no recompiles
            wrappers[name] = torch.compile(getattr(type(algo), name).__get__(algo), dynamic=False)
        setattr(algo, name, wrappers[name])
    _set_fused(algo, True)


def _eager(algo) -> None:
    for name in algo.compilable:
        algo.__dict__.pop(name, None)
    _set_fused(algo, getattr(algo, "fused_adam", False))


def _deciding_update(algo):
    def update(batch):
        del algo.update
        decide(algo, batch)
        return algo.update(batch)

    return update


def _clock(algo):
    if algo.device.type == "cuda":

        def now():
            torch.cuda.synchronize(algo.device)
            return time.perf_counter()

        return now
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


def decide(algo, batch, rounds: int = AUTO_ROUNDS) -> dict:
    """``auto``: compile, then time eager and compiled updates on ``batch`` (interleaved, medians),
    restore the algorithm's state (the timed updates leave no trace: the run continues exactly as
    if they had not happened), and keep the faster. Prints one line and returns the report (also in
    ``algo.compile_report``). A compile that fails counts as no gain."""
    saved = copy.deepcopy(algo.state_dict())
    now, report = _clock(algo), {"mode": "auto", "compiled": False}
    try:
        t0 = time.perf_counter()
        _compiled(algo)
        for _ in range(2):  # both branches of an update that alternates (SAC's delayed actor)
            algo.update(batch)
        report["compile_s"] = time.perf_counter() - t0
        _eager(algo)
        algo.update(batch)
        times = {"eager": [], "compiled": []}
        for _ in range(rounds):
            for kind, switch in (("eager", _eager), ("compiled", _compiled)):
                switch(algo)
                t = now()
                algo.update(batch)
                times[kind].append(now() - t)
        eager, compiled = (statistics.median(times[k]) * 1e3 for k in ("eager", "compiled"))
        report.update(eager_ms=eager, compiled_ms=compiled, compiled=eager >= MIN_GAIN * compiled)
        why = f"eager {eager:.2f} ms, compiled {compiled:.2f} ms per update; compile {report['compile_s']:.0f} s"
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
        why = f"compile failed: {report['error']}"
    _eager(algo)
    algo.load_state_dict(saved)
    if report["compiled"]:
        _compiled(algo)
    algo.compile_report = report
    print(
        f"compile: auto → {'on' if report['compiled'] else 'off'} ({type(algo).__name__}: {why})",
        file=sys.stderr,
        flush=True,
    )
    return report


__all__ = ["AUTO_ROUNDS", "MIN_GAIN", "compile_mode", "decide", "optimizers", "set_mode"]
