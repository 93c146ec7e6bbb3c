"""Where a checkpoint's data are: found from any working folder, and checked against the fingerprint it recorded.

A checkpoint records its data as a registered name, an absolute path (an ``.npz``, an image folder) or a labeling
project's folder, with the data's fingerprint (:meth:`~robustal.data.Dataset.fingerprint`; a project's pool
fingerprint). :func:`checkpoint_data` reads the data ``--data`` names or, by default, the recorded ones: at the
recorded path, else in the checkpoint's own folder (data moved together with their checkpoint). Data found there are
used only when their fingerprint is the recorded one. An image folder's classes are mapped by the names the
checkpoint records, never by position. Checkpoints of earlier versions (relative paths, no fingerprint) are read as
before: their path is tried from the working folder first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from robustal.data import Dataset, list_datasets, load_dataset
from robustal.errors import ConfigError, DataError
from robustal.loop.checkpoint import Checkpoint

log = logging.getLogger(__name__)

#: What ``--data`` may name, for messages.
DATA_KINDS = "a registered dataset, an .npz, an image folder DIR/train, DIR/test, or a labeling project's folder"


@dataclass(frozen=True)
class CheckpointData:
    """Data for a checkpoint, read with its image shape, class names and ε.

    Attributes:
        dataset: The data. For a labeling project, both splits hold its labeled held-out images, so that
            ``dataset.splits()`` gives the project's validation and test; it has no pool to select from.
        source: Where they were read from (a registered name or an absolute path), as a checkpoint records it.
        recorded: Whether these are the data the checkpoint was made on (the fingerprint matches, or the checkpoint
            records none), so that its recorded training set applies to them.
        train_ids: An image folder's training files (relative to ``train/``) in index order; else None.
        project: The labeling project's folder when the data are its held-out labels; else None.
    """

    dataset: Dataset
    source: str
    recorded: bool
    train_ids: list[str] | None = None
    project: Path | None = None


def is_project(path: str | Path) -> bool:
    """Whether ``path`` is a labeling project's folder (it holds ``project.json``)."""
    from robustal.labeling.labeling import PROJECT_FILE

    return (Path(path).expanduser() / PROJECT_FILE).is_file()


def _registered(name: str) -> bool:
    return name in list_datasets() and not Path(name).expanduser().exists()


def _check_folder_classes(ckpt: Checkpoint, root: Path, where: str) -> None:
    """Refuse an image folder with class sub-folders the model does not know (by the names it records)."""
    from robustal.data.folders import scan_image_folder

    if ckpt.classes is None:
        return
    names: set[str] = set()
    for part in ("train", "test"):
        if (root / part).is_dir():
            names |= set(scan_image_folder(root / part)[1])
    unknown = sorted(names - set(ckpt.classes))
    if unknown:
        raise DataError(f"{where}: the class folder(s) {', '.join(unknown)} are not among the {len(ckpt.classes)} "
                        f"classes the model of {ckpt.path} knows ({', '.join(ckpt.classes)}): it cannot be measured "
                        "on a class it was not trained for. Remove or rename those folders, or give a model trained "
                        "with these classes.")


def _project_dataset(ckpt: Checkpoint, folder: Path, where: str) -> Dataset:
    from robustal.labeling.labeling import read_heldout

    settings, heldout = read_heldout(folder)
    if ckpt.classes is not None and list(ckpt.classes) != list(settings.classes):
        raise DataError(f"{where}: the project's classes ({', '.join(settings.classes)}) are not the model's "
                        f"({', '.join(ckpt.classes)}, recorded in {ckpt.path}); give the project the model was "
                        "trained in.")
    return Dataset(name=f"labeling project {folder}", train=heldout, test=heldout, num_classes=len(settings.classes),
                   epsilon=settings.epsilon, step_size=settings.step_size, class_names=tuple(settings.classes))


def _read(ckpt: Checkpoint, source: str, data_dir: str | Path | None, epsilon: float | None,
          where: str) -> CheckpointData:
    """The data at ``source`` for ``ckpt`` (shape and classes checked; ``recorded`` from the fingerprint)."""
    from robustal.data.folders import folder_dataset
    from robustal.loop.experiment import dataset_locator

    c, h, _ = ckpt.image_shape
    path = Path(source).expanduser()
    train_ids = project = None
    if not _registered(source) and path.is_dir() and is_project(path):
        project = path.resolve()
        dataset = _project_dataset(ckpt, project, where)
        fingerprint = _project_fingerprint(project)
    else:
        if not _registered(source) and path.is_dir() and not source.endswith(".npz"):
            _check_folder_classes(ckpt, path, where)
            if epsilon is None:
                raise ConfigError(f"{where} is an image folder and {ckpt.path} records no epsilon: give --epsilon.")
            dataset, info = folder_dataset(path, h, c, epsilon, classes=ckpt.classes)
            train_ids = info.train_ids
        else:
            dataset = load_dataset(source, data_dir, image_size=h, channels=c, epsilon=epsilon, classes=ckpt.classes)
        fingerprint = None
    dataset = dataset.with_epsilon(epsilon)
    ckpt.check(dataset)
    if ckpt.data_fingerprint is None:
        recorded = True  # an earlier robustal's checkpoint: nothing to compare, read as before
    else:
        recorded = (fingerprint or dataset.fingerprint()) == ckpt.data_fingerprint
    return CheckpointData(dataset, dataset_locator(source), recorded, train_ids, project)


def _project_fingerprint(folder: Path) -> str:
    import json

    from robustal.labeling.labeling import PROJECT_FILE

    try:
        return str(json.loads((folder / PROJECT_FILE).read_text(encoding="utf-8")).get("pool_fingerprint", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def _candidates(ckpt: Checkpoint) -> list[Path]:
    """Where the recorded data may be: the recorded path (legacy relative paths: from the working folder first),
    then the checkpoint's own folder."""
    recorded = Path(ckpt.dataset).expanduser()
    places = [recorded]
    if ckpt.path is not None:
        home = ckpt.path.expanduser().resolve().parent
        if not recorded.is_absolute():
            places.append(home / recorded)
        places.append(home / recorded.name)
    unique: list[Path] = []
    for p in places:
        if p.absolute() not in [q.absolute() for q in unique]:
            unique.append(p)
    return unique


def checkpoint_data(ckpt: Checkpoint, data: str | None = None, data_dir: str | Path | None = None,
                    epsilon: float | None = None) -> CheckpointData:
    """The data to use ``ckpt`` with: ``data`` (``--data``) when given, else the data it records, found from any
    working folder (see the module's docstring). ``epsilon``: the attack budget (default: the checkpoint's).

    Raises:
        ConfigError: The checkpoint records no data and ``data`` is not given.
        DataError: The recorded data are nowhere to be found, or what is found holds other data than the recorded
            fingerprint; data that do not fit the model (shape, classes).
    """
    epsilon = epsilon if epsilon is not None else ckpt.epsilon
    if data is not None:
        return _read(ckpt, data, data_dir, epsilon, f"--data {data}")
    if not ckpt.dataset:
        raise ConfigError(f"Checkpoint {ckpt.path} does not record its data; give them with --data ({DATA_KINDS}).")
    if _registered(ckpt.dataset):
        found = _read(ckpt, ckpt.dataset, data_dir, epsilon, f"dataset {ckpt.dataset!r}")
        if not found.recorded:
            raise DataError(f"Checkpoint {ckpt.path} was made on {ckpt.dataset!r} with fingerprint "
                            f"{ckpt.data_fingerprint}, but {ckpt.dataset!r} in the cache now holds other data "
                            f"({found.dataset.fingerprint()}). Give the data it was made on with --data.")
        return found
    looked, other = [], []
    for place in _candidates(ckpt):
        looked.append(str(place))
        if not place.exists():
            continue
        found = _read(ckpt, str(place), data_dir, epsilon, str(place))
        if found.recorded:
            if str(place) != ckpt.dataset:
                log.info("%s: its data %s were found at %s", ckpt.path, ckpt.dataset, place)
            return found
        other.append(str(place))
    if other:
        raise DataError(f"Checkpoint {ckpt.path} was made on {ckpt.dataset} (fingerprint {ckpt.data_fingerprint}), "
                        f"but {' and '.join(other)} hold other data: changed since, or other data of the same name. "
                        "Give the data it was made on with --data; evaluate accepts other data given with --data.")
    raise DataError(f"Checkpoint {ckpt.path} was made on {ckpt.dataset}, which is not there (looked for "
                    f"{' and '.join(looked)}). Give the data with --data, or put them beside the checkpoint.")


__all__ = ["CheckpointData", "checkpoint_data", "is_project"]
