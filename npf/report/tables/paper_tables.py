"""The paper's score tables (2, 3, 4, 6, 7) from a results directory's evaluations, and the writer
of every table (with Table 8 of :mod:`npf.report.tables.weights`) as Markdown, LaTeX and HTML.

Every table has our columns and separate "paper" columns from :mod:`npf.paper_numbers`. Baselines
the paper only reports (``reported=True``) sit in rows or columns whose label says "reported" and
never in our columns. A table whose inputs are missing is not produced (its builder returns None).
Statistics: :mod:`npf.report.tables.scores`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from npf import paper_numbers as paper
from npf.report.labels import (
    MISSING,
    OFFLINE_ALGOS,
    OFFLINE_METHODS,
    ONLINE_METHODS,
    PAPER,
    SUITE_ORDER,
    preferred_first,
    run_label,
    suite_label,
    suite_size,
)
from npf.report.tables.scores import STD_DDOF, load_eval_results, summarize, summarize_tasks
from npf.report.tables.table import Table, fmt, fmt_paper
from npf.report.tables.weights import load_param_counts, table8


def _suite_tasks(d: pd.DataFrame, suite: str) -> list[str]:
    return list(dict.fromkeys(d.loc[d["suite"] == suite, "task"]))


def _runs(df: pd.DataFrame, methods: Iterable[str], algos: Iterable[str]) -> list[tuple[str, str]]:
    """(method, algo) pairs present in ``df``, ordered method-major (paper order)."""
    present = set(zip(df["method"], df["algo"]))
    ms = preferred_first(df["method"], methods)
    al = preferred_first(df["algo"], algos)
    return [(m, a) for m in ms for a in al if (m, a) in present]


def _lookup(summary: pd.DataFrame, **keys) -> tuple[float, float, int] | None:
    sel = summary
    for k, v in keys.items():
        sel = sel[sel[k] == v]
    if sel.empty:
        return None
    r = sel.iloc[0]
    return float(r["mean"]), float(r["std"]), int(r["n"])


def _cell(summary: pd.DataFrame, **keys) -> str:
    """``mean ± std`` over seeds; one seed has no spread to show: just its value."""
    hit = _lookup(summary, **keys)
    return MISSING if hit is None else fmt(hit[0], hit[1] if hit[2] > 1 else None)


def _seed_note(summary: pd.DataFrame) -> str:
    """``Seeds: cheetah NPF-BCQ 3, …`` from a :func:`summarize` frame over suite/method/algo."""
    order = {m: i for i, m in enumerate(OFFLINE_METHODS + ONLINE_METHODS)}
    summary = summary.sort_values(
        ["suite", "method", "algo"],
        key=lambda c: c.map(order).fillna(len(order)) if c.name == "method" else c,
        kind="stable",
    )
    parts = [f"{r.suite} {run_label(r.method, r.algo)} {int(r.n)}" for r in summary.itertuples()]
    return "Seeds: " + ", ".join(parts) + "."


STATS_NOTE = (
    "Ours: per seed, the mean over tasks; then mean ± std over seeds (population std, "
    "ddof={ddof}; a cell of one seed shows its value alone). 'paper' columns: the published "
    "numbers (npf.paper_numbers), for each suite's full task set whatever tasks our runs used."
)


def _offline(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    return df[(df["metric"] == metric) & df["algo"].isin(OFFLINE_ALGOS) & ~df["method"].isin(ONLINE_METHODS)]


# ------------------------------------------------------------------------------------ tables
def table2(df: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """Offline normalized score per gym suite: our (method, algo) columns; paper for NPF."""
    d = _offline(df, "normalized")
    if d.empty:
        return None
    summ = summarize(d, ddof=ddof)
    runs = _runs(d, OFFLINE_METHODS, OFFLINE_ALGOS)
    rows = []
    for suite in preferred_first(d["suite"], SUITE_ORDER):
        row = {"Experiment": suite_label(suite, _suite_tasks(d, suite))}
        for m, a in runs:
            row[run_label(m, a)] = _cell(summ, suite=suite, method=m, algo=a)
            if m == "npf":
                row[f"{run_label(m, a)} ({PAPER})"] = fmt_paper(paper.paper_number("table2", suite, f"{m}-{a}"))
        rows.append(row)
    return Table(
        "table2",
        "Table 2: offline multitask normalized score (mean ± std over seeds)",
        pd.DataFrame(rows).fillna(MISSING),
        notes=[STATS_NOTE.format(ddof=ddof), _seed_note(summ)],
    )


def table3(df: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """MT10 offline success rate: NPF / MT / MHMT × BCQ / IQL; the paper's Offline-MT / MHMT
    baselines are reported-only columns."""
    d = _offline(df, "success")
    if d.empty:
        return None
    summ = summarize(d, ddof=ddof)
    algos = preferred_first(d["algo"], OFFLINE_ALGOS)
    methods = preferred_first(list(d["method"]) + list(OFFLINE_METHODS), OFFLINE_METHODS)  # paper columns always
    rows = []
    for suite in preferred_first(d["suite"], SUITE_ORDER):
        row = {"Experiment": suite_label(suite, _suite_tasks(d, suite))}
        for m in methods:
            for a in algos:
                if ((d["method"] == m) & (d["algo"] == a)).any():
                    row[run_label(m, a)] = _cell(summ, suite=suite, method=m, algo=a)
                p = paper.paper_number("table3", suite, f"{m}-{a}")
                if p is not None and not p.reported:
                    row[f"{run_label(m, a)} ({PAPER})"] = fmt_paper(p)
                elif p is not None:
                    row[f"Offline-{run_label(m, a)} ({PAPER}, reported)"] = fmt_paper(p)
        rows.append(row)
    return Table(
        "table3",
        "Table 3: Meta-World offline success rate in % (mean ± std over seeds)",
        pd.DataFrame(rows).fillna(MISSING),
        notes=[
            STATS_NOTE.format(ddof=ddof),
            _seed_note(summ),
            "reported: the paper's own Offline-MT / Offline-MHMT runs, as published.",
        ],
    )


def table4(df: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """MT10 online success rate: our SAC-based runs; the baselines the paper cites from Sodhani et
    al. (2021) in separate rows marked reported."""
    d = df[(df["metric"] == "success") & ((df["algo"] == "sac") | df["method"].isin(ONLINE_METHODS))]
    if d.empty:
        return None
    summ = summarize(d, ddof=ddof)
    rows = []
    for suite in preferred_first(d["suite"], SUITE_ORDER):
        pnums = paper.TABLE4.get(suite, {})
        for m, a in _runs(d[d["suite"] == suite], ONLINE_METHODS, ("sac",)):
            p = pnums.get(m)
            p = p if p is not None and not p.reported else None
            rows.append(
                {
                    "Suite": suite_label(suite, _suite_tasks(d, suite)),
                    "Method": run_label(m, a),
                    "Success % (ours)": _cell(summ, suite=suite, method=m, algo=a),
                    f"Success % ({PAPER})": fmt_paper(p),
                    "Params (paper)": MISSING if p is None or p.params is None else f"{p.params:,}",
                }
            )
        for key, p in pnums.items():
            if p.reported:
                rows.append(
                    {
                        "Suite": suite_label(suite, _suite_tasks(d, suite)),
                        "Method": f"{paper.TABLE4_LABELS.get(key, key)} (reported: {p.source})",
                        "Success % (ours)": MISSING,
                        f"Success % ({PAPER})": fmt_paper(p),
                        "Params (paper)": MISSING if p.params is None else f"{p.params:,}",
                    }
                )
    return Table(
        "table4",
        "Table 4: Meta-World online success rate in % (mean ± std over seeds)",
        pd.DataFrame(rows),
        label_columns=2,
        notes=[
            STATS_NOTE.format(ddof=ddof),
            _seed_note(summ),
            "Rows marked reported are published numbers the paper cites; we did not run them.",
        ],
    )


def _per_task_table(
    d: pd.DataFrame,
    name: str,
    caption: str,
    published: Mapping,
    ddof: int,
    overall: bool,
    reported_key: str | None = None,
    runs: list[tuple[str, str]] | None = None,
) -> Table:
    """Rows suite × task (+ "overall"); our (method, algo) columns (default: the offline runs),
    paper columns for NPF, and ``reported_key``'s published column marked reported."""
    st = summarize_tasks(d, ddof=ddof)
    so = summarize(d, ddof=ddof)
    runs = runs if runs is not None else _runs(d, OFFLINE_METHODS, OFFLINE_ALGOS)
    rows = []
    for suite in preferred_first(d["suite"], SUITE_ORDER):
        ptab = published.get(suite, {})
        tasks = _suite_tasks(d, suite)
        full = suite_size(suite)
        # the paper's "overall" is over the full task set: say so when our run used a subset
        overall_label = (
            "overall" if full in (None, len(tasks)) else f"overall (ours: {len(tasks)} tasks; paper: all {full})"
        )
        for task in tasks + (["overall"] if overall else []):
            row = {"Suite": suite_label(suite, tasks), "Task": overall_label if task == "overall" else task}
            pt = ptab.get(task, {})
            for m, a in runs:
                src = so if task == "overall" else st
                keys = dict(suite=suite, method=m, algo=a) | ({} if task == "overall" else {"task": task})
                row[run_label(m, a)] = _cell(src, **keys)
                if m == "npf":
                    row[f"{run_label(m, a)} (paper)"] = fmt_paper(pt.get(f"{m}-{a}"))
            if reported_key is not None and ptab:
                p = pt.get(reported_key)
                label = f"{reported_key.upper()} (paper, reported)"
                row[label] = fmt_paper(p)
            rows.append(row)
    notes = [
        "Ours: mean ± std over seeds of each task's score (population std, "
        f"ddof={ddof}; one seed: its value alone). 'paper' columns: the published numbers.",
        _seed_note(so),
    ]
    if overall:
        notes.append("overall: per seed the mean over tasks, then mean ± std over seeds (as Table 3).")
    return Table(name, caption, pd.DataFrame(rows).fillna(MISSING), label_columns=2, notes=notes)


def table6(df: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """Per-task normalized score (gym suites), our offline runs; paper for NPF."""
    d = _offline(df, "normalized")
    if d.empty:
        return None
    return _per_task_table(
        d, "table6", "Table 6: per-task normalized score (mean ± std over seeds)", paper.TABLE6, ddof, overall=False
    )


def table7(df: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """Per-task MT10 offline success rate; paper NPF columns and CDS (reported, Yu et al. 2021)."""
    d = _offline(df, "success")
    if d.empty:
        return None
    t = _per_task_table(
        d,
        "table7",
        "Table 7: per-task Meta-World offline success rate in % (mean ± std over seeds)",
        paper.TABLE7,
        ddof,
        overall=True,
        reported_key="cds",
    )
    t.notes.append(f"CDS: reported by {paper.YU_CDS} on 4 environments over 6 seeds; not run here.")
    return t


def table4_per_task(df: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """Per-task MT10 online success rate of our runs (the paper gives no per-task online numbers)."""
    d = df[(df["metric"] == "success") & (df["algo"] == "sac")]
    if d.empty:
        return None
    return _per_task_table(
        d,
        "table4_per_task",
        "Table 4, per task: Meta-World online success rate in % (mean ± std over seeds)",
        {},
        ddof,
        overall=True,
        runs=_runs(d, ONLINE_METHODS, ("sac",)),
    )


def build_tables(results_dir: str | Path, ddof: int = STD_DDOF, scale: str = "") -> list[Table]:
    """Every table whose inputs exist under ``results_dir``; ``scale`` (the config's
    ``scale_caption``, e.g. "smoke scale: ...") is appended to every caption."""
    df = load_eval_results(results_dir)
    tables = [
        table2(df, ddof),
        table3(df, ddof),
        table4(df, ddof),
        table6(df, ddof),
        table7(df, ddof),
        table4_per_task(df, ddof),
        table8(load_param_counts(results_dir), ddof),
    ]
    tables = [t for t in tables if t is not None]
    for t in tables if scale else ():
        t.caption += f" [{scale}]"
    return tables


def write_tables(results_dir: str | Path, out_dir: str | Path, ddof: int = STD_DDOF, scale: str = "") -> list[Path]:
    """Write ``{name}.md``, ``.tex`` and ``.html`` under ``out_dir`` for each table that has inputs;
    returns the written paths (nothing, and no directory, when there are no inputs)."""
    tables = build_tables(results_dir, ddof, scale)
    written: list[Path] = []
    if not tables:
        return written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for t in tables:
        for ext, text in (("md", t.to_markdown()), ("tex", t.to_latex()), ("html", t.to_html())):
            p = out / f"{t.name}.{ext}"
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.write_text(text)
            tmp.replace(p)
            written.append(p)
    return written
