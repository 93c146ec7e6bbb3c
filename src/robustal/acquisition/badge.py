"""BADGE (Ash et al., ICLR 2020, "Deep batch active learning by diverse, uncertain gradient lower bounds").

Each unlabeled sample is embedded as the gradient of the loss at its predicted label with respect to the last
layer's weights, ``(p − e_ŷ) ⊗ h``: its norm grows with the model's uncertainty (``‖p − e_ŷ‖``) and its direction
carries the sample's features, so k-means++ seeding in that space picks samples that are uncertain *and* diverse.
See :func:`robustal.acquisition.diversity.badge_select` for the algorithm and its cost.
"""

from __future__ import annotations

import torch

from robustal.acquisition.base import Acquisition, SelectionContext, register_acquisition
from robustal.acquisition.diversity import badge_select
from robustal.errors import ConfigError


def require_features(ctx: SelectionContext, caller: str, fix: str) -> None:
    """A clear error when the model cannot give penultimate features (``features(x)`` and ``head(f)``)."""
    if not (hasattr(ctx.model, "features") and hasattr(ctx.model, "head")):
        raise ConfigError(f"Acquisition function {caller} needs the model's penultimate features, but "
                          f"{type(ctx.model).__name__} has no features(x) and head(f) methods. Add them "
                          f"(forward = head(features(x))){fix}.")


class Badge(Acquisition):
    """k-means++ seeding on last-layer gradient embeddings; each pick's score is its ``D²`` when it was picked.

    A prefix of a k-means++ seeding is itself a seeding, so the picks are ranked (in pick order).
    """

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        require_features(ctx, "'badge'", ", or use another function")
        pred = ctx.predictions(features=True)
        return badge_select(pred.probs, pred.features, n, ctx.generator)


@register_acquisition("badge")
def badge_acquisition() -> Acquisition:
    """k-means++ seeding on last-layer gradient embeddings under the predicted label (Ash et al. 2020)."""
    return Badge()
