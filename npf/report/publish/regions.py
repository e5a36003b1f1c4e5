"""The generated regions of a Markdown page: the text between ``<!-- npf:begin NAME -->`` and
``<!-- npf:end NAME -->`` is rewritten and everything else (notes written by hand) is left alone; a
region the page lacks is appended at its end. A missing results page starts from :data:`SKELETON`."""

from __future__ import annotations

import re

BEGIN, END = "<!-- npf:begin {} -->", "<!-- npf:end {} -->"
REGION_RE = re.compile(r"<!-- npf:begin (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- npf:end (?P=name) -->", re.S)

SKELETON = """# Results: this project's numbers beside the paper's

Every number on this page comes from a measured run of this pipeline; the paper's numbers stand in
their own columns. Where nothing was run, the page says so. The tables, the README's Table 2 rows and
the figures under `docs/results/` are rebuilt by one command (the regions between `npf:begin` /
`npf:end` comments are generated; the text outside them is written by hand and survives a rebuild):

<!-- npf:begin command -->
<!-- npf:end command -->

## How to read the numbers

<!-- npf:begin statistics -->
<!-- npf:end statistics -->

## Budgets and wall times

<!-- npf:begin budgets -->
<!-- npf:end budgets -->

## Table 2: offline, gym suites

<!-- npf:begin table2 -->
<!-- npf:end table2 -->

## Table 3: offline, Meta-World MT10

<!-- npf:begin table3 -->
<!-- npf:end table3 -->

## Table 4: online, Meta-World MT10

<!-- npf:begin table4 -->
<!-- npf:end table4 -->

## Tables 6 and 7: per task

<!-- npf:begin per-task -->
<!-- npf:end per-task -->

## Table 8: policy-network weights

<!-- npf:begin table8 -->
<!-- npf:end table8 -->

## Figures

<!-- npf:begin figures -->
<!-- npf:end figures -->
"""


def check_markers(text: str, where: str) -> None:
    """Every begin comment has its end comment after it, each name once."""
    begins = re.findall(r"<!-- npf:begin ([\w.-]+) -->", text)
    ends = re.findall(r"<!-- npf:end ([\w.-]+) -->", text)
    matched = [m.group("name") for m in REGION_RE.finditer(text)]
    for name in dict.fromkeys(begins + ends):
        if not (begins.count(name) == ends.count(name) == matched.count(name) == 1):
            raise ValueError(
                f"{where}: region {name!r} needs exactly one '{BEGIN.format(name)}' line followed by "
                f"one '{END.format(name)}' line"
            )


def fill_regions(text: str, regions: dict[str, str], where: str = "page") -> str:
    """``text`` with each region's body replaced; regions it lacks appended at its end."""
    check_markers(text, where)
    seen = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in regions:
            return m.group(0)
        seen.add(name)
        return f"{BEGIN.format(name)}\n{regions[name].rstrip()}\n{END.format(name)}"

    out = REGION_RE.sub(sub, text)
    for name, body in regions.items():
        if name not in seen:
            out = out.rstrip("\n") + f"\n\n{BEGIN.format(name)}\n{body.rstrip()}\n{END.format(name)}\n"
    return out
