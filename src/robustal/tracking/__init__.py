"""Experiment tracking: mirroring runs and their stages to MLflow (:mod:`~robustal.tracking.tracking`) and the
tracking server's own store (:mod:`~robustal.tracking.tracking_store`). It sits on ``robustal.data`` and
``robustal.storage``; MLflow is imported only when a tracker is used, so importing the package costs nothing.
"""
