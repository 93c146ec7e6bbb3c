"""ResNet-18 (He et al. 2016, "Deep Residual Learning") and PreAct ResNet-18 (He et al. 2016, "Identity Mappings in
Deep Residual Networks") in the CIFAR style used by adversarial-training papers.

CIFAR style: a 3×3 stride-1 stem conv and no max-pool, so a 32×32 input reaches the four stages (widths 64, 128,
256, 512; stride 1, 2, 2, 2) at full resolution and leaves them at 4×4. The features are the global-average-pooled
512-d vector; MC dropout sits before the final linear layer. The pre-activation variant ends with BatchNorm + ReLU
before pooling, as in the paper and in the adversarial-training code that uses it (e.g. Rice et al. 2020).
Written for robustal from the papers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustal.models.base import Classifier, MCDropout
from robustal.models.registry import register_model

#: Smallest input side: the three stride-2 stages take 8×8 to 1×1.
MIN_IMAGE_SIZE = 8


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, plus the (projected when the shape changes) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus the input; a projection shortcut takes the pre-activated input."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3x3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3x3(cout, cout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class ResNet(Classifier):
    """CIFAR-style ResNet: 3×3 stem, stages of ``blocks[i]`` residual blocks, global average pool, linear head.

    Args:
        block: :class:`BasicBlock` or :class:`PreActBlock`.
        blocks: Number of blocks per stage.
        num_classes: Number of logits.
        in_channels: Image channels.
        widths: Channels of each stage; every stage after the first starts with a stride-2 block.
        stem_width: Channels of the stem conv (default: ``widths[0]``).
    """

    def __init__(self, block: type[BasicBlock] | type[PreActBlock], blocks: tuple[int, ...] = (2, 2, 2, 2),
                 num_classes: int = 10, in_channels: int = 3, widths: tuple[int, ...] = (64, 128, 256, 512),
                 stem_width: int | None = None):
        super().__init__()
        preact = block is PreActBlock
        cin = stem_width or widths[0]
        stem: list[nn.Module] = [_conv3x3(in_channels, cin)]
        if not preact:  # a pre-activation net normalizes at the start of each block instead
            stem += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
        stages: list[nn.Module] = []
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                stages.append(block(cin, w, stride=2 if i > 0 and j == 0 else 1))
                cin = w
        final: list[nn.Module] = [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)] if preact else []
        self.body = nn.Sequential(*stem, *stages, *final, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = MCDropout()
        self.fc = nn.Linear(cin, num_classes)
        self.feature_dim = cin

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (n, feature_dim)

    def head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(f))


def _make_resnet(name: str, block: type[BasicBlock] | type[PreActBlock], num_classes: int, in_channels: int,
                 image_size: int) -> ResNet:
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"{name} downsamples 8× and needs images of at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} "
                         f"(got {image_size}×{image_size}); use small-cnn for smaller images.")
    return ResNet(block, (2, 2, 2, 2), num_classes, in_channels)


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> ResNet:
    return _make_resnet("resnet18", BasicBlock, num_classes, in_channels, image_size)


@register_model("preact-resnet18")
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> ResNet:
    return _make_resnet("preact-resnet18", PreActBlock, num_classes, in_channels, image_size)
