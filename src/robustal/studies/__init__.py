"""Many runs at once: a study's grid (:mod:`~robustal.studies.study`), running it into its folder
(:mod:`~robustal.studies.study_run`), its executors, local or on Ray (:mod:`~robustal.studies.executors`,
:mod:`~robustal.studies.ray_cluster`, :mod:`~robustal.studies._lifeline`), its MLflow run
(:mod:`~robustal.studies.study_tracking`), the report of a study's or run's folder (:mod:`~robustal.studies.report`:
it reads the study copy, so it sits here rather than in ``robustal.reports``), and retraining the picks of stored
runs from scratch (:mod:`~robustal.studies.retrain`). The top library layer: only the CLI imports it. Modules are
imported by their own path, so importing the package costs nothing.
"""
