from pathlib import Path

from _stage import stage

from npf.figures import write_figures
from npf.tables import write_table8_pathways, write_tables
from npf.tracking import stage_tracker

with stage(snakemake):
    cfg = snakemake.config
    results = cfg["results_dir"]
    for out in (snakemake.output.figures, snakemake.output.tables):
        Path(out).mkdir(parents=True, exist_ok=True)  # an empty folder when a suite has no inputs yet
    figs = write_figures(results, snakemake.output.figures, scale=cfg["scale_caption"])
    tabs = write_tables(results, snakemake.output.tables, scale=cfg["scale_caption"])
    tabs += write_table8_pathways(results, snakemake.output.tables)
    print(f"wrote {len(figs)} figure files and {len(tabs)} table files")
    # one run per suite's experiment, so the figures and tables are browsable next to that suite's runs
    out_dirs = {"figures": Path(snakemake.output.figures), "tables": Path(snakemake.output.tables)}
    files = [
        (folder, p)
        for folder, d in out_dirs.items()
        for p in sorted(d.iterdir())
        if p.is_file() and not p.name.startswith(".")
    ]  # not Snakemake's .snakemake_timestamp
    run_ids = Path(results) / "report"
    online = cfg["online"]
    report_suites = cfg["suites"] or list(
        dict.fromkeys(  # an online-only config: the online suites
            online["suites"] + ([online["dapd_ablation"]["suite"]] if online["dapd_ablation"]["variants"] else [])
        )
    )
    for suite in report_suites:
        tracker = stage_tracker(
            cfg,
            "figures_tables",
            suite,
            f"report/{suite}",
            run_ids / f"{suite}.mlflow_run_id.txt",
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
