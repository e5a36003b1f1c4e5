"""The verdict of a run and of a table row against the paper's numbers (:data:`VERDICT_RULE`)."""

from __future__ import annotations

from npf import paper_numbers as paper
from npf import stats

NOT_MEASURED = "not measured yet"

VERDICT_RULE = (
    "Verdict of a run: **reproduced** when our mean ± std and the paper's mean ± std overlap "
    "(|ours − paper| ≤ std_ours + std_paper), else **not reproduced** (Δ = ours − paper). Verdict of a row "
    "(suite): **reproduced** when every measured run with a paper number is; else **same ordering as the "
    "paper** when at least two such runs are measured and our means rank them as the paper's do, each "
    "pair apart by more than the sum of its two seed stds (an ordering inside the seeds' spread is no "
    "evidence); else **not reproduced**."
)


def _seed_std(sm: stats.Summary) -> float:
    return sm.std if sm.seeds > 1 else 0.0


def run_verdict(sm: stats.Summary | None, p: paper.PaperNumber | None) -> str:
    if sm is None:
        return NOT_MEASURED
    if p is None:
        return "no paper number"
    d = sm.mean - p.mean
    if abs(d) <= _seed_std(sm) + (p.std or 0.0):
        return "reproduced"
    return f"not reproduced (Δ {d:+.1f})"


def _ranked_as_paper(a: tuple[stats.Summary, paper.PaperNumber], b: tuple[stats.Summary, paper.PaperNumber]) -> bool:
    """Our means rank runs a and b as the paper's do, apart by more than their seeds' spread."""
    ours = a[0].mean - b[0].mean
    return ours * (a[1].mean - b[1].mean) > 0 and abs(ours) > _seed_std(a[0]) + _seed_std(b[0])


def row_verdict(measured: dict[str, tuple[stats.Summary, paper.PaperNumber]]) -> str:
    """``measured``: run label → (our summary, paper number) for the runs of a row that have both."""
    if not measured:
        return NOT_MEASURED
    verdicts = {k: run_verdict(sm, p) for k, (sm, p) in measured.items()}
    if all(v == "reproduced" for v in verdicts.values()):
        return "reproduced"
    if len(measured) >= 2:
        runs = list(measured.values())
        same = all(_ranked_as_paper(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :])
        if same:
            return "same ordering as the paper"
    return "not reproduced"


def row_verdict_line(measured: dict, unmeasured: list[str]) -> str:
    """The row's verdict, and which runs with a paper number it rests on."""
    v = row_verdict(measured)
    if v == NOT_MEASURED:
        return v
    basis = f"from {', '.join(measured)}"
    return f"{v} ({basis}; {', '.join(unmeasured)} {NOT_MEASURED})" if unmeasured else f"{v} ({basis})"
