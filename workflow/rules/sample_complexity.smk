# Fig. 5, sample complexity (offline.dataset_sizes): the offline stages again, each run on only the
# first {size} trajectories of every task's dataset (the datasets are not re-collected). NPF's
# pathways are discovered from the same subset. A size equal to datasets.episodes is the main run. Same scripts as the main runs; the size wildcard
# tells them to subset. Targets: sample_complexity_targets() in common.smk.


rule sample_complexity_pathways:
    """SNIP pathways from the first {size} trajectories of each task."""
    input:
        data=lambda wc: dataset_files(wc.suite),
    output:
        masks=wildcards(layout.sc_masks),
        summary=wildcards(layout.sc_masks_summary),
    log:
        layout.log(RESULTS, "sample_complexity/pathways", "{suite}/{algo}/n{size}/seed{seed}"),
    resources:
        runtime=lambda wc, attempt: 30 * attempt,
        mem_mb=8000,
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/discover_pathways.py"


rule sample_complexity_train:
    """One offline run on the first {size} trajectories of each task (resumable)."""
    input:
        data=lambda wc: dataset_files(wc.suite),
        masks=lambda wc: (
rules.sample_complexity_pathways.output.masks.format(**dict(wc.items())) if wc.method == "npf" else []
        ),
    output:
        final=wildcards(layout.sc_final),
        curve=wildcards(layout.sc_curve),
    log:
        layout.log(RESULTS, "sample_complexity/train", "{suite}/{method}-{algo}/n{size}/seed{seed}"),
    wildcard_constraints:
        method="npf|mt|mhmt",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 360 * attempt,
        mem_mb=16000,
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_offline.py"


rule sample_complexity_evaluate:
    """Final evaluation of a sample-complexity run (JSON as the main runs', plus dataset_size)."""
    input:
        final=rules.sample_complexity_train.output.final,
        data=lambda wc: dataset_files(wc.suite),
    output:
        wildcards(layout.sc_eval_json),
    log:
        layout.log(RESULTS, "sample_complexity/evaluate", "{suite}/{method}-{algo}/n{size}/seed{seed}"),
    resources:
        runtime=lambda wc, attempt: 60 * attempt,
        mem_mb=4000,
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule sample_complexity_scores:
    """Fig. 5's tidy table: one row per run x task (dataset_size, method, algo, seed, task, score)."""
    input:
        [path for path, _ in sample_complexity_evals()],
    output:
        layout.sc_scores(RESULTS),
    params:
        sizes=[size for _, size in sample_complexity_evals()],
    log:
        layout.log(RESULTS, "sample_complexity", "scores"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample_complexity_scores.py"
