"""Durations on the page (``1 h 05 min``) and on its command line (``2h50m``, read back by
:func:`parse_duration`)."""

from __future__ import annotations

import math
import re

NOT_RECORDED = "not recorded"


def fmt_duration(s: float | None) -> str:
    if s is None or math.isnan(s):
        return NOT_RECORDED
    m = int(round(s / 60))
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else (f"{m} min" if m else f"{s:.0f} s")


def fmt_hms(s: float) -> str:
    """Seconds as :func:`parse_duration` reads them back: ``2h50m``, ``95s``."""
    s = int(round(s))
    if s % 60:
        return f"{s}s"
    h, m = divmod(s // 60, 60)
    return (f"{h}h" if h else "") + (f"{m:02d}m" if h and m else f"{m}m" if m else "") or "0s"


def parse_duration(text: str) -> float:
    """``2h50m``, ``170m``, ``95s``, ``1h``, or ``H:MM:SS`` → seconds."""
    t = text.strip()
    m = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2})", t)
    if m:
        return int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
    m = re.fullmatch(r"(?:(\d+)h)?\s*(?:(\d+)m(?:in)?)?\s*(?:(\d+)s)?", t)
    if not t or not m or not any(m.groups()):
        raise ValueError(f"wall time {text!r}: expected e.g. 2h50m, 170m, 95s or 2:50:00")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return h * 3600 + mi * 60 + s
