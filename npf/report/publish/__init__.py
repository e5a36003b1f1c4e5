"""``npf publish``: the results page and the README's Table 2 rows from results directories. The page
(``page``) is assembled from generated regions (``regions``): the run tables (``run_tables``) with
their verdicts (``verdicts``) and provenance (``sources``, ``durations``), and the PNGs
(``page_figures``)."""
