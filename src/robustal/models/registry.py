"""Model registry: ``create_model("lenet5", num_classes=10, in_channels=1, image_size=32)``, or a user's own model
by ``"package.module:factory"`` (or ``"path/to/file.py:factory"``).

A user's factory is called with the keyword arguments ``num_classes``, ``in_channels`` and ``image_size`` and returns
an ``nn.Module`` that maps images in [0, 1] ``(n, C, H, W)`` to logits ``(n, num_classes)``. ``features(x)`` and
``head(f)`` are optional: only feature-space k-center needs them, and ``MCDropout`` layers only the MC-dropout
functions (entropy-dropout, bald); each says so clearly when they are missing.
"""

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
    if ":" in name:
        factory = user_factory(name)
        try:
            model = factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        except Exception as e:  # noqa: BLE001 - the user's code: whatever it raises, say where it came from
            raise ConfigError(f"Model {name!r} (--model): the factory raised {type(e).__name__}: {e}. It is called "
                              "with num_classes, in_channels and image_size as keyword arguments.") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Model {name!r} (--model): the factory returned {type(model).__name__}, not a "
                              "torch.nn.Module.")
        return model
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    except ValueError as e:
        raise ConfigError(f"Cannot build model {name!r}: {e}") from None


def user_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable named by ``"package.module:factory"`` or ``"path/to/file.py:factory"``.

    A module that is not importable as is is looked for in the working folder too (as ``python -m`` would).
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise ConfigError(f"Model {spec!r} (--model): write a user's model as package.module:factory or "
                          "path/to/file.py:factory.")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            if not path.is_file():
                raise ImportError(f"{where} not found")
            module_spec = importlib.util.spec_from_file_location(f"robustal_user_model_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            try:
                module = importlib.import_module(where)
            except ModuleNotFoundError as e:
                if e.name != where.split(".")[0] or str(Path.cwd()) in sys.path:
                    raise
                sys.path.insert(0, str(Path.cwd()))
                module = importlib.import_module(where)
    except Exception as e:  # noqa: BLE001 - importing the user's module runs their code
        raise ConfigError(f"Model {spec!r} (--model): cannot import {where!r} ({type(e).__name__}: {e}). Put the "
                          "module in the working folder or install its package, or give path/to/file.py:factory.") \
            from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"Model {spec!r} (--model): {where!r} has no callable {attr!r}"
                          + (f" (it is a {type(factory).__name__})" if factory is not None else "") + ".")
    return factory
