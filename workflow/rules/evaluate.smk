rule evaluate:
    """Final evaluation: normalized score (gym suites) or success % (MT10) per task."""
    input:
        final=rules.train_offline.output.final,
        data=lambda wc: dataset_files(wc.suite),
    output:
        wildcards(layout.eval_json),
    log:
        layout.log(RESULTS, "evaluate", "{suite}/{method}-{algo}/seed{seed}"),
    resources:
        runtime=lambda wc, attempt: 60 * attempt,
        mem_mb=mem_mb(config, "evaluate"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"
