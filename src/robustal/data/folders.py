"""Image folders as data: ``root/<class>/*.png`` (labeled) or ``root/*.png`` (unlabeled), read into uint8 tensors.

Each image's path relative to the folder is its sample id: it never changes between runs, so labels a person gives
for ``cat/17.png`` stay attached to that file. Unreadable images are collected and reported together, never skipped,
and files that are not images robustal reads are listed in a warning, so that a dataset never silently shrinks.
Images are read as a person sees them in a viewer: 16-bit grey scaled to 8 bits, transparency composited on white.
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

#: Image file suffixes read (compared case-insensitively); other files are skipped and listed in a warning.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
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


@dataclass(frozen=True)
class _Scan:
    """A folder's files by role: images directly in it, images per class sub-folder, class sub-folders without
    images, and files that are not images robustal reads (paths relative to the folder)."""

    flat: list[Path]
    by_class: dict[str, list[Path]]
    empty: list[str]
    skipped: list[str]


def _scan(root: Path) -> _Scan:
    if not root.is_dir():
        raise DataError(f"Image folder {str(root)!r} does not exist or is not a folder. Expected {_LAYOUTS}.")
    flat: list[Path] = []
    by_class: dict[str, list[Path]] = {}
    empty: list[str] = []
    nested: list[str] = []
    skipped: list[str] = []
    for entry in _visible(root):
        if entry.is_dir():
            images = []
            for p in _visible(entry):
                if _is_image(p):
                    images.append(p)
                elif p.is_dir() and any(_is_image(q) for q in p.rglob("*")):
                    nested.append(p.relative_to(root).as_posix() + "/")
                elif p.is_file():
                    skipped.append(p.relative_to(root).as_posix())
            if images:
                by_class[entry.name] = images
            else:
                empty.append(entry.name)
        elif _is_image(entry):
            flat.append(entry)
        elif entry.is_file():
            skipped.append(entry.name)
    if nested:
        raise DataError(f"{root}: images are nested more than one sub-folder deep in {_listed(nested)}. "
                        f"Expected {_LAYOUTS}; move them up into their class folder.")
    if flat and by_class:
        raise DataError(f"{root}: holds images both directly ({_listed([p.name for p in flat])}) and in "
                        f"sub-folders ({_listed([c + '/' for c in by_class])}). Use one layout: {_LAYOUTS}.")
    if not flat and not by_class:
        other = f" (only files of other types: {_listed(skipped)})" if skipped else ""
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found{other}. Expected {_LAYOUTS}.")
    return _Scan(flat, by_class, empty, skipped)


def scan_image_folder(path: str | Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """The image files of a folder without reading them: ``(flat images, {class: images})``, one of them empty.

    Raises DataError for a missing folder, a mixed or too deep layout, or a folder without images.
    """
    scan = _scan(Path(path).expanduser())
    return scan.flat, scan.by_class


#: What transparent pixels are composited on: white, as an image viewer or a web page shows a transparent background
#: (a black digit drawn on a transparent background looks black on white; on black it would vanish).
BACKGROUND = (255, 255, 255)


def _as_seen(im):
    """An opened Pillow image as a person sees it in a viewer, in mode ``L``, ``RGB`` or ``RGBA``.

    16-bit grey (``I;16``, ``I`` from a 16-bit PNG) is scaled from 0-65535 to 0-255, not clipped at 255; palette,
    ``LA`` and ``RGBA`` images and those with a transparent colour (``tRNS``) keep their transparency as an alpha
    channel, for :func:`_composite`. Floating-point pixels have no agreed white point and are refused.
    """
    from PIL import Image

    if im.mode == "F":
        raise ValueError("floating-point pixels (mode F) have no agreed range; export the image as 8- or 16-bit PNG")
    if im.mode == "I" or im.mode.startswith("I;16"):
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"32-bit pixel values in [{values.min()}, {values.max()}], outside 16 bits; export the "
                             "image as 8- or 16-bit PNG")
        grey = Image.fromarray(np.round(values / 257).astype(np.uint8), "L")  # 65535 / 255 = 257
        transparent = im.info.get("transparency")
        if isinstance(transparent, int):  # a 16-bit grey PNG's tRNS: one grey level is transparent
            grey.putalpha(Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), "L"))
        return grey
    if im.has_transparency_data:
        return im.convert("RGBA")
    return im if im.mode in ("L", "RGB") else im.convert("RGB")


def _composite(im):
    """``(image without transparency, whether any pixel was transparent)``: an ``LA``/``RGBA`` image composited on
    :data:`BACKGROUND`."""
    from PIL import Image

    if im.mode not in ("LA", "RGBA"):
        return im, False
    rgba = im.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:  # fully opaque: nothing to composite
        return rgba.convert("RGB"), False
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB"), True


def _load(path: Path, image_size: int, mode: str) -> tuple[np.ndarray, bool]:
    """One image file as ``(H×W or H×W×C uint8 array, whether transparent pixels were composited)``."""
    from PIL import Image, ImageOps

    if path.stat().st_size == 0:
        raise OSError("empty file (0 bytes)")
    with Image.open(path) as im:  # an animated GIF or WebP: its first frame
        im = ImageOps.exif_transpose(im)  # camera photos: apply the EXIF rotation a viewer shows
        im, composited = _composite(_as_seen(im))
        return np.asarray(im.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)), composited


def read_image_folder(path: str | Path, image_size: int, channels: int = 3, *,
                      classes: list[str] | None = None) -> ImageFolder:
    """Read every image of a labeled (``root/<class>/*.png``) or flat (``root/*.png``) folder.

    Each image is read as a viewer shows it (16-bit grey scaled to 0-255; transparent pixels composited on
    :data:`BACKGROUND`, white; an animated GIF or WebP by its first frame), converted to grey (``channels=1``) or
    RGB (``channels=3``) and resized to ``image_size`` × ``image_size`` with bilinear interpolation; the aspect ratio
    is not kept (crop beforehand where it matters). Hidden files and folders are ignored; files of other types are
    skipped and listed in a warning.

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
    scan = _scan(root)
    flat, by_class = scan.flat, scan.by_class
    if scan.skipped:
        log.warning("%s: skipped %d file(s) that are not %s images: %s", root, len(scan.skipped),
                    "/".join(IMAGE_SUFFIXES), _listed(scan.skipped))
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
    transparent: list[str] = []
    for i, (p, sample_id) in enumerate(zip(files, ids, strict=True)):
        try:
            image, composited = _load(p, image_size, "L" if channels == 1 else "RGB")
        except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... for broken files
            bad.append((sample_id, f"{type(e).__name__}: {e}"))
            continue
        x[i] = image.reshape(image_size, image_size, channels)
        if composited:
            transparent.append(sample_id)
    if bad:
        raise DataError(f"{root}: {len(bad)} of {len(files)} image files cannot be read: "
                        f"{_listed([b[0] for b in bad])}. The first, {bad[0][0]}: {bad[0][1]}. Remove or replace "
                        "these files (e.g. re-export them as PNG) and run again.")
    if transparent:
        log.info("%s: %d of %d images have transparent pixels (%s), read on a white background as a viewer shows "
                 "them", root, len(transparent), len(files), _listed(transparent))
    y = None
    if names is not None:
        index = {c: k for k, c in enumerate(names)}
        y = torch.tensor([index[i.split("/", 1)[0]] for i in ids], dtype=torch.int64)
    return ImageFolder(root=root, ids=ids, x=torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), y=y, classes=names)


_SPLIT_LAYOUT = "DIR/train/<class>/*.png and DIR/test/<class>/*.png (one sub-folder per class in each)"


def folder_dataset(path: str | Path, image_size: int, channels: int, epsilon: float,
                   step_size: float | None = None, classes: list[str] | None = None) -> tuple[Dataset, FolderInfo]:
    """A :class:`Dataset` from ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``; the classes are ``train/``'s
    sub-folders, sorted, or ``classes`` in their order (a model's, recorded in its checkpoint: a sub-folder outside
    them is an error).

    The test set may lack a class but not add one: a class without training images could never be predicted, so a
    ``test/<class>/`` absent from ``train/`` is refused, and so is an empty ``train/<class>/`` (a class that would
    vanish without a word).

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
    scans = {part: _scan(root / part) for part in ("train", "test")}
    for part, scan in scans.items():
        if scan.flat:
            raise DataError(f"{root / part}: holds images directly ({_listed([p.name for p in scan.flat])}) but "
                            f"needs one sub-folder per class: {_SPLIT_LAYOUT}.")
    if scans["train"].empty:
        raise DataError(f"{root / 'train'}: the class folder(s) {_listed([c + '/' for c in scans['train'].empty])} "
                        f"hold no {'/'.join(IMAGE_SUFFIXES)} images. Add the class's training images, or remove the "
                        "folder if the class does not belong to the data.")
    if classes is not None:  # a model's classes: read_image_folder refuses a sub-folder outside them
        classes = list(classes)
    else:
        classes = sorted(scans["train"].by_class)
        unseen = sorted(set(scans["test"].by_class) - set(classes))
        if unseen:
            raise DataError(f"{root / 'test'}: the class folder(s) {_listed([c + '/' for c in unseen])} have no "
                            f"counterpart in {root / 'train'}, so the model could never learn them. Add training "
                            f"images in train/{unseen[0]}/ (the same folder name), or remove the class from test/.")
        if len(classes) < 2:
            raise DataError(f"{root / 'train'}: holds one class ({classes[0]}/); a classifier needs at least two "
                            "class folders.")
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
