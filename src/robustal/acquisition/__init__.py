"""Acquisition functions by name; pure score functions in :mod:`robustal.acquisition.scores`."""

# Import order = registration order = list_acquisitions() order.
# isort: off
from robustal.acquisition import functions as _functions  # noqa: F401  (registers random, entropy, dre)
from robustal.acquisition import uncertainty as _uncertainty  # noqa: F401  (margin, least-confidence, gini)
from robustal.acquisition import bayesian as _bayesian  # noqa: F401  (entropy-dropout, bald)
from robustal.acquisition import kcenter as _kcenter  # noqa: F401  (k-center)
from robustal.acquisition import gradients as _gradients  # noqa: F401  (egl, dfal)
from robustal.acquisition import mcp as _mcp  # noqa: F401  (mcp)
from robustal.acquisition import badge as _badge  # noqa: F401  (badge)
from robustal.acquisition import typiclust as _typiclust  # noqa: F401  (typiclust)
from robustal.acquisition import balanced as _balanced  # noqa: F401  (dre-balanced)
from robustal.acquisition import boundary as _boundary  # noqa: F401  (robust-boundary)
# isort: on
from robustal.acquisition.base import (
    ACQUISITIONS,
    Acquisition,
    ScoreAcquisition,
    Selection,
    SelectionContext,
    create_acquisition,
    list_acquisitions,
    register_acquisition,
)
from robustal.acquisition.inference import MCPredictions, Predictions, mc_predict, predict

__all__ = ["ACQUISITIONS", "Acquisition", "MCPredictions", "Predictions", "ScoreAcquisition", "Selection",
           "SelectionContext", "create_acquisition", "list_acquisitions", "mc_predict", "predict",
           "register_acquisition"]
