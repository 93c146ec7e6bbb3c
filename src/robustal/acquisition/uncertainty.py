"""Uncertainty sampling on the softmax of one forward pass over the unlabeled pool: margin, least-confidence, gini.

Each is a :class:`~robustal.acquisition.base.ScoreAcquisition` over a pure score of
:mod:`robustal.acquisition.scores`; the ``n`` highest scores are picked, ties going to the lower pool index.
"""

from __future__ import annotations

from robustal.acquisition.base import Acquisition, ScoreAcquisition, register_acquisition
from robustal.acquisition.scores import gini, least_confidence, margin


@register_acquisition("margin")
def margin_acquisition() -> Acquisition:
    """Smallest gap between the top-1 and top-2 probabilities (Scheffer et al. 2001)."""
    return ScoreAcquisition(lambda ctx: margin(ctx.predictions().probs))


@register_acquisition("least-confidence")
def least_confidence_acquisition() -> Acquisition:
    """Smallest top-1 probability (Lewis & Gale 1994)."""
    return ScoreAcquisition(lambda ctx: least_confidence(ctx.predictions().probs))


@register_acquisition("gini")
def gini_acquisition() -> Acquisition:
    """Highest Gini impurity 1 − Σp² of the softmax (DeepGini, Feng et al. 2020)."""
    return ScoreAcquisition(lambda ctx: gini(ctx.predictions().probs))
