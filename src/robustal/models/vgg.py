"""VGG networks (Simonyan & Zisserman 2015) in the CIFAR style for small inputs, with BatchNorm.

``vgg8`` is the paper's SVHN model: six 3×3 conv layers and two fully connected ones, with MC dropout before each
pooling layer, where the reference code puts it. ``vgg16`` is the usual CIFAR VGG16 (configuration D, 13 conv layers
and one linear layer on the 512-channel 1×1 map a 32×32 input leaves), with MC dropout before the linear layer.
Written for robustal from the papers' configurations.
"""

from __future__ import annotations

import torch
from torch import nn

from robustal.models.base import Classifier, MCDropout
from robustal.models.registry import register_model

#: Layer configurations: an int is a 3×3 conv (+BN+ReLU) of that width, "M" a 2×2 max-pool, "D" an MCDropout.
_CFGS: dict[str, list[int | str]] = {
    "vgg8": [64, 64, "D", "M", 128, 128, "D", "M", 256, 256, "D", "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(Classifier):
    """A conv stack given by ``cfg``, flattened, then ``hidden`` ReLU linear layers and a linear head.

    Args:
        cfg: Layer configuration, see ``_CFGS``.
        num_classes: Number of logits.
        in_channels: Image channels.
        image_size: Side of the square input; the flattened conv output has ``channels × side²`` units, where
            ``side`` is ``image_size`` halved (rounding down) once per pooling layer.
        hidden: Widths of the fully connected layers between the conv stack and the head.
        head_dropout: Whether an MCDropout sits right before the final linear layer.
    """

    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 hidden: tuple[int, ...] = (), head_dropout: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
            elif v == "D":
                layers.append(MCDropout())
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)),
                           nn.ReLU(inplace=True)]
                channels = int(v)
        layers.append(nn.Flatten())
        width = channels * side * side
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        self.body = nn.Sequential(*layers)
        self.dropout = MCDropout() if head_dropout else nn.Identity()
        self.fc = nn.Linear(width, num_classes)
        self.feature_dim = width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (n, feature_dim)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(f))


def _make_vgg(variant: str, num_classes: int, in_channels: int, image_size: int, **kwargs) -> VGG:
    """Build ``variant`` after checking that its pooling layers leave at least a 1×1 map."""
    cfg = _CFGS[variant]
    min_size = 2 ** cfg.count("M")
    if image_size < min_size:
        raise ValueError(f"{variant} pools {cfg.count('M')} times and needs images of at least {min_size}×{min_size} "
                         f"(got {image_size}×{image_size}); use small-cnn for smaller images.")
    return VGG(cfg, num_classes, in_channels, image_size, **kwargs)


@register_model("vgg8")
def vgg8(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> VGG:
    model = _make_vgg("vgg8", num_classes, in_channels, image_size, hidden=(256,))
    model.channels_last_on_cpu = True  # benchmarks/channels_last.py: PGD step 1.25x, training 1.14x (VGG16: 0.77x)
    return model


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> VGG:
    return _make_vgg("vgg16", num_classes, in_channels, image_size, head_dropout=True)
