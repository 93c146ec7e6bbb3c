"""Model inference over the pool, kept apart from scoring: one forward pass yields the softmax and the penultimate
features that every score function needs; MC-dropout passes are batched and streamed."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustal.data.dataset import to_float
from robustal.models.base import MCDropout, mc_dropout


@dataclass(frozen=True)
class Predictions:
    """Softmax probabilities ``(n, classes)`` and, when asked for, penultimate features ``(n, d)``, on the CPU."""

    probs: torch.Tensor
    features: torch.Tensor | None = None


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024, device: torch.device | str = "cpu",
            features: bool = False) -> Predictions:
    """Softmax (and features, if the model has ``features``/``head`` and ``features=True``) for images ``x``.

    The model runs in eval mode; its mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    probs, feats = [], []
    try:
        for start in range(0, len(x), batch_size):
            xb = to_float(x[start:start + batch_size], device)
            if features:
                f = model.features(xb)
                logits = model.head(f)
                feats.append(f.flatten(1).float().cpu())
            else:
                logits = model(xb)
            probs.append(torch.softmax(logits.float(), 1).cpu())
    finally:
        model.train(was_training)
    classes = probs[0].shape[1] if probs else 0
    return Predictions(torch.cat(probs) if probs else torch.empty(0, classes),
                       torch.cat(feats) if features and feats else None)


@dataclass(frozen=True)
class MCPredictions:
    """Streaming summaries of T MC-dropout passes: mean softmax ``(n, classes)`` and mean entropy ``(n,)`` (bits)."""

    mean_probs: torch.Tensor
    mean_entropy: torch.Tensor
    passes: int


class _ReplicateAtFirstDropout:
    """Forward pre-hooks on every MCDropout layer: the first one to run in a forward pass repeats its input T times.

    The deterministic layers before the first dropout then run once per image instead of T times (all of a ResNet's
    body when its dropout sits before the classifier). Later layers see T·b rows exactly as if the input had been
    replicated, and the masks are drawn in the same order.
    """

    def __init__(self, model: nn.Module, passes: int):
        self.passes, self.fired = passes, False
        self.handles = [m.register_forward_pre_hook(self) for m in model.modules() if isinstance(m, MCDropout)]

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple | None:
        if self.fired:
            return None
        self.fired = True
        x = inputs[0]
        return (x.repeat(self.passes, *([1] * (x.ndim - 1))), *inputs[1:])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def mc_predict(model: nn.Module, x: torch.Tensor, *, passes: int = 10, batch_size: int = 1024,
               device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> MCPredictions:
    """T stochastic passes with only the MC-dropout layers active (BatchNorm stays in eval mode).

    Each batch goes through the model once, replicated T times at the first dropout layer it reaches (chunked so
    that at most ``batch_size`` rows go through at once); a model in which that does not work -- a skip connection
    around the dropout, say -- gets its input replicated instead. Only Σp and Σ p·log p are kept, never the
    T × n × classes tensor.
    """
    from robustal.acquisition.scores import entropy

    if generator is not None and generator.device.type != torch.device(device).type:
        from robustal.errors import ConfigError

        raise ConfigError(f"mc_predict draws its dropout masks on {device}, but the generator is on "
                          f"{generator.device}; give a generator on the model's device (SelectionContext."
                          "device_generator).")
    was_training = model.training
    model.eval()
    per_chunk = max(1, batch_size // passes)
    sum_p, sum_h = [], []
    hooks = _ReplicateAtFirstDropout(model, passes) if generator is not None else None

    def forward(xb: torch.Tensor) -> torch.Tensor:  # (T·b, classes), pass-major
        nonlocal hooks
        if hooks is not None:
            state = generator.get_state()
            hooks.fired = False
            try:
                out = model(xb)
                if hooks.fired and len(out) == passes * len(xb):
                    return out
            except RuntimeError:
                pass
            generator.set_state(state)  # replay the same masks with the input replicated
            hooks.remove()
            hooks = None
        return model(xb.repeat(passes, *([1] * (xb.ndim - 1))))

    try:
        with mc_dropout(model, generator=generator):
            for start in range(0, len(x), per_chunk):
                xb = to_float(x[start:start + per_chunk], device)
                p = torch.softmax(forward(xb).float(), 1).view(passes, len(xb), -1)  # (T, b, classes)
                sum_p.append(p.sum(0).cpu())
                sum_h.append(entropy(p.reshape(-1, p.shape[-1])).view(passes, len(xb)).sum(0).cpu())
    finally:
        if hooks is not None:
            hooks.remove()
        model.train(was_training)
    return MCPredictions(torch.cat(sum_p) / passes, torch.cat(sum_h) / passes, passes)
