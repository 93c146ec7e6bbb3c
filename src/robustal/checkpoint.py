"""The one model-checkpoint format, written by ``train --save`` and ``retrain --save`` and read by ``select``,
``retrain`` and ``retrain-study``: the weights plus what is needed to rebuild the model for its data.

Loading uses ``torch.load(weights_only=True)``, and a checkpoint of a user's own model (``module:factory``) is
rebuilt only from a factory the person names (``--factory``), never from the one the file records: a checkpoint
never makes robustal run or import code. Saving is atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustal.data import Dataset
from robustal.errors import ConfigError
from robustal.experiment import model_factory
from robustal.models.memory_format import MEMORY_FORMATS, apply_memory_format
from robustal.outputs import atomic_torch_save, safe_torch_load
from robustal.training import TrainConfig

CHECKPOINT_KEYS = ("model", "model_name", "num_classes", "image_shape")


@dataclass
class Checkpoint:
    """A model saved by ``robustal train --save``, loaded safely.

    Attributes:
        model_name, dataset, num_classes, image_shape, epsilon: As saved.
        state: The model's state dict.
        train_size: Number of leading pool samples it was trained on (None: the whole pool).
        train_config: The training configuration it was trained with (a dict), if saved.
        path: Where it was loaded from.
        factory: The user's model factory the person named (``--factory``) to rebuild a user's model with; never
            taken from the file.
    """

    model_name: str
    state: dict
    num_classes: int
    image_shape: tuple[int, ...]
    dataset: str | None = None
    epsilon: float | None = None
    train_size: int | None = None
    train_config: dict = field(default_factory=dict)
    path: Path | None = None
    factory: str | None = None

    def check(self, dataset: Dataset) -> None:
        """Raise :class:`ConfigError` unless ``dataset`` has this model's image shape and number of classes."""
        if dataset.num_classes != self.num_classes or tuple(dataset.image_shape) != tuple(self.image_shape):
            raise ConfigError(f"Checkpoint {self.path} is for images {tuple(self.image_shape)} with "
                              f"{self.num_classes} classes, but {dataset.name} has images {dataset.image_shape} with "
                              f"{dataset.num_classes} classes. Use the dataset the model was trained on "
                              f"({self.dataset}).")

    @property
    def build_name(self) -> str:
        """The model this checkpoint is rebuilt with: its registered architecture, or -- for a user's model -- the
        factory the person named (:attr:`factory`); see :func:`trusted_model_name`."""
        return trusted_model_name(self.model_name, self.factory, f"Checkpoint {self.path}")

    def build(self, dataset: Dataset, device: torch.device | str = "cpu") -> nn.Module:
        """The saved model for ``dataset``'s images, weights loaded; errors clearly if they do not fit."""
        self.check(dataset)
        model = model_factory(self.build_name, dataset)()  # an unknown name or an unimportable factory says so
        try:
            model.load_state_dict(self.state)
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"Checkpoint {self.path}: its weights do not fit a {self.model_name!r} model "
                              f"({' '.join(str(e).split())[:300]}).") from None
        model.to(device)
        layout = self.train_config.get("memory_format")
        apply_memory_format(model, device, layout if layout in MEMORY_FORMATS else "auto")
        return model


def is_user_model(name: str) -> bool:
    """Whether a model name is a user's factory (``module:factory`` or ``file.py:factory``), i.e. code outside
    robustal, rather than a registered architecture."""
    return ":" in name


def trusted_model_name(recorded: str, factory: str | None, source: str) -> str:
    """The model to build for a recorded model name: a registered architecture as recorded; a user's factory only
    when the person names one (``factory``, from ``--factory``) -- a file (checkpoint, results folder) never makes
    robustal import code by itself.

    Raises:
        ConfigError: A user's model and no ``factory``; or a ``factory`` for a registered architecture.
    """
    if not is_user_model(recorded):
        if factory is not None:
            raise ConfigError(f"--factory {factory}: {source} holds robustal's own {recorded!r} model, which needs no "
                              "factory; leave --factory out.")
        return recorded
    if factory is None:
        raise ConfigError(f"{source} holds a model built by the factory {recorded!r}: code outside robustal. robustal "
                          "never imports code because a file names it. If you trust that code, name the factory "
                          f"yourself: --factory {recorded}")
    return factory


def load_checkpoint(path: str | Path, factory: str | None = None) -> Checkpoint:
    """Load a ``robustal train --save`` checkpoint with ``torch.load(weights_only=True)``.

    ``factory``: the person's own model factory (``--factory``) for a checkpoint of a user's model; required for
    one (see :func:`trusted_model_name`) and checked here, before any work.

    Raises:
        ConfigError: The file is missing, not a torch file, truncated, or not a robustal model checkpoint; or it
            holds a user's model and no ``factory`` was named (or a factory was named for a registered model).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Checkpoint {path} not found. Save one with: robustal train ... --save {path}")
    try:
        obj = safe_torch_load(path)
    except ValueError as e:
        raise ConfigError(f"Checkpoint {path} cannot be read as a robustal model checkpoint: {e}. Give a file "
                          "saved by robustal train --save (or save it again).") from None
    if not isinstance(obj, dict) or any(k not in obj for k in CHECKPOINT_KEYS) or not isinstance(obj["model"], dict):
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(f"Checkpoint {path} is not a robustal model checkpoint: expected keys "
                          f"{', '.join(CHECKPOINT_KEYS)}; found {have}. Save one with robustal train --save.")
    def bad(key: str, must: str) -> ConfigError:
        return ConfigError(f"Checkpoint {path}: {key} must be {must}; got {obj.get(key)!r}. The file was not written "
                           "by robustal or was edited; save the model again with robustal train --save.")

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(obj["model_name"], str) or not obj["model_name"]:
        raise bad("model_name", "a model name")
    if not is_int(obj["num_classes"]) or obj["num_classes"] < 2:
        raise bad("num_classes", "an integer >= 2")
    shape = obj["image_shape"]
    if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(is_int(s) and s > 0 for s in shape):
        raise bad("image_shape", "three positive integers (channels, height, width)")
    train_size = obj.get("train_size")
    if train_size is not None and (not is_int(train_size) or train_size < 0):
        raise bad("train_size", "a non-negative integer")
    epsilon = obj.get("epsilon")
    if epsilon is not None and (not isinstance(epsilon, int | float) or not 0 <= epsilon <= 1):
        raise bad("epsilon", "a number in [0, 1]")
    if obj.get("dataset") is not None and not isinstance(obj["dataset"], str):
        raise bad("dataset", "a dataset name or path")
    if not isinstance(obj.get("train_config") or {}, dict):
        raise bad("train_config", "a dict of training settings")
    ckpt = Checkpoint(model_name=obj["model_name"], state=obj["model"], num_classes=obj["num_classes"],
                      image_shape=tuple(shape), dataset=obj.get("dataset"), epsilon=epsilon, train_size=train_size,
                      train_config=dict(obj.get("train_config") or {}), path=path, factory=factory)
    ckpt.build_name  # noqa: B018 - a user's model without --factory is refused now, before any work
    return ckpt


def data_meta(dataset: Dataset) -> dict:
    """What a checkpoint records of its data: classes, image shape and ε (keyword arguments of
    :func:`save_checkpoint`)."""
    return {"num_classes": dataset.num_classes, "image_shape": tuple(dataset.image_shape), "epsilon": dataset.epsilon}


def save_checkpoint(path: str | Path, model: nn.Module, model_name: str, *, num_classes: int,
                    image_shape: Sequence[int], epsilon: float | None, dataset_name: str | None,
                    train_config: TrainConfig, train_size: int | None = None,
                    selected: Sequence[int] | None = None, classes: Sequence[str] | None = None) -> None:
    """Write the checkpoint that :func:`load_checkpoint` reads (atomically; tensors and plain values only).

    ``train_size``: the model was trained on the first K training samples (``select``/``retrain`` pick from the
    rest); None when it was trained on a selection (``selected``, an active-learning run). ``classes``: class names
    (labeling projects).
    """
    state = {"model": model.state_dict(), "model_name": model_name, "dataset": dataset_name,
             "num_classes": int(num_classes), "image_shape": [int(s) for s in image_shape], "epsilon": epsilon,
             "train_config": train_config.to_dict()}
    if train_size is not None:
        state["train_size"] = int(train_size)
    if selected is not None:
        state["selected"] = [int(i) for i in selected]
    if classes is not None:
        state["classes"] = list(classes)
    atomic_torch_save(state, Path(path))
