rule train_offline:
    """Synchronous multitask offline training: NPF, one-hot MT or multi-head MT (resumable)."""
    input:
        data=lambda wc: dataset_files(wc.suite),
        masks=lambda wc: (
rules.pathways.output.masks.format(**dict(wc.items())) if wc.method == "npf" else []
        ),
    output:
        final=wildcards(layout.offline_final),
        curve=wildcards(layout.offline_curve),
    log:
        layout.log(RESULTS, "train_offline", "{suite}/{method}-{algo}/seed{seed}"),
    wildcard_constraints:
        method="npf|mt|mhmt",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 360 * attempt,
        mem_mb=lambda wc, input: mem_mb(config, "train_offline", suite=wc.suite, algo=wc.algo, input_mb=input.size_mb),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_offline.py"
