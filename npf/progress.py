"""Progress for long jobs: a tqdm bar on a terminal, periodic plain lines in a batch log."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str, initial: int = 0, log_every_s: float = 30.0, unit: str = "step"):
        self.total, self.desc, self.n, self.unit = total, desc, initial, unit
        self.log_every_s = log_every_s
        self.start_n, self.t0 = initial, time.monotonic()
        self.last_log = self.t0
        self.postfix: dict[str, float] = {}
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    @property
    def rate(self) -> float:
        dt = time.monotonic() - self.t0
        return (self.n - self.start_n) / dt if dt > 0 else 0.0

    def update(self, k: int, **postfix: float) -> None:
        self.n += k
        self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(k)
            if postfix:
                self.bar.set_postfix({a: f"{b:.4g}" for a, b in self.postfix.items()}, refresh=False)
        elif time.monotonic() - self.last_log >= self.log_every_s:
            self.log_line()

    def log_line(self) -> None:
        self.last_log = time.monotonic()
        extra = " ".join(f"{a}={b:.4g}" for a, b in self.postfix.items())
        print(
            f"[{self.desc}] {self.n}/{self.total} {self.unit}s ({100 * self.n / max(self.total, 1):.1f}%) "
            f"{self.rate:.1f} {self.unit}s/s {extra}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self.log_line()
