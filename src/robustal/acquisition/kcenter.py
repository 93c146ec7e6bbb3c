"""k-center greedy (core-set, Sener & Savarese 2018): farthest-first traversal from the labeled set.

By default the points are the softmax outputs, as in the reference code; ``space="features"`` uses the penultimate
features instead (the core-set paper's choice). See :func:`robustal.acquisition.scores.k_center_greedy` for the
algorithm, its memory bound and its tie-breaking.
"""

from __future__ import annotations

import torch

from robustal._validation import check_choice
from robustal.acquisition.base import Acquisition, SelectionContext, register_acquisition
from robustal.acquisition.inference import predict
from robustal.acquisition.scores import k_center_greedy
from robustal.errors import ConfigError

#: Where distances are measured.
KCENTER_SPACES = ("softmax", "features")


class KCenterGreedy(Acquisition):
    """Greedy k-center picks; each pick's score is its distance to the nearest center when it was picked.

    Args:
        space: ``softmax`` (the reference) or ``features`` (penultimate activations; needs ``features``/``head``).
    """

    def __init__(self, space: str = "softmax"):
        self.space = check_choice(space, "space", "k-center", KCENTER_SPACES)

    def check(self, model: torch.nn.Module) -> None:
        if self.space == "features" and not (hasattr(model, "features") and hasattr(model, "head")):
            raise ConfigError(f"Acquisition function 'k-center' with space='features' needs the model's penultimate "
                              f"features, but {type(model).__name__} has no features(x) and head(f) methods. "
                              "Add them (forward = head(features(x))), or use space='softmax'.")

    def _points(self, ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
        self.check(ctx.model)
        if self.space == "features":
            pool = ctx.predictions(features=True).features
            labeled = ctx.labeled_features() if len(ctx.labeled) else None
        else:
            pool = ctx.predictions().probs
            labeled = predict(ctx.model, ctx.pool_x[ctx.labeled], batch_size=ctx.batch_size,
                              device=ctx.device).probs if len(ctx.labeled) else None
        if labeled is None:
            labeled = pool.new_empty(0, pool.shape[1])
        return pool, labeled

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pool, labeled = self._points(ctx)
        return k_center_greedy(pool, labeled, n, ctx.generator, return_distances=True)


@register_acquisition("k-center")
def k_center_acquisition(space: str = "softmax") -> Acquisition:
    """Greedy farthest-first from the labeled set in softmax (default) or feature space (core-set)."""
    return KCenterGreedy(space=space)
