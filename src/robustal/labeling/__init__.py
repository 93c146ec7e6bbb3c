"""A person's labels: the labeling project folder and its requests (:mod:`~robustal.labeling.labeling`), answer
files in every format read (:mod:`~robustal.labeling.label_formats`) and checked
(:mod:`~robustal.labeling.label_answers`, :mod:`~robustal.labeling.label_files`), where each label came from
(:mod:`~robustal.labeling.label_origin`), the labels exported as a dataset (:mod:`~robustal.labeling.label_export`),
and the oracle the loop asks for labels, simulated or a person (:mod:`~robustal.labeling.oracle`). It sits on
``robustal.data`` and ``robustal.storage``. Modules are imported by their own path, so importing the package costs
nothing.
"""
