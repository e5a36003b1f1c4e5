from pathlib import Path

from _stage import stage

from npf.online.stages import train_dapd_variant

with stage(snakemake):
    w = snakemake.wildcards
    train_dapd_variant(
        snakemake.config,
        w.task,
        w.variant,
        int(w.seed),
        Path(snakemake.output.curve).parent,
        curves_out=snakemake.output.tidy,
    )
