"""How the report names suites and runs, and the order it lists them in (tables, figures and the page)."""

from __future__ import annotations

from collections.abc import Iterable

OFFLINE_ALGOS = ("bcq", "iql")
OFFLINE_METHODS = ("npf", "mt", "mhmt")
ONLINE_METHODS = ("sac-npf", "mt-sac", "mh-sac", "pcgrad")
METHOD_LABELS = {
    "npf": "NPF",
    "mt": "MT",
    "mhmt": "MHMT",
    "sac-npf": "SAC+NPF",
    "mt-sac": "MT-SAC",
    "mh-sac": "MH-SAC",
    "pcgrad": "PCGrad",
}
SUITE_NAMES = {
    "cheetah": "HalfCheetah",
    "cheetah_velocity": "HalfCheetah constrained velocity",
    "quadruped": "Quadruped",
    "mt10": "Meta-World MT10",
}
PAPER = "paper, full task set"  # the published numbers are for each suite's full task set
SUITE_ORDER = ("cheetah", "cheetah_velocity", "quadruped", "mt10")
MISSING = "—"


def suite_size(suite: str) -> int | None:
    """Number of tasks in the suite's full task set (None for a suite not registered here)."""
    from npf.envs import SUITES  # lazy: gymnasium and the env modules

    return len(SUITES[suite]) if suite in SUITES else None


def suite_label(suite: str, tasks: Iterable[str] | int | None = None) -> str:
    """``HalfCheetah (5 tasks)``, ``HalfCheetah (2 of 5 tasks: forward, jump)``: the task count (and,
    for a small subset, the names) of the run, not the paper's."""
    name = SUITE_NAMES.get(suite, suite)
    if tasks is None:
        return name
    names = None if isinstance(tasks, int) else list(dict.fromkeys(tasks))
    n = tasks if names is None else len(names)
    full = suite_size(suite)
    unit = "task" if n == 1 else "tasks"
    if full is None or n == full:
        return f"{name} ({n} {unit})"
    listed = f": {', '.join(names)}" if names is not None and n <= 3 else ""
    return f"{name} ({n} of {full} tasks{listed})"


def run_label(method: str, algo: str) -> str:
    """Display name of a run: ``NPF-BCQ``; online methods by their own name (``SAC+NPF``)."""
    name = METHOD_LABELS.get(method, method)
    return name if algo == "sac" or method in ONLINE_METHODS else f"{name}-{algo.upper()}"


def preferred_first(values: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """The distinct ``values``: those in ``preferred`` first, in its order, then the rest sorted."""
    values = list(dict.fromkeys(values))
    pref = [v for v in preferred if v in values]
    return pref + sorted(v for v in values if v not in pref)
