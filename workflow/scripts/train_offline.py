from pathlib import Path

from _stage import stage

from npf.stages.offline import train_offline

with stage(snakemake):
    w = snakemake.wildcards
    masks = snakemake.input.masks if w.method == "npf" else None
    size = w.get("size")  # sample-complexity runs: the first {size} trajectories per task
    train_offline(
        snakemake.config,
        w.suite,
        w.method,
        w.algo,
        int(w.seed),
        Path(snakemake.output.final).parent,
        pathways_path=masks,
        max_episodes=None if size is None else int(size),
    )
