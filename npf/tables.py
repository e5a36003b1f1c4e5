"""The paper's tables (2, 3, 4, 6, 7, 8) from the pipeline's result files, as Markdown and LaTeX.

Inputs (under ``results_dir``):

- ``eval/{suite}/{method}-{algo}/seed{s}.json`` — final evaluation of one run (see
  :func:`npf.evaluate.evaluate_tasks`); read by :func:`load_eval_results` into a tidy frame
  ``suite, method, algo, seed, task, score, metric`` where ``score`` is the task's mean normalized
  score (``metric == "normalized"``, gym suites) or its success rate in % (``"success"``, MT10).
- ``pathways/{suite}/{algo}/seed{s}/masks.pt`` (or ``masks.json`` carrying parameter counts) —
  Table 8's weight counts, read by :func:`load_param_counts`.

Statistics (one convention everywhere):

- A run's score is the **mean over its tasks** (per seed); a table cell is the **mean ± std over
  seeds** of that per-seed value. Per-task cells (Tables 6, 7) are mean ± std over seeds of that
  task's score.
- ``std`` is the population standard deviation over seeds, ``ddof = 0`` (:data:`STD_DDOF`): numpy's
  default, the one :mod:`npf.evaluate` uses for per-episode stds, and defined (= 0) for a single
  seed, which the small default config produces. Pass ``ddof=1`` for the sample std.

Every table has our columns and separate "paper" columns from :mod:`npf.paper_numbers`. Baselines
the paper only reports (``reported=True``) sit in rows or columns whose label says "reported" and
never in our columns. A table whose inputs are missing is not produced (its builder returns None).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from npf import layout
from npf import paper_numbers as paper
from npf.paper_numbers import PaperNumber

STD_DDOF = 0
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
EVAL_COLUMNS = ["suite", "method", "algo", "seed", "task", "score", "metric"]


def _suite_size(suite: str) -> int | None:
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
    full = _suite_size(suite)
    unit = "task" if n == 1 else "tasks"
    if full is None or n == full:
        return f"{name} ({n} {unit})"
    listed = f": {', '.join(names)}" if names is not None and n <= 3 else ""
    return f"{name} ({n} of {full} tasks{listed})"


def _suite_tasks(d: pd.DataFrame, suite: str) -> list[str]:
    return list(dict.fromkeys(d.loc[d["suite"] == suite, "task"]))


# ------------------------------------------------------------------------------------ loading
def load_eval_results(results_dir: str | Path) -> pd.DataFrame:
    """All ``eval/*/*/seed*.json`` as one tidy frame (one row per run × task); empty if none."""
    rows = []
    for path in layout.find(layout.eval_json, results_dir):
        ev = json.loads(path.read_text())
        metric = ev.get("metric", "normalized")
        key = "normalized_mean" if metric == "normalized" else "success"
        for task, r in ev["tasks"].items():
            rows.append(
                {
                    "suite": ev["suite"],
                    "method": ev["method"],
                    "algo": ev["algo"],
                    "seed": int(ev["seed"]),
                    "task": task,
                    "score": float(r[key]),
                    "metric": metric,
                }
            )
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


def per_seed_means(df: pd.DataFrame, by: Iterable[str] = ("suite", "method", "algo")) -> pd.DataFrame:
    """Mean over tasks for each run: columns ``*by, seed, score``."""
    by = list(by)
    return df.groupby([*by, "seed"], sort=False, as_index=False)["score"].mean()


def _mean_std(values: pd.Series, ddof: int) -> pd.Series:
    v = values.to_numpy(dtype=float)
    std = float(np.std(v, ddof=ddof)) if len(v) > ddof else math.nan
    return pd.Series({"mean": float(np.mean(v)), "std": std, "n": len(v)})


def summarize(df: pd.DataFrame, by: Iterable[str] = ("suite", "method", "algo"), ddof: int = STD_DDOF) -> pd.DataFrame:
    """Mean over tasks per seed, then ``mean, std, n`` over seeds, per ``by`` group."""
    by = list(by)
    seeds = per_seed_means(df, by)
    out = seeds.groupby(by, sort=False)["score"].apply(lambda s: _mean_std(s, ddof)).unstack()
    out["n"] = out["n"].astype(int)
    return out.reset_index()


def summarize_tasks(df: pd.DataFrame, ddof: int = STD_DDOF) -> pd.DataFrame:
    """Per task: ``mean, std, n`` over seeds."""
    return summarize(df, ("suite", "method", "algo", "task"), ddof)


# ------------------------------------------------------------------------------------ rendering
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


def _fmt_paper(p: PaperNumber | None, digits: int = 2) -> str:
    return MISSING if p is None else p.fmt(digits)


def _fmt_count(mean: float, std: float | None = None) -> str:
    if std is None or math.isnan(std):
        return f"{mean:,.0f}"
    return f"{mean:,.0f} ± {std:,.0f}"


def run_label(method: str, algo: str) -> str:
    """Display name of a run: ``NPF-BCQ``; online methods by their own name (``SAC+NPF``)."""
    name = METHOD_LABELS.get(method, method)
    return name if algo == "sac" or method in ONLINE_METHODS else f"{name}-{algo.upper()}"


def _order(values: Iterable[str], preferred: Iterable[str]) -> list[str]:
    values = list(dict.fromkeys(values))
    pref = [v for v in preferred if v in values]
    return pref + sorted(v for v in values if v not in pref)


def _runs(df: pd.DataFrame, methods: Iterable[str], algos: Iterable[str]) -> list[tuple[str, str]]:
    """(method, algo) pairs present in ``df``, ordered method-major (paper order)."""
    present = set(zip(df["method"], df["algo"]))
    ms = _order(df["method"], methods)
    al = _order(df["algo"], algos)
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
    for suite in _order(d["suite"], SUITE_ORDER):
        row = {"Experiment": suite_label(suite, _suite_tasks(d, suite))}
        for m, a in runs:
            row[run_label(m, a)] = _cell(summ, suite=suite, method=m, algo=a)
            if m == "npf":
                row[f"{run_label(m, a)} ({PAPER})"] = _fmt_paper(paper.paper_number("table2", suite, f"{m}-{a}"))
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
    algos = _order(d["algo"], OFFLINE_ALGOS)
    methods = _order(list(d["method"]) + list(OFFLINE_METHODS), OFFLINE_METHODS)  # paper columns always
    rows = []
    for suite in _order(d["suite"], SUITE_ORDER):
        row = {"Experiment": suite_label(suite, _suite_tasks(d, suite))}
        for m in methods:
            for a in algos:
                if ((d["method"] == m) & (d["algo"] == a)).any():
                    row[run_label(m, a)] = _cell(summ, suite=suite, method=m, algo=a)
                p = paper.paper_number("table3", suite, f"{m}-{a}")
                if p is not None and not p.reported:
                    row[f"{run_label(m, a)} ({PAPER})"] = _fmt_paper(p)
                elif p is not None:
                    row[f"Offline-{run_label(m, a)} ({PAPER}, reported)"] = _fmt_paper(p)
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
    for suite in _order(d["suite"], SUITE_ORDER):
        pnums = paper.TABLE4.get(suite, {})
        for m, a in _runs(d[d["suite"] == suite], ONLINE_METHODS, ("sac",)):
            p = pnums.get(m)
            p = p if p is not None and not p.reported else None
            rows.append(
                {
                    "Suite": suite_label(suite, _suite_tasks(d, suite)),
                    "Method": run_label(m, a),
                    "Success % (ours)": _cell(summ, suite=suite, method=m, algo=a),
                    f"Success % ({PAPER})": _fmt_paper(p),
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
                        f"Success % ({PAPER})": _fmt_paper(p),
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
) -> Table:
    """Rows suite × task (+ "overall"); our (method, algo) columns, paper columns for NPF, and
    ``reported_key``'s published column marked reported."""
    st = summarize_tasks(d, ddof=ddof)
    so = summarize(d, ddof=ddof)
    runs = _runs(d, OFFLINE_METHODS, OFFLINE_ALGOS)
    rows = []
    for suite in _order(d["suite"], SUITE_ORDER):
        ptab = published.get(suite, {})
        tasks = _suite_tasks(d, suite)
        full = _suite_size(suite)
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
                    row[f"{run_label(m, a)} (paper)"] = _fmt_paper(pt.get(f"{m}-{a}"))
            if reported_key is not None and ptab:
                p = pt.get(reported_key)
                label = f"{reported_key.upper()} (paper, reported)"
                row[label] = _fmt_paper(p)
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


# ------------------------------------------------------------------------------------ Table 8
def _flat_masks(masks: Mapping, n: int) -> np.ndarray:
    """[N, P] bool: one network's bit-packed masks (a Pathways state's ``masks[role]``) per task."""
    flat = []
    for m in masks.values():
        shape = [int(s) for s in m["shape"]]
        size = int(np.prod(shape))
        bits = np.unpackbits(np.asarray(m["bits"], dtype=np.uint8))[:size].astype(bool)
        flat.append(bits.reshape(n, -1))
    return np.concatenate(flat, axis=1)


def _counts_from_pt(path: Path, role: str) -> dict | None:
    from npf import checkpoint as ckpt  # torch: imported only when a masks.pt is read

    state = ckpt.load(path)
    pw = state.get("pathways", state)
    masks = pw.get("masks", {}).get(role)
    if not masks:
        return None
    n = int(pw["num_tasks"])
    f = _flat_masks(masks, n)
    return {
        "n_tasks": n,
        "keep_ratio": float(pw.get("keep_ratio", math.nan)),
        "dense": int(f.shape[1]),
        "pathway": float(f.sum(1).mean()),
        "union": int(f.any(0).sum()),
    }


def _counts_from_json(path: Path, role: str) -> dict | None:
    s = json.loads(path.read_text())
    r = s.get("roles", {}).get(role)
    total = None if r is None else next((r[k] for k in ("maskable_params", "num_params", "params") if k in r), None)
    if total is None:
        return None
    n = len(s["tasks"])
    out = {
        "n_tasks": n,
        "keep_ratio": float(s.get("keep_ratio", math.nan)),
        "dense": int(total),
        "pathway": float(r["density"]) * total,
        "union": float(r["union_density"]) * total,
    }
    return out


def load_param_counts(results_dir: str | Path, role: str = "actor") -> pd.DataFrame | None:
    """Table 8's inputs: per (suite, algo, seed) the policy network's maskable weight count
    (``dense``, per task), the mean pathway size (``pathway``) and the union of the tasks'
    pathways (``union``). Read from ``masks.pt`` (exact), else from ``masks.json`` when it
    carries a ``maskable_params`` count. None when nothing is there."""
    rows = []
    for d in layout.find(layout.pathways_dir, results_dir):
        suite, algo, seed = d.parent.parent.name, d.parent.name, d.name[len("seed") :]
        if not seed.isdigit():
            continue
        c = None
        if (d / layout.MASKS_FILE).exists():
            c = _counts_from_pt(d / layout.MASKS_FILE, role)
        elif (d / layout.MASKS_SUMMARY_FILE).exists():
            c = _counts_from_json(d / layout.MASKS_SUMMARY_FILE, role)
        if c is not None:
            rows.append({"suite": suite, "algo": algo, "seed": int(seed), **c})
    return pd.DataFrame(rows) if rows else None


def table8(counts: pd.DataFrame | Mapping | None, ddof: int = STD_DDOF) -> Table | None:
    """Policy-network weights: (A) N separate dense networks, (B) N separate networks pruned to
    the keep ratio, (C) NPF's union of the N pathways (mean ± std over seeds, and as % of A).

    ``counts``: a frame (or dict of columns) with ``algo, seed, n_tasks, dense`` (maskable weights
    of one network), ``union`` (weights in any task's pathway), optional ``suite`` (default
    mt10), ``pathway`` (mean per-task pathway size) and ``keep_ratio``.
    """
    if counts is None:
        return None
    c = pd.DataFrame(counts).copy()
    if c.empty:
        return None
    if "suite" not in c:
        c["suite"] = "mt10"
    if "pathway" not in c:
        c["pathway"] = c["keep_ratio"] * c["dense"]
    c["A"] = c["n_tasks"] * c["dense"]
    c["B"] = c["n_tasks"] * c["pathway"]
    c["C"] = c["union"].astype(float)
    c["Cpct"] = c["C"] / c["A"] * 100.0
    rows = {
        k: {"Suite": None, "Policy weights": lab}
        for k, lab in (
            ("A", "(A) N separate networks, no pruning"),
            ("B", "(B) N separate networks, pruned to the pathway size"),
            ("C", "(C) NPF: union of the N pathways"),
            ("Cpct", "(C) as % of (A)"),
        )
    }
    out = []
    for suite in _order(c["suite"], SUITE_ORDER):
        cs = c[c["suite"] == suite]
        n_tasks = sorted(set(cs["n_tasks"].astype(int)))
        block = {
            k: dict(v, Suite=suite_label(suite, n_tasks[0] if len(n_tasks) == 1 else None)) for k, v in rows.items()
        }
        for algo in _order(cs["algo"], ("iql", "bcq", "sac")):
            g = cs[cs["algo"] == algo]
            col = f"ours ({algo.upper()}, {len(g)} seeds)"
            for k in ("A", "B", "C"):
                s = _mean_std(g[k], ddof)
                block[k][col] = _fmt_count(s["mean"], s["std"] if k == "C" else None)
            s = _mean_std(g["Cpct"], ddof)
            block["Cpct"][col] = f"{fmt(s['mean'], s['std'])} %"
        p = paper.TABLE8.get(suite)
        if p is not None:
            col = f"{PAPER} (IQL)"
            block["A"][col] = _fmt_count(p["separate_dense"].mean)
            block["B"][col] = _fmt_count(p["separate_pruned"].mean)
            block["C"][col] = _fmt_count(p["npf_union"].mean, p["npf_union"].std)
            block["Cpct"][col] = f"{p['npf_union_percent_of_A'].fmt()} %"
        out += list(block.values())
    frame = pd.DataFrame(out)
    frame = frame[["Suite", "Policy weights"] + [k for k in frame.columns if k not in ("Suite", "Policy weights")]]
    return Table(
        "table8",
        "Table 8: policy-network weights for N tasks: separate networks vs NPF",
        frame.fillna(MISSING),
        label_columns=2,
        notes=[
            "Counts are maskable weights of the policy (actor) network (biases excluded, as "
            "the paper's 1,092,608). (A) = N × dense; (B) = N × mean pathway size; (C) = weights "
            f"in at least one task's pathway, mean ± std over seeds (population std, ddof={ddof})."
        ],
    )


# ------------------------------------------------------------------------------------ driver
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


# ------------------------------------------------------------------------- Table 8, per pathway
TABLE8_PATHWAY_COLUMNS = ["suite", "algo", "seed", "task", "pathway", "dense", "n_tasks", "union"]


def load_pathway_counts(results_dir: str | Path, role: str = "actor") -> pd.DataFrame:
    """Per trained NPF run and task: the actor weights in the task's pathway (``pathway``: nonzero
    mask entries), the actor's maskable weights (``dense``: one dense actor of the same width),
    ``n_tasks`` and the run's ``union`` (weights in any task's pathway). Read from the runs'
    ``runs/{suite}/npf-{algo}/seed{s}/final.pt`` (the masks NPF trained with); empty if none."""
    from npf import checkpoint as ckpt  # torch: imported only when a run is read

    rows = []
    for path in layout.find(layout.offline_final, results_dir, method="npf"):
        suite, algo, seed = path.parts[-4], path.parts[-3][len("npf-") :], path.parts[-2][len("seed") :]
        if not seed.isdigit():
            continue
        saved = ckpt.load(path)
        pw = saved.get("pathways") if isinstance(saved, dict) else None
        masks = (pw or {}).get("masks", {}).get(role)
        if not masks:
            continue
        n = int(pw["num_tasks"])
        f = _flat_masks(masks, n)
        tasks = list(saved.get("tasks") or range(n))
        union = int(f.any(0).sum())
        for task, nnz in zip(tasks, f.sum(1)):
            rows.append(
                {
                    "suite": suite,
                    "algo": algo,
                    "seed": int(seed),
                    "task": str(task),
                    "pathway": int(nnz),
                    "dense": int(f.shape[1]),
                    "n_tasks": n,
                    "union": union,
                }
            )
    return pd.DataFrame(rows, columns=TABLE8_PATHWAY_COLUMNS)


def table8_pathways(counts: pd.DataFrame, ddof: int = STD_DDOF) -> Table | None:
    """Actor weights per suite and algorithm: one task's NPF pathway (mean ± std over tasks, all
    seeds pooled), all N pathways together (their union; mean ± std over seeds), N separate
    single-task actors of the same width (N × dense) and the one dense actor, each also as % of
    the dense actor. ``counts``: :func:`load_pathway_counts`'s frame. None when it is empty."""
    if counts is None or counts.empty:
        return None
    out = []
    for suite in _order(counts["suite"], SUITE_ORDER):
        cs = counts[counts["suite"] == suite]
        for algo in _order(cs["algo"], ("iql", "bcq", "sac")):
            g = cs[cs["algo"] == algo]
            dense, n = int(g["dense"].iloc[0]), int(g["n_tasks"].iloc[0])
            seeds = g.drop_duplicates("seed")
            task = _mean_std(g["pathway"], ddof)
            union = _mean_std(seeds["union"], ddof)
            pct = lambda v: v / dense * 100.0  # noqa: B023 (used within this iteration)
            head = {"Suite": suite_label(suite), "Algorithm": algo.upper(), "Seeds": len(seeds), "Tasks": n}
            out += [
                {
                    **head,
                    "Actor": "NPF: one task's pathway (mean ± std over tasks)",
                    "Weights": _fmt_count(task["mean"], task["std"]),
                    "% of dense actor": fmt(pct(task["mean"]), pct(task["std"])),
                },
                {
                    **head,
                    "Actor": f"NPF: all {n} pathways (union; mean ± std over seeds)",
                    "Weights": _fmt_count(union["mean"], union["std"]),
                    "% of dense actor": fmt(pct(union["mean"]), pct(union["std"])),
                },
                {
                    **head,
                    "Actor": f"{n} separate single-task actors, same width",
                    "Weights": _fmt_count(n * dense),
                    "% of dense actor": fmt(pct(n * dense), None),
                },
                {
                    **head,
                    "Actor": "one dense actor (shared network)",
                    "Weights": _fmt_count(dense),
                    "% of dense actor": fmt(100.0, None),
                },
            ]
    return Table(
        "table8_pathways",
        "Table 8: actor weights of the NPF pathways vs separate and dense actors",
        pd.DataFrame(out),
        label_columns=5,
        notes=[
            "Weights: the actor's maskable weights (biases excluded, as the paper's 1,092,608), "
            "counted from the masks of the trained NPF runs (runs/*/npf-*/seed*/final.pt). "
            f"Per-task row: nonzero mask entries of each task, mean ± std over tasks × seeds; "
            f"union row: mean ± std over seeds (population std, ddof={ddof})."
        ],
    )


def write_table8_pathways(results_dir: str | Path, out_dir: str | Path, ddof: int = STD_DDOF) -> list[Path]:
    """``table8_pathways.{csv,md}`` under ``out_dir`` (the CSV: one row per run × task, the tidy
    counts); nothing when no trained NPF run is there. Returns the written paths."""
    counts = load_pathway_counts(results_dir)
    table = table8_pathways(counts, ddof)
    if table is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, write in (
        (out / "table8_pathways.csv", lambda f: counts.to_csv(f, index=False)),
        (out / "table8_pathways.md", lambda f: f.write_text(table.to_markdown())),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        write(tmp)
        tmp.replace(path)
        written.append(path)
    return written
