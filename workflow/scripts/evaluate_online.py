from _stage import stage

from npf.online.evaluate import evaluate_online_run

with stage(snakemake):
    w = snakemake.wildcards
    evaluate_online_run(snakemake.config, w.suite, w.method, int(w.seed), snakemake.input.final, snakemake.output[0])
