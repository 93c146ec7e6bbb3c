"""Runs from a spec live in :mod:`robustal.loop.experiment`; this module keeps the public import path."""
from robustal.loop.experiment import (
    RunSpec,
    model_factory,
    resolve,
    run_experiment,
)

__all__ = ["RunSpec", "model_factory", "resolve", "run_experiment"]
