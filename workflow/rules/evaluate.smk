rule evaluate:
    """Final evaluation: normalized score (gym suites) or success % (MT10) per task."""
    input:
        final=f"{RESULTS}/runs/{{suite}}/{{method}}-{{algo}}/seed{{seed}}/final.pt",
        data=lambda wc: dataset_files(wc.suite),
    output:
        f"{RESULTS}/eval/{{suite}}/{{method}}-{{algo}}/seed{{seed}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{suite}}/{{method}}-{{algo}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
    resources:
        runtime=lambda wc, attempt: 60 * attempt,
        mem_mb=mem_mb(config, "evaluate"),
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"
