"""The one model-checkpoint format, written by ``train --save`` and ``retrain --save`` and read by ``select``,
``retrain`` and ``retrain-study``: the weights plus what is needed to rebuild the model for its data.

Loading uses ``torch.load(weights_only=True)``, so a checkpoint never runs code; saving is atomic.
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
from robustal.outputs import atomic_torch_save
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

    def check(self, dataset: Dataset) -> None:
        """Raise :class:`ConfigError` unless ``dataset`` has this model's image shape and number of classes."""
        if dataset.num_classes != self.num_classes or tuple(dataset.image_shape) != tuple(self.image_shape):
            raise ConfigError(f"Checkpoint {self.path} is for images {tuple(self.image_shape)} with "
                              f"{self.num_classes} classes, but {dataset.name} has images {dataset.image_shape} with "
                              f"{dataset.num_classes} classes. Use the dataset the model was trained on "
                              f"({self.dataset}).")

    def build(self, dataset: Dataset, device: torch.device | str = "cpu") -> nn.Module:
        """The saved model for ``dataset``'s images, weights loaded; errors clearly if they do not fit."""
        self.check(dataset)
        try:
            model = model_factory(self.model_name, dataset)()
            model.load_state_dict(self.state)
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"Checkpoint {self.path}: its weights do not fit a {self.model_name!r} model "
                              f"({' '.join(str(e).split())[:300]}).") from None
        return model.to(device)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a ``robustal train --save`` checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        ConfigError: The file is missing, not a torch file, truncated, or not a robustal model checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Checkpoint {path} not found. Save one with: robustal train ... --save {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (RuntimeError, EOFError, UnpicklingError, ...: all mean "unusable")
        raise ConfigError(f"Checkpoint {path} cannot be read as a robustal model checkpoint: "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
                          "It may be truncated or not a torch file; save it again with robustal train --save."
                          ) from None
    if not isinstance(obj, dict) or any(k not in obj for k in CHECKPOINT_KEYS) or not isinstance(obj["model"], dict):
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(f"Checkpoint {path} is not a robustal model checkpoint: expected keys "
                          f"{', '.join(CHECKPOINT_KEYS)}; found {have}. Save one with robustal train --save.")
    train_size = obj.get("train_size")
    return Checkpoint(model_name=str(obj["model_name"]), state=obj["model"], num_classes=int(obj["num_classes"]),
                      image_shape=tuple(int(s) for s in obj["image_shape"]), dataset=obj.get("dataset"),
                      epsilon=obj.get("epsilon"), train_size=None if train_size is None else int(train_size),
                      train_config=dict(obj.get("train_config") or {}), path=path)


def save_checkpoint(path: str | Path, model: nn.Module, model_name: str, dataset: Dataset, dataset_name: str,
                    train_config: TrainConfig, train_size: int, selected: Sequence[int] | None = None) -> None:
    """Write the checkpoint that :func:`load_checkpoint` reads (atomically; tensors and plain values only)."""
    state = {"model": model.state_dict(), "model_name": model_name, "dataset": dataset_name,
             "num_classes": dataset.num_classes, "image_shape": list(dataset.image_shape),
             "epsilon": dataset.epsilon, "train_config": train_config.to_dict(), "train_size": int(train_size)}
    if selected is not None:
        state["selected"] = [int(i) for i in selected]
    atomic_torch_save(state, Path(path))
