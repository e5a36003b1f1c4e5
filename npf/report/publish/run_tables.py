"""The page's Tables 2, 3 and 4: per suite a row of runs, each with our mean ± std and IQM beside the
paper's number, its verdict, budget and wall time; and the README's Table 2 rows."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from npf import paper_numbers as paper
from npf import stats
from npf.report.labels import (
    MISSING,
    OFFLINE_ALGOS,
    OFFLINE_METHODS,
    ONLINE_METHODS,
    SUITE_ORDER,
    run_label,
    suite_label,
)
from npf.report.publish.sources import Source, run_provenance
from npf.report.publish.verdicts import NOT_MEASURED, row_verdict_line, run_verdict
from npf.report.tables.scores import STD_DDOF

# the paper's names of its table rows (each for the suite's full task set)
PAPER_ROWS = {
    "cheetah": "HalfCheetah 5-task",
    "cheetah_velocity": "HalfCheetah constrained velocity",
    "quadruped": "Quadruped 4-task",
    "mt10": "Meta-World MT10",
}

#: (table, suites shown even when nothing is measured, runs shown per suite).
OFFLINE_RUNS = [(m, a) for m in OFFLINE_METHODS for a in ("bcq", "iql")]
TABLE_ROWS = {
    "table2": (("cheetah", "cheetah_velocity", "quadruped"), OFFLINE_RUNS),
    "table3": (("mt10",), OFFLINE_RUNS),
    "table4": (("mt10",), [(m, "sac") for m in ONLINE_METHODS]),
}
TABLE_TITLES = {
    "table2": "Offline multitask normalized score (0 = random, 100 = the dataset's expert)",
    "table3": "Meta-World MT10 offline success rate (%)",
    "table4": "Meta-World MT10 online success rate (%)",
}


def summary_cell(sm: stats.Summary) -> str:
    spread = f" ± {sm.std:.1f}" if sm.seeds > 1 else ""
    return f"{sm.mean:.1f}{spread} ({sm.seeds} seed{'s' if sm.seeds > 1 else ''})"


def iqm_cell(sm: stats.Summary) -> str:
    return f"{sm.iqm:.1f} [{sm.ci_low:.1f}, {sm.ci_high:.1f}]"


def _paper(table: str, suite: str, method: str, algo: str) -> paper.PaperNumber | None:
    if table == "table4":
        p = paper.TABLE4.get(suite, {}).get(method)
        return None if p is None or p.reported else p
    return paper.paper_number(table, suite, f"{method}-{algo}")


def _table_frame(df: pd.DataFrame, table: str) -> pd.DataFrame:
    if df.empty:
        return df
    if table == "table4":
        return df[(df["metric"] == "success") & ((df["algo"] == "sac") | df["method"].isin(ONLINE_METHODS))]
    metric = "success" if table == "table3" else "normalized"
    return df[(df["metric"] == metric) & df["algo"].isin(OFFLINE_ALGOS) & ~df["method"].isin(ONLINE_METHODS)]


def score_matrix(d: pd.DataFrame) -> pd.DataFrame:
    """Seeds × tasks of one run group (rows: seeds; a seed missing a task is an error)."""
    m = d.pivot_table(index="seed", columns="task", values="score", aggfunc="mean")
    if m.isna().any().any():
        seed = m.index[m.isna().any(axis=1)][0]
        raise ValueError(
            f"{d['suite'].iloc[0]}/{d['method'].iloc[0]}-{d['algo'].iloc[0]} seed {seed}: "
            f"no score for task {m.columns[m.loc[seed].isna()][0]}"
        )
    return m


@dataclass
class RowResult:
    suite: str
    lines: list[dict]
    verdict: str


def build_table(
    df: pd.DataFrame, table: str, sources: list[Source], ddof: int = STD_DDOF, withheld: dict | None = None
) -> list[RowResult]:
    withheld = withheld or {}
    d = _table_frame(df, table)
    base_suites, runs = TABLE_ROWS[table]
    suites = list(dict.fromkeys([*base_suites, *([] if d.empty else d["suite"])]))
    suites = [s for s in SUITE_ORDER if s in suites] + sorted(s for s in suites if s not in SUITE_ORDER)
    by_label = {s.label: s for s in sources}
    out = []
    for suite in suites:
        ds = d[d["suite"] == suite] if not d.empty else d
        present = list(dict.fromkeys(zip(ds["method"], ds["algo"]))) if not ds.empty else []
        present += [(m, a) for (su, m, a) in withheld if su == suite and table == "table2"]
        lines, measured, unmeasured, held_why = [], {}, [], None
        for m, a in list(dict.fromkeys([*runs, *present])):
            g = ds[(ds["method"] == m) & (ds["algo"] == a)] if not ds.empty else ds
            p = _paper(table, suite, m, a)
            sm = stats.summarize_matrix(score_matrix(g).to_numpy(), ddof=ddof) if not g.empty else None
            src = by_label.get(g["source"].iloc[0]) if not g.empty else None
            budget, wall = run_provenance(src, suite, m, a, sm.seeds) if sm is not None else ("", "")
            held = withheld[(suite, m, a)][2] if table == "table2" and (suite, m, a) in withheld else None
            if held:
                lines.append(
                    {
                        "Run": run_label(m, a),
                        "Ours: mean ± std": held,
                        "Ours: IQM [95 % CI]": "",
                        "Paper": MISSING if p is None else p.fmt(2),
                        "Verdict": "withheld",
                        "Budget": "",
                        "Wall time (training)": "",
                        "Results": "",
                    }
                )
                held_why = held
                continue
            if sm is not None and p is not None:
                measured[run_label(m, a)] = (sm, p)
            elif p is not None:
                unmeasured.append(run_label(m, a))
            lines.append(
                {
                    "Run": run_label(m, a),
                    "Ours: mean ± std": NOT_MEASURED if sm is None else summary_cell(sm),
                    "Ours: IQM [95 % CI]": "" if sm is None else iqm_cell(sm),
                    "Paper": MISSING if p is None else p.fmt(2) + (" (baseline run)" if p.reported else ""),
                    "Verdict": run_verdict(sm, p),
                    "Budget": budget,
                    "Wall time (training)": wall,
                    "Results": "" if src is None else f"`{src.label}`",
                }
            )
        verdict = row_verdict_line(measured, unmeasured)
        if held_why:
            verdict = held_why if not measured else f"{verdict}; some runs {held_why}"
        out.append(RowResult(suite, lines, verdict))
    return out


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join(":---" if i == 0 else "---" for i in range(len(cols))) + "|",
    ]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def table_region(rows: list[RowResult], table: str) -> str:
    parts = [f"*{TABLE_TITLES[table]}.*"]
    for r in rows:
        parts.append(f"**{PAPER_ROWS.get(r.suite, suite_label(r.suite))}**: {r.verdict}.\n\n{markdown_table(r.lines)}")
    if table == "table4":
        rep = [
            {
                "Reported baseline (cited by the paper, not run here)": f"{paper.TABLE4_LABELS.get(k, k)} ({p.source})",
                "Success % (paper, reported)": p.fmt(1),
                "Params (paper)": MISSING if p.params is None else f"{p.params:,}",
            }
            for suite in paper.TABLE4
            for k, p in paper.TABLE4[suite].items()
            if p.reported
        ]
        parts.append(markdown_table(rep))
    return "\n\n".join(parts)


def readme_region(rows: list[RowResult], page_link: str) -> str:
    """Table 2's three rows for the README: NPF-BCQ and NPF-IQL, ours beside the paper's."""
    out = []
    for r in rows:
        cells = {ln["Run"]: ln for ln in r.lines}
        row = {"Table 2 row": PAPER_ROWS.get(r.suite, suite_label(r.suite))}
        for run in ("NPF-BCQ", "NPF-IQL"):
            ln = cells[run]
            row[f"{run} (ours)"] = ln["Ours: mean ± std"]
            row[f"{run} (paper)"] = ln["Paper"]
        row["Verdict"] = r.verdict
        out.append(row)
    return (
        markdown_table(out) + f"\n\nOurs: mean ± std over seeds of the normalized score, at laptop budgets; "
        f"budgets, wall times, IQM, confidence intervals and every other table: [results page]({page_link})."
    )
