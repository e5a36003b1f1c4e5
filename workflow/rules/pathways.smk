rule pathways:
    """SNIP neural pathways (one mask per task per network) from each task's dataset."""
    input:
        data=lambda wc: dataset_files(wc.suite),
    output:
        masks=f"{RESULTS}/pathways/{{suite}}/{{algo}}/seed{{seed}}/masks.pt",
        summary=f"{RESULTS}/pathways/{{suite}}/{{algo}}/seed{{seed}}/masks.json",
    log:
        f"{RESULTS}/logs/pathways/{{suite}}/{{algo}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    resources:
        runtime=lambda wc, attempt: 30 * attempt,
        mem_mb=mem_mb(config, "pathways"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/discover_pathways.py"
