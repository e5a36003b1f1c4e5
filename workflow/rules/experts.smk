rule experts:
    """Train a single-task SAC expert (resumes from its checkpoint after a kill)."""
    output:
        policy=f"{RESULTS}/experts/{{suite}}/{{task}}/seed{{seed}}/policy.pt",
        metrics=f"{RESULTS}/experts/{{suite}}/{{task}}/seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/logs/experts/{{suite}}/{{task}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    resources:
        gpu=1,
        runtime=lambda wc, attempt: 240 * attempt,
        mem_mb=mem_mb(config, "experts"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_expert.py"
