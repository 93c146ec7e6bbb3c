"""Which memory layout a model runs in: channels-last where it was measured to be faster, contiguous (NCHW) elsewhere.

On the CPU, channels-last (NHWC) convolution and max-pooling kernels are much faster for some nets -- a PGD step of
LeNet-5 at batch 128 runs twice as fast (its NCHW max-pooling costs as much as its convolutions) -- make no
difference for others (ResNet-18) and are slower for some (VGG16: 0.77 times). So the choice is made per
architecture from ``benchmarks/channels_last.py``: a registered model says ``channels_last_on_cpu = True`` where
that benchmark measured both a PGD step and a training step at least 1.1 times faster; a user's model stays
contiguous unless asked. On CUDA,
``auto`` keeps robustal 0.2's rule (channels-last for conv nets under bf16, contiguous in fp32) until
``scripts/gpu-check`` has measured more.

Both layouts compute the same function; the results differ in the last bits (different kernels sum in different
orders), so a run is reproducible under one setting, not across the two.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``auto``: per architecture and device (see the module docstring); the others force one layout.
MEMORY_FORMATS = ("auto", "channels-last", "contiguous")


def has_conv(model: nn.Module) -> bool:
    """Whether ``model`` has a 2-D convolution (the only layers whose layout matters)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def uses_channels_last(model: nn.Module, device: torch.device | str, setting: str = "auto",
                       precision: str = "fp32") -> bool:
    """Whether ``model`` runs channels-last on ``device`` under ``setting`` (see :data:`MEMORY_FORMATS`)."""
    if setting not in MEMORY_FORMATS:
        raise ValueError(f"memory format must be one of {', '.join(MEMORY_FORMATS)}; got {setting!r}")
    if setting == "contiguous" or not has_conv(model):
        return False
    if setting == "channels-last":
        return True
    if torch.device(device).type == "cpu":
        return bool(getattr(model, "channels_last_on_cpu", False))
    return torch.device(device).type == "cuda" and precision == "bf16"


def apply_memory_format(model: nn.Module, device: torch.device | str, setting: str = "auto",
                        precision: str = "fp32") -> bool:
    """Put ``model``'s weights in the layout :func:`uses_channels_last` chooses (in place; a no-op when they are
    already in it); returns whether it is channels-last. Activations follow the weights' layout."""
    channels_last = uses_channels_last(model, device, setting, precision)
    model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return channels_last
