# Online multitask SAC (npf.online): SAC+NPF with DAPD and MT10 pretraining, MT-SAC,
# MH-SAC, PCGrad (Table 4, Fig. 4) and the single-task DAPD ablation (Figs. 3, 13, 14).
# Targets: online_targets() in common.smk (npf.online.settings.online_target_files).

from npf.envs import is_success_suite


# eval/{suite}/{method}-sac/... also matches the offline evaluate rule's pattern
ruleorder: online_evaluate > evaluate


rule train_online:
    """Online multitask baselines: MT-SAC, MH-SAC, PCGrad (resumable)."""
    output:
        final=f"{RESULTS}/online/runs/{{suite}}/{{method}}/seed{{seed}}/final.pt",
        curve=f"{RESULTS}/online/runs/{{suite}}/{{method}}/seed{{seed}}/metrics.csv",
    log:
        f"{RESULTS}/logs/train_online/{{suite}}/{{method}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
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
        final=f"{RESULTS}/online/runs/{{suite}}/{{method}}/seed{{seed}}/final.pt",
        curve=f"{RESULTS}/online/runs/{{suite}}/{{method}}/seed{{seed}}/metrics.csv",
        grad_norms=f"{RESULTS}/online/grad_norms/{{suite}}/{{method}}/seed{{seed}}.csv",
        curves=f"{RESULTS}/online/pretrain_curves/{{suite}}/{{method}}/seed{{seed}}.csv",
    log:
        f"{RESULTS}/logs/train_online/{{suite}}/{{method}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
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
        final=f"{RESULTS}/online/runs/{{suite}}/{{method}}/seed{{seed}}/final.pt",
        # return suites are normalized with the datasets' reference scores (MT10: success %)
        refs=lambda wc: [] if is_success_suite(wc.suite) else dataset_files(wc.suite),
    output:
        f"{RESULTS}/eval/{{suite}}/{{method}}-sac/seed{{seed}}.json",
    log:
        f"{RESULTS}/logs/online_evaluate/{{suite}}/{{method}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
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
        curve=f"{RESULTS}/online/dapd/{{task}}/{{variant}}/seed{{seed}}/metrics.csv",
        tidy=f"{RESULTS}/online/dapd_curves/{{task}}/{{variant}}/seed{{seed}}.csv",
    log:
        f"{RESULTS}/logs/dapd_ablation/{{task}}/{{variant}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
        variant=r"single-shot|dense|dapd(-M\d+)?(-nothreshold)?",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 1440 * attempt,
        mem_mb=mem_mb(config, "dapd_ablation"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/dapd_ablation.py"
