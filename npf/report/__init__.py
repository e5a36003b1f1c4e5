"""The report: the paper's tables (:mod:`npf.report.tables`) and figures (:mod:`npf.report.figures`)
from a results directory, and the results page built from several (:mod:`npf.report.publish`)."""
