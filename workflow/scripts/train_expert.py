from pathlib import Path

from _stage import stage

from npf.stages.expert import train_expert

with stage(snakemake):
    w = snakemake.wildcards
    train_expert(snakemake.config, w.suite, w.task, int(w.seed), Path(snakemake.output.policy).parent)
