from _stage import stage

from npf.stages.offline import discover_pathways

with stage(snakemake):
    w = snakemake.wildcards
    discover_pathways(snakemake.config, w.suite, w.algo, int(w.seed), snakemake.output.masks)
