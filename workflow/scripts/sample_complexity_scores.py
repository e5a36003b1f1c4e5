from _stage import stage

from npf.sample_complexity import write_scores

with stage(snakemake):
    frame = write_scores(list(snakemake.input), snakemake.output[0], sizes=snakemake.params.sizes)
    print(f"wrote {len(frame)} rows to {snakemake.output[0]}")
