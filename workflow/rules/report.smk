rule figures_tables:
    """Paper figures and tables from every finished run (only those whose inputs are configured)."""
    input:
        evals=eval_targets(),
        pathways=pathway_summaries(),
        online=online_targets(),
        sample_complexity=sample_complexity_targets(),
    output:
        figures=report(
            directory(layout.figures_dir(REPORTS)),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
        tables=report(
            directory(layout.tables_dir(REPORTS)),
            patterns=["{name}.html"],
            caption="../report/tables.rst",
            category="Tables",
        ),
    log:
        layout.log(RESULTS, "report", "figures_tables"),
    conda:
        "../../environment.yml"
    script:
        "../scripts/figures_tables.py"
