from _stage import stage

from npf.stages.offline import evaluate_run

with stage(snakemake):
    w = snakemake.wildcards
    size = w.get("size")  # sample-complexity runs: the first {size} trajectories per task
    evaluate_run(
        snakemake.config,
        w.suite,
        w.method,
        w.algo,
        int(w.seed),
        snakemake.input.final,
        snakemake.output[0],
        dataset_size=None if size is None else int(size),
    )
