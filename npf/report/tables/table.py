"""A rendered table (Markdown, LaTeX, HTML) and how its cells format numbers."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import pandas as pd

from npf.paper_numbers import PaperNumber
from npf.report.labels import MISSING


@dataclass
class Table:
    """A rendered table: ``frame`` holds display strings; ``label_columns`` leading columns are row
    labels. ``notes`` go under the table."""

    name: str
    caption: str
    frame: pd.DataFrame
    label_columns: int = 1
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        cols = [str(c) for c in self.frame.columns]
        lines = [
            f"**{self.caption}**",
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "|".join(":---" if i < self.label_columns else "---:" for i in range(len(cols))) + "|",
        ]
        for row in self.frame.itertuples(index=False):
            lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (
            f"<h3>{html.escape(self.caption)}</h3>\n"
            + self.frame.to_html(index=False, escape=True, border=0)
            + (f"\n<ul>{notes}</ul>" if notes else "")
            + "\n"
        )

    def to_latex(self) -> str:
        n = len(self.frame.columns)
        spec = "l" * self.label_columns + "r" * (n - self.label_columns)
        lines = [
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{_tex(self.caption.split(': ', 1)[-1])}}}",
            rf"\label{{tab:{self.name}}}",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            " & ".join(_tex(str(c)) for c in self.frame.columns) + r" \\",
            r"\midrule",
        ]
        for row in self.frame.itertuples(index=False):
            lines.append(" & ".join(_tex(str(v)) for v in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(_tex(x) for x in self.notes))
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "—": "---",
    "–": "--",
    "×": r"$\times$",
    "·": r"$\cdot$",
}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)


def fmt(mean: float, std: float | None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_paper(p: PaperNumber | None, digits: int = 2) -> str:
    return MISSING if p is None else p.fmt(digits)


def fmt_count(mean: float, std: float | None = None) -> str:
    if std is None or math.isnan(std):
        return f"{mean:,.0f}"
    return f"{mean:,.0f} ± {std:,.0f}"
