rule datasets:
    """Collect the expert's stochastic trajectories (SAC expert, or scripted controller + noise) and the
    random/expert reference scores."""
    input:
        policy=lambda wc: expert_policy(wc.suite, wc.task),
    output:
        data=wildcards(layout.dataset),
        manifest=wildcards(layout.dataset_manifest),
    log:
        layout.log(RESULTS, "datasets", "{suite}/{task}"),
    resources:
        runtime=lambda wc, attempt: 60 * attempt,
        mem_mb=mem_mb(config, "datasets"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/collect_dataset.py"
