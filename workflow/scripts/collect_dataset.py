from _stage import stage

from npf.stages.dataset import collect_dataset

with stage(snakemake):
    w = snakemake.wildcards
    collect_dataset(snakemake.config, w.suite, w.task, snakemake.input.policy, snakemake.output.data,
                    expert_seed=snakemake.config["datasets"]["expert_seed"])
