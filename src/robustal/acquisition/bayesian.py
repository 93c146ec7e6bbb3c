"""MC-dropout acquisition functions (Gal et al. 2017): entropy-dropout and BALD.

Both use the summaries of T stochastic passes over the unlabeled pool (:meth:`SelectionContext.mc_predictions`):
only the model's :class:`~robustal.models.MCDropout` layers drop units (rate 0.1, where the reference adds dropout);
BatchNorm and every other layer stay in eval mode, and the masks come from the selection's generator.
"""

from __future__ import annotations

import torch

from robustal._validation import check_int
from robustal.acquisition.base import Acquisition, ScoreAcquisition, SelectionContext, register_acquisition
from robustal.acquisition.scores import bald, entropy
from robustal.errors import ConfigError
from robustal.models.base import has_mc_dropout


class MCDropoutAcquisition(ScoreAcquisition):
    """Top-n of a score of the MC-dropout summaries (mean softmax, mean per-pass entropy).

    Args:
        score: ``MCPredictions -> (n,)`` scores, higher picked first.
        passes: Number T of stochastic forward passes (the reference: 10).
    """

    def __init__(self, score, passes: int = 10, name: str = ""):
        self.passes = check_int(passes, "passes", name or "MC-dropout acquisition", min_value=1)
        self.score = score
        super().__init__(self._scores, name)

    def check(self, model: torch.nn.Module) -> None:
        if not has_mc_dropout(model):
            raise ConfigError(
                f"Acquisition function {self.name!r} needs MC dropout, but {type(model).__name__} has no "
                "robustal.models.MCDropout layer. Use a robustal model (they all have one) or add MCDropout "
                "after the ReLUs or before the pooling layers of your model."
            )

    def _scores(self, ctx: SelectionContext) -> torch.Tensor:
        self.check(ctx.model)
        return self.score(ctx.mc_predictions(self.passes))


@register_acquisition("entropy-dropout")
def entropy_dropout_acquisition(passes: int = 10) -> Acquisition:
    """Highest entropy (bits) of the mean softmax of T MC-dropout passes (Gal et al. 2017)."""
    return MCDropoutAcquisition(lambda mc: entropy(mc.mean_probs), passes, "entropy-dropout")


@register_acquisition("bald")
def bald_acquisition(passes: int = 10) -> Acquisition:
    """Highest mutual information between prediction and weights over T MC-dropout passes (Houlsby et al. 2011)."""
    return MCDropoutAcquisition(lambda mc: bald(mc.mean_probs, mc.mean_entropy), passes, "bald")
