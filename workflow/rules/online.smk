# Online multitask SAC (npf.online): SAC+NPF with DAPD and MT10 pretraining, MT-SAC,
# MH-SAC, PCGrad (Table 4, Fig. 4) and the single-task DAPD ablation (Figs. 3, 13, 14).
# Targets: online_targets() in common.smk (npf.online.settings.online_target_files).

from npf.envs import is_success_suite


rule train_online:
    """Online multitask baselines: MT-SAC, MH-SAC, PCGrad (resumable)."""
    output:
        final=wildcards(layout.online_final),
        curve=wildcards(layout.online_curve),
    log:
        layout.log(RESULTS, "train_online", "{suite}/{method}/seed{seed}"),
    wildcard_constraints:
        method="mt-sac|mh-sac|pcgrad",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 1440 * attempt,
        mem_mb=mem_mb(config, "train_online"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_online.py"


rule train_online_npf:
    """SAC+NPF online (DAPD; pretraining of per-task copies then merge), with the per-pathway
    gradient norms and success curves of Fig. 4 (resumable)."""
    output:
        final=wildcards(layout.online_final),
        curve=wildcards(layout.online_curve),
        grad_norms=wildcards(layout.grad_norms),
        curves=wildcards(layout.pretrain_curves),
    log:
        layout.log(RESULTS, "train_online", "{suite}/{method}/seed{seed}"),
    wildcard_constraints:
        method="sac-npf|sac-npf-nopretrain",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 1440 * attempt,
        mem_mb=mem_mb(config, "train_online_npf"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_online.py"


rule online_evaluate:
    """Final evaluation of an online run: success % per task (MT10), eval JSON as offline."""
    input:
        final=rules.train_online.output.final,  # train_online_npf writes the same path for SAC+NPF
        # return suites are normalized with the datasets' reference scores (MT10: success %)
        refs=lambda wc: [] if is_success_suite(wc.suite) else dataset_files(wc.suite),
    output:
        wildcards(layout.eval_json, algo="sac"),
    log:
        layout.log(RESULTS, "online_evaluate", "{suite}/{method}/seed{seed}"),
    wildcard_constraints:
        method="sac-npf|mt-sac|mh-sac|pcgrad",
    resources:
        runtime=lambda wc, attempt: 60 * attempt,
        mem_mb=mem_mb(config, "online_evaluate"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate_online.py"


rule dapd_ablation:
    """Single-task SAC+NPF with one DAPD variant: single-shot, dapd-M<k>, dapd-nothreshold, dense."""
    output:
        curve=wildcards(layout.dapd_curve),
        tidy=wildcards(layout.dapd_tidy_curve),
    log:
        layout.log(RESULTS, "dapd_ablation", "{task}/{variant}/seed{seed}"),
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 1440 * attempt,
        mem_mb=mem_mb(config, "dapd_ablation"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/dapd_ablation.py"
