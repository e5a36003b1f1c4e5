from _stage import stage

from npf.stages.offline import evaluate_run

with stage(snakemake):
    w = snakemake.wildcards
    evaluate_run(snakemake.config, w.suite, w.method, w.algo, int(w.seed), snakemake.input.final, snakemake.output[0])
