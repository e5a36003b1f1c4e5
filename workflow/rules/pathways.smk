rule pathways:
    """SNIP neural pathways (one mask per task per network) from each task's dataset."""
    input:
        data=lambda wc: dataset_files(wc.suite),
    output:
        masks=wildcards(layout.masks),
        summary=wildcards(layout.masks_summary),
    log:
        layout.log(RESULTS, "pathways", "{suite}/{algo}/seed{seed}"),
    resources:
        runtime=lambda wc, attempt: 30 * attempt,
        mem_mb=mem_mb(config, "pathways"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/discover_pathways.py"
