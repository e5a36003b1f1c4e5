from _stage import stage

from npf.stages.offline import discover_pathways

with stage(snakemake):
    w = snakemake.wildcards
    size = w.get("size")  # sample-complexity runs: the first {size} trajectories per task
    discover_pathways(
        snakemake.config,
        w.suite,
        w.algo,
        int(w.seed),
        snakemake.output.masks,
        max_episodes=None if size is None else int(size),
    )
