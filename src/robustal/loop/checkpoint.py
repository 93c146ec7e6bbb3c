"""The one model-checkpoint format, written by ``train --save`` and ``retrain --save`` and read by ``select``,
``retrain`` and ``retrain-study``: the weights plus what is needed to rebuild the model for its data.

Loading uses ``torch.load(weights_only=True)``, and a checkpoint of a user's own model (``module:factory``) is
rebuilt only from a factory the person names (``--factory``), never from the one the file records: a checkpoint
never makes robustal run or import code. Saving is atomic.

A checkpoint works from any folder: it records its data by absolute path (or registered name) with the data's
fingerprint, and a user's factory file by absolute path (:mod:`robustal.loop.checkpoint_data` finds and checks the
data). Checkpoints of earlier versions, without these fields, load as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustal.data import Dataset
from robustal.engine.training import TrainConfig
from robustal.errors import ConfigError
from robustal.loop.experiment import dataset_locator, model_factory
from robustal.models.memory_format import MEMORY_FORMATS, apply_memory_format
from robustal.storage.outputs import atomic_torch_save, safe_torch_load

CHECKPOINT_KEYS = ("model", "model_name", "num_classes", "image_shape")


@dataclass
class Checkpoint:
    """A model saved by ``robustal train --save``, loaded safely.

    Attributes:
        model_name, dataset, num_classes, image_shape, epsilon: As saved.
        state: The model's state dict.
        train_size: Number of leading pool samples it was trained on.
        selected: Further pool indices it was trained on (an active-learning run's labeled set; ``retrain``'s picks
            beside ``train_size``). With neither recorded, a model was trained on the whole pool.
        train_config: The training configuration it was trained with (a dict), if saved.
        classes: Class names, in the model's output order (image folders, labeling projects), if saved.
        data_fingerprint: :meth:`~robustal.data.Dataset.fingerprint` of the data it was made on (a labeling
            project's: its pool fingerprint), if saved.
        factory_file: A user's factory module's file when it was saved (a hint for ``--factory``; never imported).
        path: Where it was loaded from.
        factory: The user's model factory the person named (``--factory``) to rebuild a user's model with; never
            taken from the file.
        evaluation: How the run it comes from measured it (a stage checkpoint, or one exported from a run): ``run``,
            ``stage``, ``attack`` (:class:`~robustal.engine.attacks.AttackConfig` settings), ``seed`` (the seed
            :func:`~robustal.engine.evaluation.evaluate` was given), and the stored ``clean`` and ``robust`` accuracy;
            so that ``evaluate`` reproduces them. None for a model not made by an active-learning run.
    """

    model_name: str
    state: dict
    num_classes: int
    image_shape: tuple[int, ...]
    dataset: str | None = None
    epsilon: float | None = None
    train_size: int | None = None
    selected: list[int] | None = None
    train_config: dict = field(default_factory=dict)
    classes: list[str] | None = None
    data_fingerprint: str | None = None
    factory_file: str | None = None
    path: Path | None = None
    factory: str | None = None
    evaluation: dict | None = None

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
        return trusted_model_name(self.model_name, self.factory, f"Checkpoint {self.path}", self.factory_file)

    def build(self, dataset: Dataset, device: torch.device | str = "cpu") -> nn.Module:
        """The saved model for ``dataset``'s images, weights loaded; errors clearly if they do not fit."""
        self.check(dataset)
        source = "--factory" if self.factory is not None else f"recorded in {self.path}"
        model = model_factory(self.build_name, dataset, source=source)()  # a bad name or factory says so
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


def trusted_model_name(recorded: str, factory: str | None, source: str, file: str | None = None) -> str:
    """The model to build for a recorded model name: a registered architecture as recorded; a user's factory only
    when the person names one (``factory``, from ``--factory``) -- a file (checkpoint, results folder) never makes
    robustal import code by itself. ``file``: where the factory's module was (for the refusal's hint only).

    Raises:
        ConfigError: A user's model and no ``factory``; or a ``factory`` for a registered architecture.
    """
    if not is_user_model(recorded):
        if factory is not None:
            raise ConfigError(f"--factory {factory}: {source} holds robustal's own {recorded!r} model, which needs no "
                              "factory; leave --factory out.")
        return recorded
    if factory is None:
        where = ""
        if file and not recorded.rpartition(":")[0].endswith(".py"):
            where = (f" (its code was in {file}; from another folder name it by its file: --factory "
                     f"{file}:{recorded.rpartition(':')[2]})")
        raise ConfigError(f"{source} holds a model built by the factory {recorded!r}: code outside robustal. robustal "
                          "never imports code because a file names it. If you trust that code, name the factory "
                          f"yourself: --factory {recorded}{where}")
    if _factory_key(factory) != _factory_key(recorded):
        import warnings

        from robustal.errors import FactoryWarning

        warnings.warn(FactoryWarning(f"--factory {factory}: {source} was made by the factory {recorded!r}, another "
                                     "one. Its weights are loaded into the model --factory builds: if that is not "
                                     "the same network, the results differ from the model's own. Name the recorded "
                                     "factory (its module or file) if you have it."), stacklevel=2)
    return factory


def _factory_key(name: str) -> tuple[str, str]:
    """``(module or file stem, function)`` of a factory: the same factory named by module, relative or absolute
    file path compares equal."""
    where, _, attr = name.rpartition(":")
    return Path(where).stem if where.endswith(".py") else where.rpartition(".")[2], attr


def recorded_model(name: str) -> tuple[str, str | None]:
    """``(model name, factory file)`` as a checkpoint records them: a factory given by file path made absolute (it
    works from any folder); for a module's factory, the file of that module if it is imported (a hint only)."""
    if not is_user_model(name):
        return name, None
    import sys

    where, _, attr = name.rpartition(":")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        return (f"{path.resolve()}:{attr}", None) if path.is_file() else (name, None)
    file = getattr(sys.modules.get(where), "__file__", None)
    return name, str(Path(file).resolve()) if file else None


def load_checkpoint(path: str | Path, factory: str | None = None) -> Checkpoint:
    """Load a ``robustal train --save`` checkpoint with ``torch.load(weights_only=True)``.

    ``factory``: the person's own model factory (``--factory``) for a checkpoint of a user's model; required for
    one (see :func:`trusted_model_name`) and checked here, before any work.

    Raises:
        ConfigError: The file is missing, not a torch file, truncated, or not a robustal model checkpoint; or it
            holds a user's model and no ``factory`` was named (or a factory was named for a registered model).
    """
    path = Path(path)
    return checkpoint_from_dict(read_checkpoint_file(path), path, factory)


#: What a model checkpoint can be, for the hints of errors.
MODEL_SOURCES = ("a model saved by robustal train, retrain or label --save, one written by robustal export, or a "
                 "run's stage checkpoint DIR/checkpoints/RUN/stage-NNN.pt (also as MLflow keeps it)")


def read_checkpoint_file(path: Path) -> object:
    """The object a checkpoint file holds (``weights_only=True``); a missing or unreadable file says so."""
    if not path.exists():
        raise ConfigError(f"Checkpoint {path} not found. Give {MODEL_SOURCES}; a stored run's model also as "
                          "robustal evaluate DIR --run NAME.")
    try:
        return safe_torch_load(path)
    except ValueError as e:
        raise ConfigError(f"Checkpoint {path} cannot be read as a robustal model checkpoint: {e}. Give "
                          f"{MODEL_SOURCES}.") from None


def checkpoint_from_dict(obj: object, path: Path, factory: str | None = None) -> Checkpoint:
    """A :class:`Checkpoint` from what a checkpoint file holds, every field checked (see :func:`load_checkpoint`)."""
    if not isinstance(obj, dict) or any(k not in obj for k in CHECKPOINT_KEYS) or not isinstance(obj["model"], dict):
        have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ConfigError(f"Checkpoint {path} is not a robustal model checkpoint: expected keys "
                          f"{', '.join(CHECKPOINT_KEYS)}; found {have}. Give {MODEL_SOURCES}.")

    def bad(key: str, must: str) -> ConfigError:
        return ConfigError(f"Checkpoint {path}: {key} must be {must}; got {obj.get(key)!r}. The file was not written "
                           "by robustal or was edited; save the model again (robustal train --save, robustal export).")

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
    selected = obj.get("selected")
    if selected is not None and (not isinstance(selected, list | tuple) or not all(is_int(i) and i >= 0
                                                                                   for i in selected)
                                 or len(set(selected)) != len(selected)):
        raise bad("selected", "a list of distinct non-negative training-set indices")
    classes = obj.get("classes")
    if classes is not None and (not isinstance(classes, list | tuple) or len(classes) != obj["num_classes"]
                                or not all(isinstance(c, str) for c in classes)):
        raise bad("classes", f"a list of {obj['num_classes']} class names")
    for key in ("data_fingerprint", "factory_file"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise bad(key, "a string")
    evaluation = obj.get("evaluation")
    if evaluation is not None and (not isinstance(evaluation, dict) or not is_int(evaluation.get("seed"))
                                   or not isinstance(evaluation.get("attack") or {}, dict)):
        raise bad("evaluation", "the run's evaluation settings (attack and seed)")
    ckpt = Checkpoint(model_name=obj["model_name"], state=obj["model"], num_classes=obj["num_classes"],
                      image_shape=tuple(shape), dataset=obj.get("dataset"), epsilon=epsilon, train_size=train_size,
                      selected=list(selected) if selected is not None else None,
                      train_config=dict(obj.get("train_config") or {}),
                      classes=list(classes) if classes is not None else None,
                      data_fingerprint=obj.get("data_fingerprint"), factory_file=obj.get("factory_file"), path=path,
                      factory=factory, evaluation=dict(evaluation) if evaluation is not None else None)
    ckpt.build_name  # noqa: B018 - a user's model without --factory is refused now, before any work
    return ckpt


def data_meta(dataset: Dataset, source: str | None = None) -> dict:
    """What a checkpoint records of its data (keyword arguments of :func:`save_checkpoint`): classes (and their
    names), image shape, ε, the data's fingerprint and -- given the dataset ``source`` as the person named it (a
    registered name or a path) -- where the data are, a path made absolute."""
    meta = {"num_classes": dataset.num_classes, "image_shape": tuple(dataset.image_shape), "epsilon": dataset.epsilon,
            "classes": dataset.class_names, "data_fingerprint": dataset.fingerprint()}
    if source is not None:
        meta["dataset_name"] = dataset_locator(source)
    return meta


def save_checkpoint(path: str | Path, model: nn.Module, model_name: str, *, num_classes: int,
                    image_shape: Sequence[int], epsilon: float | None, dataset_name: str | None,
                    train_config: TrainConfig, train_size: int | None = None,
                    selected: Sequence[int] | None = None, classes: Sequence[str] | None = None,
                    data_fingerprint: str | None = None) -> None:
    """Write the checkpoint that :func:`load_checkpoint` reads (atomically; tensors and plain values only).

    ``train_size``: the model was trained on the first K training samples; ``selected``: on these training-set
    indices (an active-learning run's labeled set), or on them beside the first ``train_size`` (``retrain``'s
    picks). ``select``/``retrain`` pick from the rest. ``classes``: class names; ``data_fingerprint``: see
    :class:`Checkpoint`. A user's factory given by file path is recorded by its absolute path
    (:func:`recorded_model`).
    """
    model_name, factory_file = recorded_model(model_name)
    state = {"model": model.state_dict(), "model_name": model_name, "dataset": dataset_name,
             "num_classes": int(num_classes), "image_shape": [int(s) for s in image_shape], "epsilon": epsilon,
             "train_config": train_config.to_dict()}
    if train_size is not None:
        state["train_size"] = int(train_size)
    if selected is not None:
        state["selected"] = [int(i) for i in selected]
    if classes is not None:
        state["classes"] = list(classes)
    if data_fingerprint is not None:
        state["data_fingerprint"] = data_fingerprint
    if factory_file is not None:
        state["factory_file"] = factory_file
    atomic_torch_save(state, Path(path))
