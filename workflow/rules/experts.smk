rule experts:
    """Train a single-task SAC expert (resumes from its checkpoint after a kill)."""
    output:
        policy=wildcards(layout.expert_policy),
        metrics=wildcards(layout.expert_metrics),
    log:
        layout.log(RESULTS, "experts", "{suite}/{task}/seed{seed}"),
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 240 * attempt,
        mem_mb=mem_mb(config, "experts"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_expert.py"
