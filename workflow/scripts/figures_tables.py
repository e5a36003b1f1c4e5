from pathlib import Path

from _stage import stage

from npf.figures import write_figures
from npf.tables import write_tables

with stage(snakemake):
    results = snakemake.config["results_dir"]
    for out in (snakemake.output.figures, snakemake.output.tables):
        Path(out).mkdir(parents=True, exist_ok=True)  # an empty folder when a suite has no inputs yet
    figs = write_figures(results, snakemake.output.figures)
    tabs = write_tables(results, snakemake.output.tables)
    print(f"wrote {len(figs)} figure files and {len(tabs)} table files")
