"""Dataset registry: ``load_dataset("mnist")`` or ``load_dataset("path/to/data.npz")``.

Registered loaders take the cache folder and return a :class:`~robustal.data.dataset.Dataset`. The offline default
``digits`` (scikit-learn's bundled 8×8 digits) needs no download; ``.npz`` files bring the user's own data.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robustal._registry import Registry
from robustal.data.dataset import Dataset, Split
from robustal.errors import ConfigError, DataError

DatasetLoader = Callable[[Path], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")
_DEFAULT_MODELS: dict[str, str] = {}


def register_dataset(name: str, *, default_model: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader under ``name`` with the architecture the paper pairs with the data."""

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        DATASETS.register(name)(loader)
        _DEFAULT_MODELS[name] = default_model
        return loader

    return decorator


def default_model_for(name: str) -> str | None:
    """Registered dataset ``name``'s default architecture, known without loading the data (None: unregistered)."""
    return _DEFAULT_MODELS.get(name)

#: Environment variable that overrides the default cache folder.
DATA_ENV = "ROBUSTAL_DATA"


def default_data_dir() -> Path:
    """``$ROBUSTAL_DATA`` if set, else ``$XDG_CACHE_HOME/robustal`` (``~/.cache/robustal``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "robustal"


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching ``pattern``."""
    return DATASETS.names(pattern)


def load_dataset(name: str, data_dir: str | Path | None = None, *, image_size: int | None = None,
                 channels: int | None = None, epsilon: float | None = None,
                 classes: list[str] | None = None) -> Dataset:
    """Load a registered dataset (downloading it into ``data_dir`` on first use), an ``.npz`` file or an image folder.

    Args:
        name: A registered name (see :func:`list_datasets`), a path to an ``.npz`` with
            ``x_train, y_train, x_test, y_test``, or an image folder ``DIR/train/<class>/*``, ``DIR/test/<class>/*``
            (:func:`robustal.data.folders.folder_dataset`), which needs ``image_size``, ``channels`` and ``epsilon``.
        data_dir: Cache folder for downloads; defaults to :func:`default_data_dir`.
        classes: An image folder's class names in a model's order (default: its sorted sub-folder names).
    """
    if name not in DATASETS and Path(name).expanduser().is_dir() and not name.endswith(".npz"):
        missing = [flag for flag, v in (("--image-size", image_size), ("--channels", channels),
                                        ("--epsilon", epsilon)) if v is None]
        if missing:
            raise ConfigError(f"{name!r} is an image folder: give {', '.join(missing)} (the side images are resized "
                              "to, 1 grey or 3 colour channels, and the L-inf budget of the attacks).")
        from robustal.data.folders import folder_dataset

        return folder_dataset(name, image_size, channels, epsilon, classes=classes)[0]
    if name not in DATASETS and (name.endswith(".npz") or os.sep in name or Path(name).is_file()):
        return load_npz(name)
    loader = DATASETS.get(name)
    return loader(Path(data_dir).expanduser() if data_dir else default_data_dir())


def images_to_tensor(x: np.ndarray, source: str, part: str) -> torch.Tensor:
    """N×H×W or N×H×W×C (or N×C×H×W with C in 1, 3) images, uint8 or float in [0, 1] → uint8 ``(N, C, H, W)``."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, :, :, None]
    if x.ndim != 4:
        raise DataError(f"{source}: {part} must hold images of shape N×H×W or N×H×W×C; got shape {x.shape}. "
                        "Reshape the array so that the first axis indexes the images.")
    if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = x.transpose(0, 2, 3, 1)  # N×C×H×W given: accept it
    if x.shape[-1] not in (1, 3):
        raise DataError(f"{source}: {part} has {x.shape[-1]} channels (shape {x.shape}); images need 1 or 3 "
                        "channels in the last axis (N×H×W×C).")
    if x.dtype == np.uint8:
        out = x
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"{source}: float images in {part} must lie in [0, 1]; "
                            f"got values in [{x.min()}, {x.max()}]. Scale them, or store uint8 0-255.")
        out = np.round(x * 255).astype(np.uint8)
    else:
        raise DataError(f"{source}: {part} has dtype {x.dtype}; images must be uint8 (0-255) or float in [0, 1].")
    return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2)))


def labels_to_tensor(y: np.ndarray, n: int, source: str, part: str) -> torch.Tensor:
    """Integer labels of shape ``(n,)`` → int64 tensor."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{source}: {part} must be a vector of {n} labels (one per image); got shape {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise DataError(f"{source}: {part} must hold integer class labels; got dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise DataError(f"{source}: {part} holds negative labels; labels must be 0 .. classes-1.")
    return torch.from_numpy(y.astype(np.int64))


def _contiguous_classes(source: str, *labels: torch.Tensor) -> int:
    """The number of classes of integer labels that must be exactly 0 .. K-1 (a gap would make empty classes)."""
    present = torch.unique(torch.cat(labels))
    if not len(present):
        raise DataError(f"{source}: holds no labels.")
    k = int(present.max()) + 1
    if len(present) != k:
        missing = sorted(set(range(k)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DataError(f"{source}: labels must be the classes 0..K-1 with each present, but they run up to {k - 1} "
                        f"while {shown} never occur{'s' if len(missing) == 1 else ''} ({len(present)} distinct "
                        "labels). Map the labels to 0..K-1 (e.g. np.unique(y, return_inverse=True)).")
    return k


def read_npz(path: str | Path, keys: tuple[str, ...], hint: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (numbers only: object arrays are never unpickled); ``hint`` says how the
    file should be made when it is missing, unreadable or incomplete."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a directory; give an .npz file. {hint}")
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist. {hint}")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DataError(f"{path}: the .npz lacks {', '.join(missing)} (it has {', '.join(f.files) or 'none'}). "
                                f"{hint}")
            return {k: f[k] for k in keys}
    except DataError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(f"{path}: holds Python object arrays, not numbers; robustal reads plain numeric arrays "
                            "only. Save the images as uint8 (or float) arrays and the labels as integers with "
                            "np.savez.") from None
        reason = "it is not a zip archive of arrays" if "allow_pickle" in str(e) else str(e)
        raise DataError(f"{path}: not a readable .npz file ({reason}). {hint}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz file ({e}). {hint}") from None


def load_npz(path: str | Path) -> Dataset:
    """Your own data: an ``.npz`` with ``x_train, y_train, x_test, y_test`` (see :func:`images_to_tensor`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Dataset file {str(path)!r} does not exist. Give a registered dataset "
                        f"({', '.join(list_datasets())}) or the path to an .npz with x_train, y_train, x_test, y_test.")
    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"),
                      "Save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")
    source = str(path)
    xtr = images_to_tensor(arrays["x_train"], source, "x_train")
    xte = images_to_tensor(arrays["x_test"], source, "x_test")
    ytr = labels_to_tensor(arrays["y_train"], len(xtr), source, "y_train")
    yte = labels_to_tensor(arrays["y_test"], len(xte), source, "y_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{source}: x_train images are {tuple(xtr.shape[1:])} (C, H, W) but x_test images are "
                        f"{tuple(xte.shape[1:])}; both need the same shape.")
    num_classes = _contiguous_classes(source, ytr, yte)
    gray = xtr.shape[1] == 1
    return Dataset(name=source, train=Split(xtr, ytr), test=Split(xte, yte), num_classes=num_classes,
                   epsilon=0.3 if gray else 8 / 255, step_size=0.01 if gray else 2 / 255,
                   default_model="lenet5" if gray and xtr.shape[-1] >= 28 else "small-cnn")


#: Digits held out as the test split (a fixed shuffle with seed 0 decides which).
DIGITS_TEST_SIZE = 500


@register_dataset("digits", default_model="small-cnn")
def digits(data_dir: Path) -> Dataset:
    """scikit-learn's bundled 1 797 8×8 digits, 17 grey levels scaled to 0-255; 1 297 train / 500 test.

    Offline default. MNIST's ε = 0.3 is too strong for 8×8 images of 17 grey levels (PGD training reaches 19 %
    robust, 56 % clean) and ε = 0.1 too weak (standard training keeps 57 % robust), so digits uses ε = 0.2 with
    MNIST's step 0.01: small-cnn, 10 epochs on the full pool, gives 96 % clean / 2 % robust under standard and
    92 % clean / 51 % robust under PGD training (measured with PGD-50).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    perm = np.random.default_rng(0).permutation(len(x))
    te, tr = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
    y = d.target.astype(np.int64)
    return Dataset(name="digits", train=Split(torch.from_numpy(x[tr]), torch.from_numpy(y[tr])),
                   test=Split(torch.from_numpy(x[te]), torch.from_numpy(y[te])), num_classes=10,
                   epsilon=0.2, step_size=0.01, default_model=default_model_for("digits"))
