from _stage import stage

from npf.config import section
from npf.stages.dataset import collect_dataset

with stage(snakemake):
    w = snakemake.wildcards
    policy = snakemake.input.get("policy") or None  # none: experts.source scripted
    collect_dataset(
        snakemake.config,
        w.suite,
        w.task,
        policy,
        snakemake.output.data,
        expert_seed=section(snakemake.config, "datasets", w.suite)["expert_seed"],
    )
