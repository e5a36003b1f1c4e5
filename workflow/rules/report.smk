REPORTS = config["reports_dir"]


rule figures_tables:
    """Paper figures and tables from every finished run (only those whose inputs are configured)."""
    input:
        evals=eval_targets(),
        pathways=pathway_summaries(),
        online=online_targets(),
        sample_complexity=sample_complexity_targets(),
    output:
        figures=report(
            directory(f"{REPORTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
        tables=report(
            directory(f"{REPORTS}/tables"),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        f"{RESULTS}/logs/report/figures_tables.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/figures_tables.py"
