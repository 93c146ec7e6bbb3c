"""Argument checks with one message template:
"The 'eps' parameter of pgd must be a float in [0, 1]. Got -0.1 instead."
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from robustal.errors import ConfigError


def _fail(param: str, caller: str, must: str, got: object) -> ConfigError:
    return ConfigError(f"The {param!r} parameter of {caller} must be {must}. Got {got!r} instead.")


def check_int(value: object, param: str, caller: str, *, min_value: int | None = None,
              max_value: int | None = None) -> int:
    """Return ``value`` if it is an int within the bounds, else raise :class:`ConfigError`."""
    lo = "-inf" if min_value is None else min_value
    hi = "inf" if max_value is None else max_value
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and min_value is not None and value < min_value:
        ok = False
    if ok and max_value is not None and value > max_value:
        ok = False
    if not ok:
        raise _fail(param, caller, f"an int in [{lo}, {hi}]", value)
    return value  # type: ignore[return-value]


def check_float(value: object, param: str, caller: str, *, min_value: float | None = None,
                max_value: float | None = None, min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    """Return ``value`` as a float if it is a finite number within the bounds, else raise :class:`ConfigError`."""
    lo_br = "[" if min_inclusive else "("
    hi_br = "]" if max_inclusive else ")"
    lo = "-inf" if min_value is None else min_value
    hi = "inf" if max_value is None else max_value
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and min_value is not None and (value < min_value or (not min_inclusive and value == min_value)):
        ok = False
    if ok and max_value is not None and (value > max_value or (not max_inclusive and value == max_value)):
        ok = False
    if not ok:
        raise _fail(param, caller, f"a float in {lo_br}{lo}, {hi}{hi_br}", value)
    return float(value)  # type: ignore[arg-type]


def check_choice(value: object, param: str, caller: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ConfigError` listing them."""
    choices = list(choices)
    if value not in choices:
        raise _fail(param, caller, "one of " + ", ".join(map(repr, choices)), value)
    return value  # type: ignore[return-value]


def check_probs(probs: torch.Tensor, caller: str, param: str = "probs", atol: float = 1e-3) -> torch.Tensor:
    """Check a ``(n, classes)`` tensor of probabilities (rows sum to 1); never softmaxes silently."""
    if not isinstance(probs, torch.Tensor) or probs.ndim != 2 or probs.shape[1] < 2:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise _fail(param, caller, "a 2-D tensor of shape (n, classes) with classes >= 2", shape)
    if probs.numel() and (not torch.isfinite(probs).all() or (probs < 0).any()
                          or not torch.allclose(probs.sum(1), probs.new_ones(()), atol=atol)):
        raise ConfigError(
            f"The {param!r} parameter of {caller} must hold probabilities (non-negative rows summing to 1). "
            "If you have logits, apply softmax first."
        )
    return probs
