# Fig. 5, sample complexity (offline.dataset_sizes): the offline stages again, each run on only the
# first {size} trajectories of every task's dataset (the datasets are not re-collected). NPF's
# pathways are discovered from the same subset. A size equal to datasets.episodes is the main run. Same scripts as the main runs; the size wildcard
# tells them to subset. Targets: sample_complexity_targets() in common.smk.

SC = f"{RESULTS}/sample_complexity"


rule sample_complexity_pathways:
    """SNIP pathways from the first {size} trajectories of each task."""
    input:
        data=lambda wc: dataset_files(wc.suite),
    output:
        masks=f"{SC}/pathways/{{suite}}/{{algo}}/n{{size}}/seed{{seed}}/masks.pt",
        summary=f"{SC}/pathways/{{suite}}/{{algo}}/n{{size}}/seed{{seed}}/masks.json",
    log:
        f"{RESULTS}/logs/sample_complexity/pathways/{{suite}}/{{algo}}/n{{size}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
        size=r"\d+",
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
            f"{SC}/pathways/{wc.suite}/{wc.algo}/n{wc.size}/seed{wc.seed}/masks.pt"
            if wc.method == "npf"
            else []
        ),
    output:
        final=f"{SC}/runs/{{suite}}/{{method}}-{{algo}}/n{{size}}/seed{{seed}}/final.pt",
        curve=f"{SC}/runs/{{suite}}/{{method}}-{{algo}}/n{{size}}/seed{{seed}}/metrics.csv",
    log:
        f"{RESULTS}/logs/sample_complexity/train/{{suite}}/{{method}}-{{algo}}/n{{size}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
        size=r"\d+",
        method="npf|mt|mhmt",
        algo="bcq|iql",
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
        final=f"{SC}/runs/{{suite}}/{{method}}-{{algo}}/n{{size}}/seed{{seed}}/final.pt",
        data=lambda wc: dataset_files(wc.suite),
    output:
        f"{SC}/eval/{{suite}}/{{method}}-{{algo}}/n{{size}}/seed{{seed}}.json",
    log:
        f"{RESULTS}/logs/sample_complexity/evaluate/{{suite}}/{{method}}-{{algo}}/n{{size}}/seed{{seed}}.log",
    wildcard_constraints:
        seed=r"\d+",
        size=r"\d+",
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
        f"{SC}/scores.csv",
    params:
        sizes=[size for _, size in sample_complexity_evals()],
    log:
        f"{RESULTS}/logs/sample_complexity/scores.log",
    threads: 1
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample_complexity_scores.py"
