"""What every robustal model provides: penultimate features and MC dropout that leaves the weights alone; and the
model modes of evaluation (:func:`frozen`).

A :class:`Classifier` splits into ``features(x)`` (penultimate activations, used by k-center) and ``head(f)``
(logits). :class:`MCDropout` layers sit where the reference code puts dropout; they are the identity until
:func:`mc_dropout` switches them on, so the same weights serve deterministic and Bayesian (BALD) predictions, and
BatchNorm stays in eval mode (calling ``model.train()`` for MC dropout gives batch-dependent predictions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

#: The reference's MC-dropout rate.
MC_DROPOUT_P = 0.1


class MCDropout(nn.Module):
    """Dropout that is off (identity) unless switched on by :func:`mc_dropout`; masks come from a given generator."""

    def __init__(self, p: float = MC_DROPOUT_P):
        super().__init__()
        self.p = p
        self.active = False
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active or self.p == 0:
            return x
        # Uniform draws compared with p: about 40 % faster on CPU than bernoulli_, same distribution.
        keep = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype) >= self.p
        return x * keep * (1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Classifier(nn.Module):
    """Base class: subclasses define ``features`` (→ ``(n, feature_dim)``) and ``head`` (→ logits)."""

    feature_dim: int
    #: Run channels-last on the CPU (robustal.models.memory_format): set where benchmarks/channels_last.py measured a
    #: PGD step and a training step at least 1.1 times faster.
    channels_last_on_cpu: bool = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement features(x)")

    def head(self, f: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement head(features)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def has_mc_dropout(model: nn.Module) -> bool:
    """Whether ``model`` contains :class:`MCDropout` layers."""
    return any(isinstance(m, MCDropout) for m in model.modules())


@contextlib.contextmanager
def mc_dropout(model: nn.Module, generator: torch.Generator | None = None) -> Iterator[nn.Module]:
    """Within the block, the model's :class:`MCDropout` layers drop units (masks drawn from ``generator``).

    Every other layer keeps its mode. Raises ``ValueError`` if the model has no MCDropout layer: MC dropout on a
    model without dropout would silently return T identical predictions.
    """
    layers = [m for m in model.modules() if isinstance(m, MCDropout)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no MCDropout layers; add robustal.models.MCDropout where "
                         "dropout belongs (after ReLUs or before pooling) to use MC-dropout acquisition functions.")
    saved = [(m.active, m.generator) for m in layers]
    try:
        for m in layers:
            m.active, m.generator = True, generator
        yield model
    finally:
        for m, (active, gen) in zip(layers, saved, strict=True):
            m.active, m.generator = active, gen


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients inside the block (for evaluation attacks); restores both afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
