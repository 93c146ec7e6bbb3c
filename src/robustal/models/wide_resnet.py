"""Wide residual networks (Zagoruyko & Komodakis 2016) for CIFAR-sized inputs.

WRN-d-k: a 3×3 stem conv with 16 channels, then three stages of ``(d - 4) / 6`` pre-activation blocks of widths
16k, 32k and 64k (strides 1, 2, 2), BatchNorm + ReLU, global average pooling and a linear layer; MC dropout sits
before the linear layer. The in-block dropout of the original paper is left out (adversarial-training papers train
with it off). The registered ``wide-resnet`` is WRN-28-10 (36.5 M parameters), the paper's CIFAR model; Madry et al.
and TRADES use WRN-34-10, which is ``WideResNet(depth=34)``. Written for robustal from the paper.
"""

from __future__ import annotations

from robustal.models.registry import register_model
from robustal.models.resnet import PreActBlock, ResNet

#: Smallest input side: the two stride-2 stages take 4×4 to 1×1.
MIN_IMAGE_SIZE = 4


class WideResNet(ResNet):
    """WRN-``depth``-``widen_factor``; ``depth`` must be 6n + 4 (10, 16, 22, 28, 34, 40, ...).

    Args:
        depth: The d of WRN-d-k: 6n + 4 for n blocks per stage.
        widen_factor: Width multiplier k of the three stages (16k, 32k, 64k channels).
        num_classes: Number of logits.
        in_channels: Image channels.
    """

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3):
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"wide-resnet depth must be 6n + 4 with n ≥ 1 (10, 16, 22, 28, 34, ...), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"wide-resnet widen_factor must be a positive integer, got {widen_factor}")
        n = (depth - 4) // 6
        k = widen_factor
        super().__init__(PreActBlock, (n, n, n), num_classes, in_channels, widths=(16 * k, 32 * k, 64 * k),
                         stem_width=16)
        self.depth, self.widen_factor = depth, widen_factor


@register_model("wide-resnet")
def wide_resnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, depth: int = 28,
                widen_factor: int = 10) -> WideResNet:
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"wide-resnet downsamples 4× and needs images of at least {MIN_IMAGE_SIZE}×{MIN_IMAGE_SIZE} "
                         f"(got {image_size}×{image_size}); use small-cnn for smaller images.")
    return WideResNet(depth, widen_factor, num_classes, in_channels)
