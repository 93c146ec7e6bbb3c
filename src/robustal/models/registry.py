"""Model registry: ``create_model("lenet5", num_classes=10, in_channels=1, image_size=32)``, or a user's own model
by ``"package.module:factory"`` (or ``"path/to/file.py:factory"``).

A user's factory is called with the keyword arguments ``num_classes``, ``in_channels`` and ``image_size`` and returns
an ``nn.Module`` that maps images in [0, 1] ``(n, C, H, W)`` to logits ``(n, num_classes)``. ``features(x)`` and
``head(f)`` are optional: only feature-space k-center needs them, and ``MCDropout`` layers only the MC-dropout
functions (entropy-dropout, bald); each says so clearly when they are missing.

Every command builds its model through :func:`create_model`, so a user's model is checked there, once, on one batch
of the data's shape (:func:`check_user_model`) before any training: a wrong number of outputs, hard-coded input
channels, a tuple output or a model without trainable parameters is explained instead of failing mid-training.
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


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 32, *,
                 source: str = "--model") -> nn.Module:
    """Build the registered model ``name`` for images of ``in_channels × image_size × image_size``.

    A user's ``module:factory`` is imported, called and checked on one batch (:func:`check_user_model`); ``source``
    says where the name came from (the ``--model`` flag, or a study file's grid) in every message.

    Example:
        >>> model = create_model("lenet5", num_classes=10, in_channels=1, image_size=32)
        >>> model.features(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 84])
    """
    if ":" in name:
        factory = user_factory(name, source=source)
        try:
            model = factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
        except Exception as e:  # noqa: BLE001 - the user's code: whatever it raises, say where it came from
            raise ConfigError(f"Model {name!r} ({source}): the factory raised {type(e).__name__}: {e}. It is called "
                              "with num_classes, in_channels and image_size as keyword arguments.") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"Model {name!r} ({source}): the factory returned {type(model).__name__}, not a "
                              "torch.nn.Module.")
        check_user_model(model, f"Model {name!r} ({source})", num_classes, in_channels, image_size)
        return model
    if name.endswith(".py") or "/" in name:
        raise ConfigError(f"Model {name!r} ({source}) names a file: a user's model is the file and the factory "
                          f"function in it that builds the model, {name}:FACTORY (e.g. {name}:make_model). "
                          f"Registered models: {', '.join(MODELS.names())}.")
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    except ValueError as e:
        raise ConfigError(f"Cannot build model {name!r} ({source}): {e}") from None


def check_user_model(model: nn.Module, where: str, num_classes: int, in_channels: int, image_size: int) -> None:
    """Refuse, saying what is wrong, a model that cannot be trained on images of this shape into ``num_classes``.

    One forward pass of a batch of two images ``(2, in_channels, image_size, image_size)`` in [0, 1] in eval mode
    (BatchNorm statistics untouched; every module's mode restored after): the output must be one float tensor of
    finite logits ``(2, num_classes)`` that depends on trainable parameters. ``where`` starts every message.
    """
    import torch

    called = (f"The factory is called with num_classes={num_classes}, in_channels={in_channels} and "
              f"image_size={image_size} (the data's)")
    shape = f"{in_channels}×{image_size}×{image_size}"
    x = torch.linspace(0, 1, 2 * in_channels * image_size * image_size).reshape(2, in_channels, image_size,
                                                                                image_size)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():  # a caller's no_grad block must not hide a model that trains
            out = model(x)
    except Exception as e:  # noqa: BLE001 - the user's code: whatever it raises, say where it came from
        raise ConfigError(f"{where}: the model fails on a batch of {shape} images: {type(e).__name__}: {e}. "
                          f"{called}: build the layers from them (e.g. nn.Conv2d(in_channels, ...), nn.Linear sized "
                          "from image_size), not from hard-coded numbers such as 3 input channels or 32 pixels.") \
            from None
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(out, torch.Tensor):
        kind = f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list, dict)) else "")
        raise ConfigError(f"{where}: the model returns {kind}, not a tensor of logits. forward must return the logits "
                          f"(n, {num_classes}) alone (e.g. return logits, not (logits, features)); extra outputs "
                          "belong in methods such as features(x).")
    if not torch.is_floating_point(out):
        raise ConfigError(f"{where}: the model returns {out.dtype} values; forward must return float logits "
                          f"(n, {num_classes}), one score per class, not predicted labels.")
    if tuple(out.shape) != (2, num_classes):
        raise ConfigError(f"{where}: the model maps a batch of 2 images ({shape}) to shape {tuple(out.shape)}, "
                          f"expected (2, {num_classes}): one logit per class for each image. {called}: size the "
                          "last layer with num_classes (e.g. nn.Linear(..., num_classes)) and keep the batch axis.")
    if not torch.isfinite(out).all():
        raise ConfigError(f"{where}: the model returns NaN or infinite logits on a batch of {shape} images in [0, 1] "
                          "straight after it is built; check its initialisation and forward.")
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"{where}: the model has no trainable parameters, so training cannot change it. Register "
                          "its layers as attributes of the nn.Module (or in nn.Sequential / nn.ModuleList, not a "
                          "Python list) and leave requires_grad on.")
    if not out.requires_grad and not torch.is_inference_mode_enabled():
        raise ConfigError(f"{where}: the model's logits do not depend on its trainable parameters (detached, or "
                          "computed under torch.no_grad()), so training cannot change them. Return the logits of "
                          "the layers themselves.")


def user_factory(spec: str, *, source: str = "--model") -> Callable[..., nn.Module]:
    """The callable named by ``"package.module:factory"`` or ``"path/to/file.py:factory"``.

    A module that is not importable as is is looked for in the working folder too (as ``python -m`` would).
    """
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise ConfigError(f"Model {spec!r} ({source}): write a user's model as package.module:factory or "
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
        raise ConfigError(f"Model {spec!r} ({source}): cannot import {where!r} ({type(e).__name__}: {e}). Put the "
                          "module in the working folder or install its package, or give path/to/file.py:factory.") \
            from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"Model {spec!r} ({source}): {where!r} has no callable {attr!r}"
                          + (f" (it is a {type(factory).__name__})" if factory is not None else "") + ".")
    return factory
