from _stage import stage

from npf.config import section
from npf.stages.dataset import collect_dataset

with stage(snakemake):
    w = snakemake.wildcards
    collect_dataset(snakemake.config, w.suite, w.task, snakemake.input.policy, snakemake.output.data,
                    expert_seed=section(snakemake.config, "datasets", w.suite)["expert_seed"])
