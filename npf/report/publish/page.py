"""``npf publish``: the results page (``docs/results.md``) and its PNGs from results directories.

The page is filled region by region: the generator rewrites only the text between
``<!-- npf:begin NAME -->`` and ``<!-- npf:end NAME -->`` and leaves everything else (notes
written by hand) alone; a region the page lacks is appended at its end. A missing page starts
from :data:`~npf.report.publish.regions.SKELETON`. The README gets Table 2's rows the same way
(region ``table2-readme``).

For every run (suite, method, algo) the tables give, from its evaluation JSONs
(:func:`npf.report.tables.scores.load_eval_results`):

- mean ± std over seeds of the per-seed mean over tasks, with the seed count (:mod:`npf.report.tables.scores`'
  convention), the interquartile mean of all seed × task scores and its 95 % stratified
  bootstrap interval (:mod:`npf.stats`);
- the paper's number in its own column (:mod:`npf.paper_numbers`);
- the budget it was trained with (from the resolved config each job recorded, :mod:`npf.provenance`)
  and its wall time (the sum of its training jobs' recorded attempts);
- a verdict by :data:`~npf.report.publish.verdicts.VERDICT_RULE`.

Nothing is made up: a run without evaluation JSONs is "not measured yet", a budget or wall time
without records is "not recorded".
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from npf import stats
from npf.report.publish.durations import NOT_RECORDED, fmt_duration, fmt_hms
from npf.report.publish.page_figures import figures_region, write_page_figures
from npf.report.publish.regions import BEGIN, SKELETON, check_markers, fill_regions
from npf.report.publish.run_tables import build_table, markdown_table, readme_region, table_region
from npf.report.publish.sources import USEFUL, Source, combined_evals, display_path, load_sources, withhold_weak_experts
from npf.report.publish.verdicts import NOT_MEASURED, VERDICT_RULE
from npf.report.tables.paper_tables import table4_per_task, table6, table7
from npf.report.tables.scores import STD_DDOF
from npf.report.tables.weights import load_param_counts, table8


# ------------------------------------------------------------------------------------ regions
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
                "Suites evaluated": ", ".join(suites) or ("none (no `evaluate` job)" if len(a) else NOT_MEASURED),
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
    ts = [t for t in (table6(df), table7(df), table4_per_task(df)) if t is not None] if not df.empty else []
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
