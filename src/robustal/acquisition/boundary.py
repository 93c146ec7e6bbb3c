"""Robust-boundary sampling (robustal's own design, beyond the paper): ``robust-boundary``.

Hypothesis (written before any run): adversarial training learns most from samples near the *robust* decision
boundary -- those whose prediction an ε-attack can just flip or just not flip (small adversarial margin ``|m|``).
Samples far on the robust side (large positive ``m``) are already robust and add little; samples far on the wrong
side (large negative ``m``) are often ambiguous or malformed digits whose labels cost clean accuracy. Random sampling
spends most labels on the first kind; entropy-like functions over-pick a few confusable classes. So: keep random's
class balance (per predicted class, a share of ``n`` by predicted frequency) and, inside each class, draw at random
among the half of the class with the smallest ``|m|`` (randomness keeps the picks diverse).

The margin is ``m = z_ŷ(x') − max_{c≠ŷ} z_c(x')``: ``ŷ`` the clean prediction, ``x'`` a PGD-k attack (L∞ ε, random
start) against ``ŷ``, with the model in eval mode and parameter gradients off.
"""

from __future__ import annotations

import torch
from torch import nn

from robustal._validation import check_float, check_int
from robustal.acquisition.base import Acquisition, SelectionContext, register_acquisition
from robustal.acquisition.scores import boundary_sample
from robustal.data.dataset import to_float
from robustal.engine.attacks import pgd
from robustal.errors import ConfigError
from robustal.models.base import frozen


def adversarial_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, steps: int,
                        step_size: float, batch_size: int = 1024, device: torch.device | str = "cpu",
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Logit margin of class ``y`` after a PGD attack against it: ``z_y(x') − max_{c≠y} z_c(x')`` ``(n,)`` float32
    on the CPU (negative: the attack flipped the prediction away from ``y``).

    Batched; the model is frozen (:func:`robustal.models.base.frozen`), the random starts come from ``generator`` (on
    ``device``).

    Args:
        x: uint8 or float images ``(n, C, H, W)``.
        y: The class each margin is about ``(n,)`` (usually the clean prediction).
    """
    margins = []
    with frozen(model):
        for start in range(0, len(x), batch_size):
            xb = to_float(x[start:start + batch_size], device)
            yb = y[start:start + batch_size].to(xb.device)
            x_adv = pgd(model, xb, yb, epsilon=epsilon, step_size=step_size, steps=steps, random_start=True,
                        generator=generator)
            with torch.no_grad():
                z = model(x_adv).float()
            own = z.gather(1, yb[:, None]).squeeze(1)
            other = z.scatter(1, yb[:, None], -torch.inf).max(1).values
            margins.append((own - other).cpu())
    return torch.cat(margins) if margins else torch.empty(0)


class RobustBoundary(Acquisition):
    """Class-balanced random picks among each predicted class's samples of smallest adversarial margin ``|m|``;
    each pick's score is its margin ``m``. A set, not a ranking.

    Args:
        epsilon: L∞ budget of the attack (None: the training ε the loop passes in ``SelectionContext.epsilon``;
            an error if neither is set).
        steps: PGD steps k (a cheap attack: each costs a forward and a backward pass over the pool).
        step_size: PGD step (None: ``2.5·ε/k``, as for training).
        fraction: Share of each predicted class that is a candidate (those of smallest ``|m|``), in (0, 1].
    """

    ranked = False

    def __init__(self, epsilon: float | None = None, steps: int = 5, step_size: float | None = None,
                 fraction: float = 0.5):
        self.epsilon = None if epsilon is None else check_float(epsilon, "epsilon", "robust-boundary", min_value=0,
                                                                max_value=1)
        self.steps = check_int(steps, "steps", "robust-boundary", min_value=1)
        self.step_size = None if step_size is None else check_float(step_size, "step_size", "robust-boundary",
                                                                    min_value=0, max_value=1, min_inclusive=False)
        self.fraction = check_float(fraction, "fraction", "robust-boundary", min_value=0, max_value=1,
                                    min_inclusive=False)

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        epsilon = self.epsilon if self.epsilon is not None else ctx.epsilon
        if epsilon is None:
            raise ConfigError("Acquisition function 'robust-boundary' needs the attack's epsilon, and none was given: "
                              "set its option epsilon (e.g. 0.3 for MNIST; in a study file, under "
                              "[acquisition.robust-boundary]), or give SelectionContext(epsilon=...) -- the active-"
                              "learning loop passes its training epsilon.")
        step_size = self.step_size if self.step_size is not None else 2.5 * epsilon / self.steps
        predicted = ctx.predictions().probs.argmax(1)
        margins = adversarial_margins(ctx.model, ctx.pool_x[ctx.unlabeled], predicted, epsilon=epsilon,
                                      steps=self.steps, step_size=step_size, batch_size=ctx.batch_size,
                                      device=ctx.device, generator=ctx.device_generator)
        pos = boundary_sample(margins, predicted, n, self.fraction, ctx.generator)
        return pos, margins[pos]


@register_acquisition("robust-boundary")
def robust_boundary_acquisition(epsilon: float | None = None, steps: int = 5, step_size: float | None = None,
                                fraction: float = 0.5) -> Acquisition:
    """Per predicted class, random picks among the half closest to the robust boundary: smallest |adversarial
    logit margin| under PGD-k (ours)."""
    return RobustBoundary(epsilon=epsilon, steps=steps, step_size=step_size, fraction=fraction)
