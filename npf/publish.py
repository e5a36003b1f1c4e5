"""``npf publish``: the results page (``docs/results.md``) and its PNGs from results directories.

The page is filled region by region: the generator rewrites only the text between
``<!-- npf:begin NAME -->`` and ``<!-- npf:end NAME -->`` and leaves everything else (notes
written by hand) alone; a region the page lacks is appended at its end. A missing page starts
from :data:`SKELETON`. The README gets Table 2's rows the same way (region ``table2-readme``).

For every run (suite, method, algo) the tables give, from its evaluation JSONs
(:func:`npf.tables.load_eval_results`):

- mean ± std over seeds of the per-seed mean over tasks, with the seed count (:mod:`npf.tables`'
  convention), the interquartile mean of all seed × task scores and its 95 % stratified
  bootstrap interval (:mod:`npf.stats`);
- the paper's number in its own column (:mod:`npf.paper_numbers`);
- the budget it was trained with (from the resolved config each job recorded, :mod:`npf.provenance`)
  and its wall time (the sum of its training jobs' recorded attempts);
- a verdict by :data:`VERDICT_RULE`.

Nothing is made up: a run without evaluation JSONs is "not measured yet", a budget or wall time
without records is "not recorded".
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from npf import layout, stats
from npf import paper_numbers as paper
from npf.config import offline_section, section
from npf.provenance import load_attempts, load_config, mlflow_attempts
from npf.tables import (
    EVAL_COLUMNS,
    MISSING,
    OFFLINE_ALGOS,
    OFFLINE_METHODS,
    ONLINE_METHODS,
    STD_DDOF,
    SUITE_ORDER,
    load_eval_results,
    load_param_counts,
    run_label,
    suite_label,
    table6,
    table7,
    table8,
)

NOT_MEASURED = "not measured yet"
# the paper's names of its table rows (each for the suite's full task set)
PAPER_ROWS = {
    "cheetah": "HalfCheetah 5-task",
    "cheetah_velocity": "HalfCheetah constrained velocity",
    "quadruped": "Quadruped 4-task",
    "mt10": "Meta-World MT10",
}
NOT_RECORDED = "not recorded"
MAX_PNG_BYTES = 300_000
PAGE_DPI = 100
BEGIN, END = "<!-- npf:begin {} -->", "<!-- npf:end {} -->"
REGION_RE = re.compile(r"<!-- npf:begin (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- npf:end (?P=name) -->", re.S)

VERDICT_RULE = (
    "Verdict of a run: **reproduced** when our mean ± std and the paper's mean ± std overlap "
    "(|ours − paper| ≤ std_ours + std_paper), else **not reproduced** (Δ = ours − paper). Verdict of a row "
    "(suite): **reproduced** when every measured run with a paper number is; else **same ordering as the "
    "paper** when at least two such runs are measured and our means rank them as the paper's do; else "
    "**not reproduced**."
)

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


# ------------------------------------------------------------------------------------ regions
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


# ------------------------------------------------------------------------------------ inputs
@dataclass
class Source:
    """One results directory: its evaluations and its jobs' records."""

    path: Path
    label: str  # how the page names it (and its figures' folder)
    evals: pd.DataFrame
    attempts: pd.DataFrame
    end_to_end_s: float | None = None
    configs: dict = field(default_factory=dict)
    from_mlflow: bool = False  # no attempt records: budgets and times from the MLflow runs

    def config(self, h: str) -> dict | None:
        if h not in self.configs:
            self.configs[h] = load_config(self.path, h)
        return self.configs[h]


def display_path(path: str) -> str:
    """How the page names a results directory: as given when relative, else ``$RESULTS/<name>``
    (a committed page names no path of the machine it was built on)."""
    p = Path(path)
    return f"$RESULTS/{p.name}" if p.is_absolute() or ".." in p.parts else p.as_posix().rstrip("/")


def load_sources(dirs: list[str], wall_times: dict[str, float] | None = None) -> list[Source]:
    wall_times = {Path(k): v for k, v in (wall_times or {}).items()}
    sources, names = [], {}
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise FileNotFoundError(f"{d}: no such results directory")
        if not any((p / sub).exists() for sub in layout.TOP_LEVEL):
            raise ValueError(f"{d}: not a results directory (no eval/, runs/, pathways/ or online/ in it)")
        if p.name in names:
            raise ValueError(
                f"{d} and {names[p.name]}: two results directories named {p.name!r} "
                f"(their figures would share one folder {p.name}/)"
            )
        names[p.name] = d
        evals = load_eval_results(p)
        evals["source"] = display_path(d)
        attempts, configs = load_attempts(p), {}
        if attempts.empty:
            attempts, configs = mlflow_attempts(p)
        sources.append(
            Source(
                p,
                display_path(d),
                evals,
                attempts,
                wall_times.get(p),
                configs,
                from_mlflow="resumed" in attempts.columns,
            )
        )
    unknown = set(wall_times) - {Path(d) for d in dirs}
    if unknown:
        raise ValueError(f"--wall-time {sorted(unknown)[0]}: not one of the results directories given")
    return sources


def combined_evals(sources: list[Source]) -> pd.DataFrame:
    frames = [s.evals for s in sources if not s.evals.empty]
    if not frames:
        return pd.DataFrame(columns=[*EVAL_COLUMNS, "source"])
    df = pd.concat(frames, ignore_index=True)
    where = df.groupby(["suite", "method", "algo"])["source"].unique()
    for key, srcs in where.items():
        if len(srcs) > 1:
            raise ValueError(f"{'/'.join(key)}: evaluated in both {srcs[0]} and {srcs[1]}; publish one of them")
    return df


def withhold_weak_experts(df: pd.DataFrame, sources: list[Source]) -> tuple[pd.DataFrame, dict]:
    """Normalized scores of a suite whose dataset expert is not clearly better than random
    (:func:`npf.evaluate.weak_expert`) never reach the page: returns the evaluations without them
    and ``{(suite, method, algo): (results label, suite, why)}`` for the runs held back."""
    from npf.evaluate import weak_expert

    withheld: dict[tuple[str, str, str], tuple[str, str, str]] = {}
    if df.empty:
        return df, withheld
    drop = pd.Series(False, index=df.index)
    for src in sources:
        for suite in sorted(set(df.loc[(df["source"] == src.label) & (df["metric"] == "normalized"), "suite"])):
            weak = []
            for p in layout.find(layout.dataset_manifest, src.path, suite=suite):
                try:
                    scores = json.loads(p.read_text())["scores"]
                    why = weak_expert(scores)
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{p}: not a dataset manifest ({type(e).__name__}: {e})") from None
                if why:
                    weak.append(p.stem)
            if not weak:
                continue
            sel = (df["source"] == src.label) & (df["suite"] == suite) & (df["metric"] == "normalized")
            why = (
                f"withheld: the expert of {', '.join(weak)} is not clearly better than random, "
                "so normalized scores mean nothing"
            )
            for key in set(zip(df.loc[sel, "suite"], df.loc[sel, "method"], df.loc[sel, "algo"])):
                withheld[key] = (src.label, suite, why)
            drop |= sel
    return df[~drop], withheld


# ------------------------------------------------------------------------------------ formatting
def fmt_num(v: float, digits: int = 1) -> str:
    return MISSING if v is None or math.isnan(v) else f"{v:.{digits}f}"


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


def summary_cell(sm: stats.Summary) -> str:
    spread = f" ± {sm.std:.1f}" if sm.seeds > 1 else ""
    return f"{sm.mean:.1f}{spread} ({sm.seeds} seed{'s' if sm.seeds > 1 else ''})"


def iqm_cell(sm: stats.Summary) -> str:
    return f"{sm.iqm:.1f} [{sm.ci_low:.1f}, {sm.ci_high:.1f}]"


# ------------------------------------------------------------------------------------ verdicts
def run_verdict(sm: stats.Summary | None, p: paper.PaperNumber | None) -> str:
    if sm is None:
        return NOT_MEASURED
    if p is None:
        return "no paper number"
    d = sm.mean - p.mean
    if abs(d) <= (sm.std if sm.seeds > 1 else 0.0) + (p.std or 0.0):
        return "reproduced"
    return f"not reproduced (Δ {d:+.1f})"


def row_verdict(measured: dict[str, tuple[stats.Summary, paper.PaperNumber]]) -> str:
    """``measured``: run label → (our summary, paper number) for the runs of a row that have both."""
    if not measured:
        return NOT_MEASURED
    verdicts = {k: run_verdict(sm, p) for k, (sm, p) in measured.items()}
    if all(v == "reproduced" for v in verdicts.values()):
        return "reproduced"
    if len(measured) >= 2:
        keys = list(measured)
        same = all(
            (measured[a][0].mean - measured[b][0].mean) * (measured[a][1].mean - measured[b][1].mean) > 0
            for i, a in enumerate(keys)
            for b in keys[i + 1 :]
        )
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


# ------------------------------------------------------------------------------------ budgets
def _budget_of(cfg: dict, suite: str, method: str, algo: str) -> str:
    if algo == "sac" or method in ONLINE_METHODS:
        o = cfg["online"]
        pre = f", pretraining {o['pretrain_steps']:,}" if method == "sac-npf" else ""
        return f"{o['total_steps']:,} env steps/task, batch {o['batch_size']}/task{pre}"
    off = offline_section(cfg, suite, algo)
    ex, ds = section(cfg, "experts", suite), section(cfg, "datasets", suite)
    return (
        f"{off['updates']:,} updates × batch {off['batch_size']}/task; {ds['episodes']} trajectories/task "
        f"from {ex['total_steps']:,}-step experts"
    )


TRAIN_RULES = ("train_offline", "train_online", "train_online_npf")
USEFUL = ("finished", "preempted")  # attempts whose work the result carries (failed ones are redone)


def run_provenance(src: Source | None, suite: str, method: str, algo: str, seeds: int) -> tuple[str, str]:
    """(budget, wall time of the run's training jobs, summed over seeds) from the attempt records
    (``seeds``: how many seeds were evaluated)."""
    if src is None or src.attempts.empty:
        return NOT_RECORDED, NOT_RECORDED
    a = src.attempts
    online = algo == "sac" or method in ONLINE_METHODS
    sel = a[
        a["rule"].isin(TRAIN_RULES)
        & (a["suite"] == suite)
        & (a["method"] == method)
        & (online | (a["algo"] == algo))
        & a["status"].isin(USEFUL)
    ]
    if sel.empty:
        return NOT_RECORDED, NOT_RECORDED
    budgets = []
    for h in dict.fromkeys(sel.loc[sel["status"] == "finished", "config_hash"].dropna()):
        cfg = src.config(h)
        b = NOT_RECORDED if cfg is None else _budget_of(cfg, suite, method, algo)
        budgets.append(b)
    budget = " / ".join(dict.fromkeys(budgets)) or NOT_RECORDED
    n = sel["seed"].nunique()
    which = f"{n} seed{'s' if n > 1 else ''}" if n >= seeds else f"{n} of {seeds} seeds recorded"
    if src.from_mlflow:
        bound = "≤ " if sel["resumed"].any() else ""
        return budget, f"{bound}{fmt_duration(sel['wall_s'].sum())} ({which}; MLflow run start to end)"
    return budget, f"{fmt_duration(sel['wall_s'].sum())} ({which})"


# ------------------------------------------------------------------------------------ tables
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


# ------------------------------------------------------------------------------------ figures
def write_page_figures(
    sources: list[Source], fig_dir: Path, withheld_suites: set[tuple[str, str]] = frozenset()
) -> dict[str, list[Path]]:
    """Every figure each results directory supports, PNG only, under ``fig_dir/<dir name>/``,
    at a resolution that keeps each under :data:`MAX_PNG_BYTES`; stale PNGs there are removed, and
    so are the learning curves (normalized scores) of ``withheld_suites`` ((label, suite) pairs)."""
    from npf.figures import CURVE_FIGURES, write_figures

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
    from npf.figures import CURVE_FIGURES

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
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ other regions
def statistics_region() -> str:
    return (
        f"- **mean ± std (n seeds)**: per seed the mean over tasks, then the mean and the population std "
        f"(ddof = {STD_DDOF}) over seeds; one seed shows its value alone.\n"
        "- **IQM [95 % CI]**: the interquartile mean of all seed × task scores (the mean of the middle "
        "50 %) and its 95 % percentile bootstrap interval, stratified over tasks (each bootstrap sample "
        f"redraws every task's seeds with replacement; {stats.RESAMPLES:,} samples, fixed seed), as the "
        "`rliable` package computes them (Agarwal et al. 2021). Computed with `scipy.stats.bootstrap` "
        "(one sample per task), not with rliable itself: see `npf/stats.py`. With 2–3 seeds the interval "
        "is wide and coarse; with one seed it is the point.\n"
        "- **Paper**: the published numbers (`npf/paper_numbers.py`), never mixed into our columns.\n"
        f"- {VERDICT_RULE}\n"
        "- **Budget** and **wall time**: from the records each job leaves in its results directory "
        "(`configs/<hash>.yaml`, `logs/**/*.attempts.jsonl`; `npf/provenance.py`); the wall time is the sum "
        "of the run's training attempts over its seeds (jobs may have run in parallel). A results directory "
        "from before these records takes both from its MLflow runs (config params; run start to end, marked "
        "≤ when a run was resumed, since the pause counts too).\n"
        "- **withheld**: a suite whose dataset expert is not clearly better than random "
        "(`npf.evaluate.weak_expert`) shows no normalized score and no learning curve."
    )


def budgets_region(sources: list[Source]) -> str:
    rows = []
    for s in sources:
        a = s.attempts[s.attempts["status"].isin(USEFUL)] if not s.attempts.empty else s.attempts
        hashes = list(dict.fromkeys(a["config_hash"].dropna())) if not a.empty else []
        suites = sorted(set(s.evals["suite"])) if not s.evals.empty else []
        rows.append(
            {
                "Results": f"`{s.label}`",
                "Suites evaluated": ", ".join(suites) or NOT_MEASURED,
                "Configs (hash)": ", ".join(f"`{h}`" for h in hashes) or NOT_RECORDED,
                "Jobs recorded": f"{len(a)}" + (" (MLflow runs)" if s.from_mlflow else ""),
                "Sum of job wall times": fmt_duration(a["wall_s"].sum()) if not a.empty else NOT_RECORDED,
                "End to end (measured)": fmt_duration(s.end_to_end_s),
            }
        )
    if not rows:
        return f"{NOT_MEASURED}."
    return (
        markdown_table(rows) + "\n\nSum of job wall times: every recorded attempt that finished or was "
        "preempted (resumed later); with `--cores 2` two jobs run at once, so the end-to-end time "
        "(`/usr/bin/time` around `snakemake`, given with `--wall-time`) is shorter."
    )


def per_task_region(df: pd.DataFrame) -> str:
    ts = [t for t in (table6(df), table7(df)) if t is not None] if not df.empty else []
    return "\n".join(t.to_markdown() for t in ts) if ts else f"{NOT_MEASURED}."


def table8_region(sources: list[Source]) -> str:
    frames = [c for c in (load_param_counts(s.path) for s in sources) if c is not None]
    t = table8(pd.concat(frames, ignore_index=True)) if frames else None
    return t.to_markdown() if t is not None else f"{NOT_MEASURED}."


def command_region(out: str, readme: str | None, dirs: list[str], wall_times: dict[str, float]) -> str:
    args = ["npf", "publish", "--out", out] + (["--readme", readme] if readme else [])
    for d, s in wall_times.items():
        args += ["--wall-time", f"{display_path(d)}={fmt_hms(s)}"]
    args += [display_path(d) for d in dirs]
    cmd = " ".join(a if a.startswith("$RESULTS/") else shlex.quote(a) for a in args)
    note = (
        "\n\n`$RESULTS`: the folder outside the work tree where the long runs keep their results."
        if any(a.startswith("$RESULTS/") for a in args)
        else ""
    )
    return f"```bash\n{cmd}\n```{note}"


# ------------------------------------------------------------------------------------ driver
def publish(
    dirs: list[str],
    out: str | Path,
    readme: str | Path | None = None,
    wall_times: dict[str, float] | None = None,
    fig_dir: str | Path | None = None,
) -> list[Path]:
    """Rebuild the page's regions (and the README's) from ``dirs``; returns the files written."""
    wall_times = wall_times or {}
    out = Path(out)
    fig_dir = Path(fig_dir) if fig_dir else out.with_suffix("")
    text = out.read_text() if out.exists() else SKELETON
    check_markers(text, str(out))
    if readme is not None:
        readme = Path(readme)
        if not readme.exists():
            raise FileNotFoundError(f"{readme}: no such README")
        rtext = readme.read_text()
        check_markers(rtext, str(readme))
        if BEGIN.format("table2-readme") not in rtext:
            raise ValueError(
                f"{readme}: no '{BEGIN.format('table2-readme')}' region (add it and its end "
                "comment where Table 2's rows should go)"
            )
    sources = load_sources(dirs, wall_times)
    df, withheld = withhold_weak_experts(combined_evals(sources), sources)
    t2 = build_table(df, "table2", sources, withheld=withheld)
    regions = {
        "command": command_region(out.as_posix(), None if readme is None else readme.as_posix(), dirs, wall_times),
        "statistics": statistics_region(),
        "budgets": budgets_region(sources),
        "table2": table_region(t2, "table2"),
        "table3": table_region(build_table(df, "table3", sources), "table3"),
        "table4": table_region(build_table(df, "table4", sources), "table4"),
        "per-task": per_task_region(df),
        "table8": table8_region(sources),
    }
    figs = write_page_figures(sources, fig_dir, {(lab, su) for lab, su, _ in withheld.values()})
    regions["figures"] = figures_region(figs, out.parent, {su for _, su, _ in withheld.values()})
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_if_changed(out, fill_regions(text, regions, str(out)))
    written = [out, *[p for ps in figs.values() for p in ps]]
    if readme is not None:
        link = _relative(out, readme.parent)
        _write_if_changed(readme, fill_regions(rtext, {"table2-readme": readme_region(t2, link)}, str(readme)))
        written.append(readme)
    return written


def _relative(target: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
