"""The paper's figures: shared style and saving (``style``), curves over seeds (``bands``), the online
figures 3, 4, 13, 14 (``online``), the offline figures 5, 10–12 (``offline``), pathway overlap 6, 15
(``overlap``), and every figure of a results directory (``build``)."""
