"""Image folders as data: ``root/<class>/*.png`` (labeled) or ``root/*.png`` (unlabeled), read into uint8 tensors.

Each image's path relative to the folder is its sample id: it never changes between runs, so labels a person gives
for ``cat/17.png`` stay attached to that file. Unreadable images are collected and reported together, never skipped,
so that a dataset never silently shrinks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robustal._validation import _fail, check_float, check_int
from robustal.data.dataset import Dataset, Split
from robustal.errors import DataError

log = logging.getLogger(__name__)

#: Image file suffixes read (compared case-insensitively); other files are ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Names listed in one error message before "and K more".
MAX_LISTED = 20

_LAYOUTS = ("one sub-folder per class holding the images (DIR/<class>/*.png) for labeled data, or the images "
            "directly in the folder (DIR/*.png) for unlabeled data")


@dataclass(frozen=True)
class ImageFolder:
    """The images of a folder; ``y`` and ``classes`` are None for a flat (unlabeled) folder.

    Attributes:
        root: The folder read.
        ids: Each image's path relative to ``root``, POSIX style, sorted: the stable sample id.
        x: uint8 images ``(N, C, H, W)``, in the order of ``ids``.
        y: int64 class indices ``(N,)`` into ``classes`` (labeled folder), or None.
        classes: Class names: the sorted sub-folder names, or the order given to :func:`read_image_folder`.
    """

    root: Path
    ids: list[str]
    x: torch.Tensor
    y: torch.Tensor | None
    classes: list[str] | None


@dataclass(frozen=True)
class FolderInfo:
    """What :func:`folder_dataset` knows beyond the tensors: sample ids (relative to ``train/``, ``test/``) and
    class names, so that callers can show files and names instead of indices."""

    train_ids: list[str]
    test_ids: list[str]
    classes: list[str]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` not starting with '.', sorted by name."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def scan_image_folder(path: str | Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """The image files of a folder without reading them: ``(flat images, {class: images})``, one of them empty.

    Raises DataError for a missing folder, a mixed or too deep layout, or a folder without images.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {str(root)!r} does not exist or is not a folder. Expected {_LAYOUTS}.")
    flat: list[Path] = []
    by_class: dict[str, list[Path]] = {}
    nested: list[str] = []
    for entry in _visible(root):
        if entry.is_dir():
            images = []
            for p in _visible(entry):
                if _is_image(p):
                    images.append(p)
                elif p.is_dir() and any(_is_image(q) for q in p.rglob("*")):
                    nested.append(p.relative_to(root).as_posix() + "/")
                else:
                    log.debug("%s: ignoring %s (not a %s image)", root, p.relative_to(root), "/".join(IMAGE_SUFFIXES))
            if images:
                by_class[entry.name] = images
            else:
                log.debug("%s: ignoring sub-folder %s/ (no images)", root, entry.name)
        elif _is_image(entry):
            flat.append(entry)
        else:
            log.debug("%s: ignoring %s (not a %s image)", root, entry.name, "/".join(IMAGE_SUFFIXES))
    if nested:
        raise DataError(f"{root}: images are nested more than one sub-folder deep in {_listed(nested)}. "
                        f"Expected {_LAYOUTS}; move them up into their class folder.")
    if flat and by_class:
        raise DataError(f"{root}: holds images both directly ({_listed([p.name for p in flat])}) and in "
                        f"sub-folders ({_listed([c + '/' for c in by_class])}). Use one layout: {_LAYOUTS}.")
    if not flat and not by_class:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found. Expected {_LAYOUTS}.")
    return flat, by_class


def _load(path: Path, image_size: int, mode: str) -> np.ndarray:
    from PIL import Image, ImageOps

    if path.stat().st_size == 0:
        raise OSError("empty file (0 bytes)")
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert(mode)  # camera photos: apply the EXIF rotation a viewer shows
        return np.asarray(im.resize((image_size, image_size), Image.Resampling.BILINEAR))


def read_image_folder(path: str | Path, image_size: int, channels: int = 3, *,
                      classes: list[str] | None = None) -> ImageFolder:
    """Read every image of a labeled (``root/<class>/*.png``) or flat (``root/*.png``) folder.

    Each image is converted to grey (``channels=1``) or RGB (``channels=3``) and resized to ``image_size`` ×
    ``image_size`` with bilinear interpolation; the aspect ratio is not kept (crop beforehand where it matters).
    Hidden files and folders and files of other types are ignored.

    Args:
        path: The folder.
        image_size: Side of the square images returned, at least 4.
        channels: 1 (grey) or 3 (RGB).
        classes: The class order to use (e.g. the training folder's); a sub-folder not in it is an error.
            Default: the sorted sub-folder names.

    Raises:
        DataError: For a bad layout, a sub-folder outside ``classes``, or images that cannot be read (all of them
            listed in one message).
    """
    check_int(image_size, "image_size", "read_image_folder", min_value=4)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise _fail("channels", "read_image_folder", "1 (grey) or 3 (RGB)", channels)
    root = Path(path).expanduser()
    flat, by_class = scan_image_folder(root)
    names: list[str] | None = None
    if by_class:
        names = sorted(by_class) if classes is None else list(classes)
        unknown = sorted(set(by_class) - set(names))
        if unknown:
            raise DataError(f"{root}: sub-folder(s) {_listed([c + '/' for c in unknown])} are not among the "
                            f"classes {', '.join(names)}. Rename or remove them, or add the class to the "
                            "training data.")
    files = flat or [p for c in by_class for p in by_class[c]]
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    ids = [p.relative_to(root).as_posix() for p in files]
    x = np.empty((len(files), image_size, image_size, channels), np.uint8)
    bad: list[tuple[str, str]] = []
    for i, (p, sample_id) in enumerate(zip(files, ids, strict=True)):
        try:
            x[i] = _load(p, image_size, "L" if channels == 1 else "RGB").reshape(image_size, image_size, channels)
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... for broken files
            bad.append((sample_id, f"{type(e).__name__}: {e}"))
    if bad:
        raise DataError(f"{root}: {len(bad)} of {len(files)} image files cannot be read: "
                        f"{_listed([b[0] for b in bad])}. The first, {bad[0][0]}: {bad[0][1]}. Remove or replace "
                        "these files (e.g. re-export them as PNG) and run again.")
    y = None
    if names is not None:
        index = {c: k for k, c in enumerate(names)}
        y = torch.tensor([index[i.split("/", 1)[0]] for i in ids], dtype=torch.int64)
    return ImageFolder(root=root, ids=ids, x=torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), y=y, classes=names)


_SPLIT_LAYOUT = "DIR/train/<class>/*.png and DIR/test/<class>/*.png (one sub-folder per class in each)"


def folder_dataset(path: str | Path, image_size: int, channels: int, epsilon: float,
                   step_size: float | None = None, classes: list[str] | None = None) -> tuple[Dataset, FolderInfo]:
    """A :class:`Dataset` from ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``; classes are the sorted union
    of both (the test set may lack a class), or ``classes`` in their order (a model's, recorded in its checkpoint:
    a sub-folder outside them is an error).

    The PGD step defaults to ε/30 for grey images (MNIST's 0.01 at ε = 0.3) and ε/4 for colour ones (CIFAR-10's
    2/255 at ε = 8/255). See :func:`read_image_folder` for how the images are read.
    """
    check_int(image_size, "image_size", "folder_dataset", min_value=4)
    if isinstance(channels, bool) or channels not in (1, 3):
        raise _fail("channels", "folder_dataset", "1 (grey) or 3 (RGB)", channels)
    epsilon = check_float(epsilon, "epsilon", "folder_dataset", min_value=0, max_value=1)
    if step_size is not None:
        step_size = check_float(step_size, "step_size", "folder_dataset", min_value=0, max_value=1,
                                min_inclusive=False)
    root = Path(path).expanduser()
    missing = [part + "/" for part in ("train", "test") if not (root / part).is_dir()]
    if missing:
        raise DataError(f"{root}: no {' or '.join(missing)} sub-folder. An image-folder dataset is laid out as "
                        f"{_SPLIT_LAYOUT}.")
    scans = {part: scan_image_folder(root / part) for part in ("train", "test")}
    for part, (flat, _) in scans.items():
        if flat:
            raise DataError(f"{root / part}: holds images directly ({_listed([p.name for p in flat])}) but needs "
                            f"one sub-folder per class: {_SPLIT_LAYOUT}.")
    classes = list(classes) if classes is not None else sorted(set(scans["train"][1]) | set(scans["test"][1]))
    train = read_image_folder(root / "train", image_size, channels, classes=classes)
    test = read_image_folder(root / "test", image_size, channels, classes=classes)
    assert train.y is not None and test.y is not None
    step = step_size if step_size is not None else epsilon / 30 if channels == 1 else epsilon / 4
    from robustal.models import default_model_for_images

    default_model = default_model_for_images(channels, image_size)
    dataset = Dataset(name=str(root), train=Split(train.x, train.y), test=Split(test.x, test.y),
                      num_classes=len(classes), epsilon=epsilon, step_size=step, augment=(),
                      default_model=default_model, class_names=tuple(classes))
    return dataset, FolderInfo(train_ids=train.ids, test_ids=test.ids, classes=classes)
