"""Device choice and reproducible randomness: every random choice takes a generator derived from the run's seed."""

from __future__ import annotations

import hashlib

import torch

from robustal.errors import ConfigError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) → CUDA if available, else CPU; otherwise the named device, checked to exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda' or 'cuda:N'. "
                          f"Got {device!r} ({e}).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("The 'device' parameter asks for CUDA, but no CUDA device is available. Use --device cpu.")
    return dev


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed determined by ``seed`` and ``keys`` (e.g. ``derive_seed(7, "stage", 3, "select")``).

    Independent streams for independent purposes, so resuming at stage k replays exactly what stage k would have drawn.
    """
    h = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") >> 1


def make_generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with :func:`derive_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g
