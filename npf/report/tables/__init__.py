"""The paper's tables from a results directory: scores and their statistics (``scores``), the rendered
table (``table``), Tables 2, 3, 4, 6, 7 and the writer of them all (``paper_tables``), Table 8
(``weights``)."""
