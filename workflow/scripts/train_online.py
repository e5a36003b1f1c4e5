from pathlib import Path

from _stage import stage

from npf.online.stages import train_online

with stage(snakemake):
    w = snakemake.wildcards
    out = snakemake.output
    train_online(
        snakemake.config,
        w.suite,
        w.method,
        int(w.seed),
        Path(out.final).parent,
        grad_norms_out=getattr(out, "grad_norms", None),
        curves_out=getattr(out, "curves", None),
    )
