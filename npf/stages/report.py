"""Stage ``figures_tables``: the paper's figures and tables from every finished run under
``results_dir``, and one MLflow run per suite holding them, browsable next to that suite's runs."""

from __future__ import annotations

from pathlib import Path

from npf import layout
from npf.report.figures.build import write_figures
from npf.report.tables.paper_tables import write_tables
from npf.report.tables.weights import write_table8_pathways
from npf.tracking import stage_tracker


def report_suites(cfg: dict) -> list[str]:
    """The suites whose experiment gets the report: the offline suites, or for an online-only config
    the online suites and the DAPD ablation's."""
    online = cfg["online"]
    ablation = online["dapd_ablation"]
    return cfg["suites"] or list(
        dict.fromkeys(online["suites"] + ([ablation["suite"]] if ablation["variants"] else []))
    )


def write_report(cfg: dict, figures_dir: str | Path, tables_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """Write the figures and tables (an empty folder when a suite has no inputs yet) and log them
    to each report suite's MLflow run; returns (figure files, table files)."""
    results = cfg["results_dir"]
    out_dirs = {"figures": Path(figures_dir), "tables": Path(tables_dir)}
    for d in out_dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    figs = write_figures(results, figures_dir, scale=cfg["scale_caption"])
    tabs = write_tables(results, tables_dir, scale=cfg["scale_caption"])
    tabs += write_table8_pathways(results, tables_dir)
    files = [
        (folder, p)
        for folder, d in out_dirs.items()
        for p in sorted(d.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]  # not Snakemake's .snakemake_timestamp
    for suite in report_suites(cfg):
        tracker = stage_tracker(
            cfg,
            "figures_tables",
            suite,
            f"report/{suite}",
            Path(layout.report_run_id(results, suite)),
            {"suite": suite},
            fresh=True,
        )
        status = "FAILED"
        try:
            tracker.log_metrics({"report/figure_files": len(figs), "report/table_files": len(tabs)}, 0)
            for folder, p in files:
                tracker.log_artifact(p, folder)
            status = "FINISHED"
        finally:
            tracker.close(status)
    return figs, tabs
