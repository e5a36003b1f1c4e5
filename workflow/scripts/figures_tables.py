from _stage import stage

from npf.stages.report import write_report

with stage(snakemake):
    figs, tabs = write_report(snakemake.config, snakemake.output.figures, snakemake.output.tables)
    print(f"wrote {len(figs)} figure files and {len(tabs)} table files")
