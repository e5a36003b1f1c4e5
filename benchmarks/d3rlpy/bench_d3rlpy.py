"""IQL and BCQ ms/update of npf ÷ d3rlpy at equal settings (issue 16's peer rows), measured in one run.

d3rlpy 2.8.1 pins gymnasium 1.0.0 and cannot share this project's environment (gymnasium 1.4.0
for Meta-World), so it lives in a venv of its own (default ``.venv/d3rlpy``; ``--setup`` makes it:
``python -m venv``, then pip installs requirements.txt beside this file: d3rlpy and the same
CPU-only ``torch==2.13.0`` as this project).

Two worker processes stay up for the whole run: time_npf.py in this interpreter, time_d3rlpy.py in
the d3rlpy venv; each builds every row once. The driver then interleaves them: for every round and
row, npf's K updates, then d3rlpy's K updates (process CPU time, one torch thread, batch 256; see
protocol.py); after the warm-up rounds, medians over rounds. A ratio below 1 means npf is faster.
The load average is printed before and after: the ratio, not the absolute times, is what carries
over to another machine state.

Run: ``python benchmarks/d3rlpy/bench_d3rlpy.py [--setup] [--venv DIR] [--rows iql-256 ...]
[--rounds 7] [--warmup 2]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from common import ROOT, cpu_model, git_commit, shown  # noqa: E402
from protocol import ROWS, rows_named  # noqa: E402

SIDES = ("npf", "d3rlpy")
DEFAULT_VENV = ROOT / ".venv" / "d3rlpy"
REQUIREMENTS = HERE / "requirements.txt"


class WorkerError(RuntimeError):
    pass


def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def make_venv(path: Path) -> None:
    """A fresh venv at ``path`` with requirements.txt installed from the package registry."""
    print(f"bench_d3rlpy: creating the d3rlpy venv in {path}", file=sys.stderr, flush=True)
    venv.create(path, with_pip=True, clear=True)
    subprocess.run([str(venv_python(path)), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True)


def parse_reply(line: str, row: str, who: str) -> float:
    """ms/update from a worker's reply to ``ROW K``; ValueError naming the worker when it is not one."""
    try:
        reply = json.loads(line)
        ms = float(reply["ms"])
        ok = reply["row"] == row and math.isfinite(ms) and ms > 0
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"bench_d3rlpy: the {who} worker answered {line.strip()!r} to row {row!r}")
    return ms


class Worker:
    """One timing process: started, read until ready, then asked for rows; its stderr is ours."""

    def __init__(self, who: str, cmd: list[str]):
        self.who = who
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self._line()
        try:
            self.info = json.loads(line)
        except ValueError:
            self.info = {}
        if self.info.get("ready") is not True:
            self.close()
            raise WorkerError(f"bench_d3rlpy: the {who} worker started with {line.strip()!r} instead of its ready line")

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(
                f"bench_d3rlpy: the {self.who} worker exited (code {self.proc.wait()}); its error is above"
            )
        return line

    def time(self, row: str, k: int) -> float:
        self.proc.stdin.write(f"{row} {k}\n")
        self.proc.stdin.flush()
        return parse_reply(self._line(), row, self.who)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def measure(workers: dict, rows: dict, rounds: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """{side: {row: [ms/update of each round]}}: per round and row, the sides in the order of ``workers``."""
    times = {side: {row: [] for row in rows} for side in workers}
    for r in range(warmup + rounds):
        for name, row in rows.items():
            for side, worker in workers.items():
                ms = worker.time(name, row.updates)
                if r >= warmup:
                    times[side][name].append(ms)
        print(f"bench_d3rlpy: round {r + 1}/{warmup + rounds} done", file=sys.stderr, flush=True)
    return times


@dataclass
class Result:
    label: str
    npf: tuple[float, float]  # (median, best) ms/update
    d3rlpy: tuple[float, float]

    @property
    def ratio(self) -> float:
        return self.npf[0] / self.d3rlpy[0]


def combine(times: dict[str, dict[str, list[float]]], rows: dict) -> list[Result]:
    """One Result per row: medians and minima of both sides' rounds."""

    def stats(v):
        return statistics.median(v), min(v)

    return [Result(row.label, stats(times["npf"][name]), stats(times["d3rlpy"][name])) for name, row in rows.items()]


def table(results: list[Result]) -> list[str]:
    lines = ["| row | npf ms/update | d3rlpy ms/update | npf ÷ d3rlpy |", "|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.label} | {r.npf[0]:.1f} ({r.npf[1]:.1f}) | {r.d3rlpy[0]:.1f} ({r.d3rlpy[1]:.1f}) | {r.ratio:.2f} |"
        )
    return lines


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} logical CPUs"


def versions(info: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", action="store_true", help="create the d3rlpy venv first (when it is not there)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the d3rlpy venv (default .venv/d3rlpy)")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), help=f"rows to measure (default all: {', '.join(ROWS)})")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--fused-adam", action="store_true", help="npf's optimizers with fused_adam: true")
    args = ap.parse_args(argv)
    try:
        rows = rows_named(args.rows)
    except ValueError as e:
        print(f"bench_d3rlpy: {e}", file=sys.stderr)
        return 2
    if args.rounds < 1 or args.warmup < 0:
        print(
            f"bench_d3rlpy: --rounds must be ≥ 1 and --warmup ≥ 0 (got {args.rounds}, {args.warmup})", file=sys.stderr
        )
        return 2
    if args.setup and not venv_python(args.venv).exists():
        make_venv(args.venv)
    if not venv_python(args.venv).exists():
        print(
            f"bench_d3rlpy: no d3rlpy venv at {args.venv} (create it with: python {Path(__file__).name} --setup)",
            file=sys.stderr,
        )
        return 2
    names = list(rows)
    started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
    load_before = load()
    workers = {}
    try:
        fused = ["--fused-adam"] if args.fused_adam else []
        workers["npf"] = Worker("npf", [sys.executable, str(HERE / "time_npf.py"), *fused, *names])
        workers["d3rlpy"] = Worker("d3rlpy", [str(venv_python(args.venv)), str(HERE / "time_d3rlpy.py"), *names])
        times = measure(workers, rows, args.rounds, args.warmup)
    except (WorkerError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    finally:
        for w in workers.values():
            w.close()
    print(f"# npf ÷ d3rlpy, IQL and BCQ updates ({args.rounds} interleaved rounds after {args.warmup} warm-up)\n")
    print(f"- machine: CPU {cpu_model()}; {workers['npf'].info['threads']} torch thread per process")
    print(f"- date: {started}; git commit: {git_commit()}")
    print(f"- npf: {versions(workers['npf'].info)}; optimizers: {workers['npf'].info.get('adam', 'foreach')} Adam")
    print(f"- d3rlpy venv: {versions(workers['d3rlpy'].info)}")
    print(f"- load: {load_before} at the start, {load()} at the end")
    command = " ".join(
        ["python", f"benchmarks/d3rlpy/{Path(__file__).name}", *map(shown, sys.argv[1:] if argv is None else argv)]
    )
    print(f"- command: `{command}`\n")
    print("\n".join(table(combine(times, rows))))
    print("\nCells: median (best) ms/update over the rounds, process CPU time; ratio of medians.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
