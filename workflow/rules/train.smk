rule train_offline:
    """Synchronous multitask offline training: NPF, one-hot MT or multi-head MT (resumable)."""
    input:
        data=lambda wc: dataset_files(wc.suite),
        masks=lambda wc: (
            f"{RESULTS}/pathways/{wc.suite}/{wc.algo}/seed{wc.seed}/masks.pt"
            if wc.method == "npf"
            else []
        ),
    output:
        final=f"{RESULTS}/runs/{{suite}}/{{method}}-{{algo}}/seed{{seed}}/final.pt",
        curve=f"{RESULTS}/runs/{{suite}}/{{method}}-{{algo}}/seed{{seed}}/metrics.csv",
    log:
        f"{RESULTS}/logs/train_offline/{{suite}}/{{method}}-{{algo}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
        method="npf|mt|mhmt",
        algo="bcq|iql",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 360 * attempt,
        mem_mb=lambda wc, input: mem_mb(config, "train_offline", suite=wc.suite, algo=wc.algo, input_mb=input.size_mb),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_offline.py"
