"""The page's figures: every figure of each results directory as a PNG small enough for the
repository, under ``<figure folder>/<results directory name>/``, and the region that shows them."""

from __future__ import annotations

from pathlib import Path

from npf.report.publish.sources import Source
from npf.report.publish.verdicts import NOT_MEASURED

MAX_PNG_BYTES = 300_000
PAGE_DPI = 100
FIGURES = [  # (file-name prefix, caption)
    ("fig03", "Figure 3: DAPD ablation on HalfCheetah"),
    ("fig04", "Figure 4: gradient norm per task group, with and without pretraining"),
    ("fig05", "Figure 5: sample complexity (score against trajectories per task)"),
    ("fig06", "Figure 6: pathway overlap, MT10 IQL policy"),
    ("fig10", "Figure 10: learning curves, HalfCheetah 5-task"),
    ("fig11", "Figure 11: learning curves, HalfCheetah constrained velocity"),
    ("fig12", "Figure 12: learning curves, quadruped"),
    ("fig13", "Figure 13: DAPD per task (single-shot, DAPD, no threshold, dense)"),
    ("fig14", "Figure 14: DAPD per task, M = 1, 5, 10"),
    ("fig15", "Figure 15: pathway overlap per suite"),
]


def write_page_figures(
    sources: list[Source], fig_dir: Path, withheld_suites: set[tuple[str, str]] = frozenset()
) -> dict[str, list[Path]]:
    """Every figure each results directory supports, PNG only, under ``fig_dir/<dir name>/``,
    at a resolution that keeps each under :data:`MAX_PNG_BYTES`; stale PNGs there are removed, and
    so are the learning curves (normalized scores) of ``withheld_suites`` ((label, suite) pairs)."""
    from npf.report.figures.build import CURVE_FIGURES, write_figures

    out = {}
    for s in sources:
        target = fig_dir / s.path.name
        written: list[Path] = []
        dpi = PAGE_DPI
        while True:
            written = [p for p in write_figures(s.path, target, dpi=dpi, formats=("png",))]
            big = [p for p in written if p.stat().st_size > MAX_PNG_BYTES]
            if not big:
                break
            if dpi <= 50:
                raise ValueError(
                    f"{big[0]}: {big[0].stat().st_size:,} bytes even at {dpi} dpi (limit {MAX_PNG_BYTES:,})"
                )
            dpi = int(dpi * 0.75)
        held = {f"{CURVE_FIGURES.get(su, f'curves_{su}')}.png" for lab, su in withheld_suites if lab == s.label}
        written = [p for p in written if p.name not in held]
        if target.is_dir():
            for old in target.glob("*.png"):
                if old not in written:
                    old.unlink()
        out[s.label] = sorted(written)
    return out


def figures_region(figs: dict[str, list[Path]], page_dir: Path, held_suites: set[str] = frozenset()) -> str:
    from npf.report.figures.build import CURVE_FIGURES

    held = {CURVE_FIGURES[su][:5] for su in held_suites if su in CURVE_FIGURES}
    lines = []
    for prefix, caption in FIGURES:
        hits = [(label, p) for label, ps in figs.items() for p in ps if p.name.startswith(prefix)]
        missing = "withheld (weak expert, see the table)" if prefix in held else NOT_MEASURED
        lines.append(f"**{caption}**" + ("" if hits else f": {missing}."))
        for label, p in hits:
            rel = p.relative_to(page_dir).as_posix() if p.is_relative_to(page_dir) else p.as_posix()
            lines.append(f"\n![{caption}, {label}]({rel})\n*from `{label}` ({p.stem})*")
        lines.append("")
    others = [(label, p) for label, ps in figs.items() for p in ps if not any(p.name.startswith(f) for f, _ in FIGURES)]
    if others:  # figures a run supports that the paper has no number for (e.g. MT10 offline curves)
        lines.append("**Other figures from these runs** (no counterpart in the paper)")
        for label, p in others:
            rel = p.relative_to(page_dir).as_posix() if p.is_relative_to(page_dir) else p.as_posix()
            lines.append(f"\n![{p.stem}, {label}]({rel})\n*from `{label}` ({p.stem})*")
        lines.append("")
    return "\n".join(lines)
