"""What stored results show: results collected from a store (:mod:`~robustal.reports.results`), statistics and
paired comparisons (:mod:`~robustal.reports.stats`, :mod:`~robustal.reports.comparisons`), tables and figures,
the final-attack, pool and picks sections of a report, and a run's stored models loaded for evaluation or export
(:mod:`~robustal.reports.stored_model`). It reads what the loop layer stored and sits below ``robustal.studies``,
which assembles the report. Modules are imported by their own path, so importing the package costs nothing.
"""
