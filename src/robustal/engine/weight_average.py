"""An exponential moving average (EMA) of a model's weights, validated and kept in place of the raw weights.

Averaging the weights along the last steps of adversarial training smooths the noise of the training attack's
minibatches; on CIFAR-10 it is worth several AutoAttack points over plain PGD training at no extra cost (Gowal et al.
2020, *Uncovering the Limits of Adversarial Training*; the FastAT benchmark). :func:`~robustal.engine.training.fit`
keeps one with ``TrainConfig(ema=decay)``: it validates the average each epoch and restores the best epoch's average.

The decay rises as ``min(decay, (1 + t) / (10 + t))`` over the ``t`` updates of this average (the warm-up of
TensorFlow's and timm's EMA): an active-learning stage may take only a hundred steps, far fewer than the ~1/(1 − decay)
a fixed 0.999 would average over, and a long-lived average of the first steps would drag the weights back to their
start. Floating-point parameters and buffers (BatchNorm statistics) are averaged; integer buffers are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The EMA of ``model``'s weights: :meth:`update` after each optimizer step, :attr:`model` to evaluate it.

    Args:
        model: The trained model; the average starts as a copy of it (same device and memory format).
        decay: The largest weight of the old average in one update, in (0, 1) (0.999 is the usual choice).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must be in (0, 1), got {decay!r}.")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values(), strict=True))
        self._averaged = [(a, b) for a, b in pairs if a.is_floating_point()]
        self._copied = [(a, b) for a, b in pairs if not a.is_floating_point()]

    def current_decay(self) -> float:
        """The decay of the next update (warmed up over the first updates)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (one batched ``lerp`` over every tensor)."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        if self._averaged:
            averaged, current = zip(*self._averaged, strict=True)
            torch._foreach_lerp_(list(averaged), list(current), weight)
        for a, b in self._copied:
            a.copy_(b)


__all__ = ["WeightAverage"]
