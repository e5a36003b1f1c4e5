"""The results directories a page is built from: their evaluations (weak experts' normalized scores
held back) and, per run, the budget and the training wall time their jobs recorded
(:mod:`npf.provenance`, or the MLflow runs for a directory from before those records)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from npf import layout
from npf.config import offline_section, section
from npf.provenance import load_attempts, load_config, mlflow_attempts
from npf.report.labels import ONLINE_METHODS
from npf.report.publish.durations import NOT_RECORDED, fmt_duration
from npf.report.tables.scores import EVAL_COLUMNS, load_eval_results


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


def _budget_of(cfg: dict, suite: str, method: str, algo: str) -> str:
    if algo == "sac" or method in ONLINE_METHODS:
        o = cfg["online"]
        pre = f", pretraining {o['pretrain_steps']:,}" if method == "sac-npf" else ""
        return f"{o['total_steps']:,} env steps/task, batch {o['batch_size']}/task{pre}"
    off = offline_section(cfg, suite, algo)
    ex, ds = section(cfg, "experts", suite), section(cfg, "datasets", suite)
    expert = (
        f"scripted experts (action noise σ {ex['noise_std']:g})"
        if ex.get("source") == "scripted"
        else f"{ex['total_steps']:,}-step experts"
    )
    data = f"{ds['episodes']} trajectories/task from {expert}"
    return f"{off['updates']:,} updates × batch {off['batch_size']}/task; {data}"


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
