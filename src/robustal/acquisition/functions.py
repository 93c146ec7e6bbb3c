"""The baseline functions and the paper's DRE: random, entropy, dre."""

from __future__ import annotations

import torch

from robustal._validation import check_choice, check_int
from robustal.acquisition.base import Acquisition, ScoreAcquisition, SelectionContext, register_acquisition
from robustal.acquisition.scores import DRE_ROUNDINGS, dre_sample, entropy


class RandomAcquisition(Acquisition):
    """Uniform sampling without replacement: the baseline."""

    ranked = False

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, None]:
        return torch.randperm(len(ctx.unlabeled), generator=ctx.generator)[:n], None


@register_acquisition("random")
def random_acquisition() -> Acquisition:
    """Uniform random sampling (baseline)."""
    return RandomAcquisition()


@register_acquisition("entropy")
def entropy_acquisition() -> Acquisition:
    """Highest Shannon entropy of the softmax (Shannon 1948; Settles 2009)."""
    return ScoreAcquisition(lambda ctx: entropy(ctx.predictions().probs))


#: Values DRE can bin, as functions of the pool softmax.
DRE_FEATURES = {"entropy": entropy, "max-prob": lambda p: p.max(1).values}


class DensityRobustEntropy(Acquisition):
    """DRE (density-based robust sampling with entropy): the selection's entropy histogram matches the pool's.

    The picks form a set, not a ranking: :meth:`~robustal.acquisition.base.Acquisition.select` returns them in a
    seeded random order, so every prefix of a selection is itself a fair sample.

    Args:
        bins: Number of equal-width histogram bins over [min, max] of the feature (the paper: 50).
        feature: What is binned: ``entropy`` of the softmax (the paper) or ``max-prob`` (top-1 probability).
        rounding: Picks per bin: ``reference`` (the paper's code: ceil(mass·n) per bin, the last n in ascending bin
            order kept, a tilt towards high entropy when n is small) or ``proportional`` (exactly n, shares
            proportional to the bins' masses); see :func:`~robustal.acquisition.scores.dre_sample`.
    """

    ranked = False

    def __init__(self, bins: int = 50, feature: str = "entropy", rounding: str = "reference"):
        self.bins = check_int(bins, "bins", "dre", min_value=1)
        self.feature = check_choice(feature, "feature", "dre", DRE_FEATURES)
        self.rounding = check_choice(rounding, "rounding", "dre", DRE_ROUNDINGS)

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        values = DRE_FEATURES[self.feature](ctx.predictions().probs)
        pos = dre_sample(values, n, self.bins, ctx.generator, self.rounding)
        return pos, values[pos]


@register_acquisition("dre")
def dre_acquisition(bins: int = 50, feature: str = "entropy", rounding: str = "reference") -> Acquisition:
    """DRE: sample so the entropy distribution of the selection follows the pool's (the robustal paper)."""
    return DensityRobustEntropy(bins=bins, feature=feature, rounding=rounding)
