"""Model registry: ``create_model("lenet5", num_classes=10, in_channels=1, image_size=32)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from robustal._registry import Registry
from robustal.errors import ConfigError

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
register_model = MODELS.register


def default_model_for_images(channels: int, image_size: int) -> str:
    """The architecture for data without a registered one: small-cnn for small images, LeNet-5 for grey ones of at
    least 28 pixels (MNIST-like), ResNet-18 for colour ones (CIFAR-like)."""
    if image_size < 28:
        return "small-cnn"
    return "lenet5" if channels == 1 else "resnet18"


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching ``pattern``."""
    return MODELS.names(pattern)


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> nn.Module:
    """Build the registered model ``name`` for images of ``in_channels × image_size × image_size``.

    Example:
        >>> model = create_model("lenet5", num_classes=10, in_channels=1, image_size=32)
        >>> model.features(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 84])
    """
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    except ValueError as e:
        raise ConfigError(f"Cannot build model {name!r}: {e}") from None
