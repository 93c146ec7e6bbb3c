"""What robustal asks a person to label: the files of a request.

Each round robustal writes a *request* for the samples it picked: a CSV with ``id,label`` to fill in, a contact
sheet (PNG) that shows every image with its CSV row and id, and a Label Studio task file with its labeling config.
The answers come back as the filled CSV or a Label Studio export (:mod:`robustal.labeling.label_formats`). Sample ids
are strings that never change between rounds: an image folder's relative paths, or a pool index in decimal.

Label Studio formats followed:

* Import: a JSON list of tasks ``{"data": {...}, "predictions": [...]}`` whose data keys match the ``$variables`` of
  the labeling config (https://labelstud.io/guide/tasks); the config is the image classification template,
  ``<Image name="image" value="$image"/>`` with ``<Choices name="label">``
  (https://labelstud.io/templates/image_classification, https://labelstud.io/tags/choices). Besides the image, a
  task's data hold ``robustal_id`` (the sample id, which the answers are matched on), ``robustal_request`` (the
  request's name, to filter one round's tasks in a project that keeps every round) and ``robustal_project`` (the
  labeling project's token, which the answers are checked against: :mod:`robustal.labeling.label_origin`).
* Predictions (pre-annotations, https://labelstud.io/guide/predictions): the model's class as a choice, in the
  annotations' own format, with its softmax probability as ``score``; ``model_version`` is the same for every round
  (:data:`PREDICTION_MODEL_VERSION`), because a project shows the predictions of one model version (the first one it
  was sent, unless changed in its settings).
* Images are referenced as local files, ``/data/local-files/?d=<absolute path without its leading />``, which
  Label Studio serves when started with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/``, for files under a folder added to the project as a Local Files
  source storage (https://labelstud.io/guide/storage#Local-storage).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import torch

from robustal.errors import ConfigError
from robustal.labeling.label_formats import CHOICE_NAME, ID_FIELD
from robustal.labeling.label_origin import LOCAL_FILES_URL, PROJECT_FIELD, REQUEST_FIELD
from robustal.storage.outputs import atomic_write_bytes

#: Contact sheet layout: images per page, columns, and the side of each image in pixels.
SHEET_PER_PAGE = 100
SHEET_COLUMNS = 10
SHEET_CELL = 112
#: File name of the Label Studio labeling config written next to the requests.
LABEL_STUDIO_CONFIG = "label-studio-config.xml"
#: The ``model_version`` of every prediction robustal sends to Label Studio (see the module docstring).
PREDICTION_MODEL_VERSION = "robustal"


@dataclass(frozen=True)
class Request:
    """The files of one labeling request.

    Attributes:
        csv: ``id,label`` rows to fill in, one per requested sample.
        sheet: The contact sheet's first page (``sheets`` lists every page).
        label_studio: Label Studio task import file (JSON); the config is ``label-studio-config.xml`` beside it.
        ids: The requested sample ids, in CSV order.
    """

    csv: Path
    sheet: Path
    label_studio: Path
    ids: list[str]
    sheets: list[Path] = field(default_factory=list)


def _check_request(name: str, ids: list[str], images: torch.Tensor, classes: list[str],
                   image_paths: list[Path] | None, predictions: torch.Tensor | None) -> None:
    def fail(param: str, must: str, got: object) -> ConfigError:
        return ConfigError(f"The {param!r} parameter of write_request must be {must}. Got {got!r} instead.")

    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise fail("name", "a plain file name such as 'stage-003' (no folder, not hidden)", name)
    if any(not isinstance(i, str) or not i.strip() for i in ids) or len(set(ids)) != len(ids):
        raise fail("ids", "a list of distinct, non-empty strings", ids[:5])
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3) \
            or len(images) != len(ids):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise fail("images", f"a tensor (N, C, H, W) with C 1 or 3 and N = len(ids) = {len(ids)}", got)
    if not classes or any(not isinstance(c, str) or not c for c in classes) or len(set(classes)) != len(classes):
        raise fail("classes", "a non-empty list of distinct class names", classes)
    if image_paths is not None and len(image_paths) != len(ids):
        raise fail("image_paths", f"None or one path per id ({len(ids)})", f"{len(image_paths)} paths")
    if predictions is not None and (not isinstance(predictions, torch.Tensor) or not predictions.is_floating_point()
                                    or tuple(predictions.shape) != (len(ids), len(classes))):
        got = tuple(predictions.shape) if isinstance(predictions, torch.Tensor) else type(predictions).__name__
        raise fail("predictions", f"None or class probabilities, a float tensor ({len(ids)}, {len(classes)})", got)


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(1, 2, 0).numpy()


def _pil(image: torch.Tensor):
    from PIL import Image

    a = _to_uint8_hwc(image)
    return Image.fromarray(a[:, :, 0], "L") if a.shape[2] == 1 else Image.fromarray(np.ascontiguousarray(a), "RGB")


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text``, shortened from the left with '…' to fit ``width`` pixels (the end of a path names the file)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text


def contact_sheets(images: torch.Tensor, ids: list[str], title: str) -> list[bytes]:
    """PNG pages of at most :data:`SHEET_PER_PAGE` images, each captioned with its CSV row (2 = first data row)
    and id; small images are enlarged with nearest-neighbour so that their pixels stay sharp."""
    from PIL import Image, ImageDraw

    font, pad, caption, header = _font(12), 8, 32, 30
    pages = []
    n_pages = max(1, -(-len(ids) // SHEET_PER_PAGE))
    for page in range(n_pages):
        start = page * SHEET_PER_PAGE
        part = range(start, min(start + SHEET_PER_PAGE, len(ids)))
        cols = max(1, min(SHEET_COLUMNS, len(part)))
        rows = max(1, -(-len(part) // cols))
        cell_w, cell_h = SHEET_CELL + pad, SHEET_CELL + caption + pad
        sheet = Image.new("RGB", (max(cols * cell_w + pad, 420), header + rows * cell_h + pad), "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((pad, 8), f"{title}: page {page + 1} of {n_pages}; 'row' = row of {title}.csv", fill="black",
                  font=font)
        for k, i in enumerate(part):
            x0, y0 = pad + (k % cols) * cell_w, header + (k // cols) * cell_h
            im = _pil(images[i]).convert("RGB")
            scale = SHEET_CELL / max(im.size)
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR)
            sheet.paste(im, (x0 + (SHEET_CELL - size[0]) // 2, y0 + (SHEET_CELL - size[1]) // 2))
            draw.rectangle((x0 - 1, y0 - 1, x0 + SHEET_CELL, y0 + SHEET_CELL), outline="#999999")
            draw.text((x0, y0 + SHEET_CELL + 2), f"row {i + 2}", fill="black", font=font)
            draw.text((x0, y0 + SHEET_CELL + 16), _fit(draw, ids[i], font, SHEET_CELL), fill="#333333", font=font)
        pages.append(_png(sheet))
    return pages


def _local_file_url(path: Path) -> str:
    """Label Studio's local-files URL for ``path``, relative to the document root ``/``."""
    path = path.resolve()
    return LOCAL_FILES_URL + quote(path.relative_to(path.anchor).as_posix(), safe="/")


def label_studio_config(classes: list[str]) -> str:
    """The labeling config: the image and one single choice among the classes."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (f"<View>\n  <Image name=\"image\" value=\"$image\"/>\n"
            f"  <Choices name=\"{CHOICE_NAME}\" toName=\"image\" choice=\"single\" showInline=\"true\">\n"
            f"{choices}\n  </Choices>\n</View>\n")


def label_studio_tasks(name: str, ids: list[str], image_paths: list[Path], classes: list[str],
                       predictions: torch.Tensor | None = None, project: str | None = None) -> list[dict]:
    """Label Studio tasks for a request: the image, robustal's id, the request's name and the project's token
    (``project``, when given); with the model's class as a prediction (score: its probability) when
    ``predictions`` (class probabilities ``(N, C)``) are given."""
    extra = {PROJECT_FIELD: project} if project else {}
    tasks = [{"data": {"image": _local_file_url(Path(p)), ID_FIELD: i, REQUEST_FIELD: name, **extra}}
             for i, p in zip(ids, image_paths, strict=True)]
    if predictions is not None:
        scores, classes_predicted = predictions.float().max(1)
        for task, score, k in zip(tasks, scores.tolist(), classes_predicted.tolist(), strict=True):
            choice = {"from_name": CHOICE_NAME, "to_name": "image", "type": "choices",
                      "value": {"choices": [classes[k]]}}
            task["predictions"] = [{"model_version": PREDICTION_MODEL_VERSION, "score": round(score, 4),
                                    "result": [choice]}]
    return tasks


def _safe_names(ids: list[str]) -> list[str]:
    """File names for ids: characters outside ``[A-Za-z0-9._-]`` become '_'; a clash (ignoring case, as some file
    systems do) gets a number appended."""
    names: list[str] = []
    used: set[str] = set()
    for i in ids:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", i).lstrip(".") or "image"
        safe, n = base, 2
        while safe.lower() in used:
            safe, n = f"{base}-{n}", n + 1
        used.add(safe.lower())
        names.append(safe + ".png")
    return names


def write_request(folder: str | Path, name: str, ids: list[str], images: torch.Tensor, classes: list[str], *,
                  image_paths: list[Path] | None = None, predictions: torch.Tensor | None = None,
                  project: str | None = None) -> Request:
    """Write the request ``name`` for ``ids`` into ``folder`` (created if needed); every file atomically.

    Writes ``NAME.csv`` (``id,label``, label empty; with ``project``, a third column ``robustal_project`` holding
    it in every row), the contact sheet ``NAME.png`` (``NAME-2.png``, ... beyond
    :data:`SHEET_PER_PAGE` images), ``NAME-label-studio.json`` and ``label-studio-config.xml``. Label Studio tasks
    reference ``image_paths`` (an image folder's own files) when given, else PNGs written to ``NAME-images/``.
    The CSV is written last, so that its presence means the request is complete.

    Args:
        folder: Where the files go.
        name: File name stem, e.g. ``"stage-003"``.
        ids: Sample ids, in the order of the CSV rows.
        images: The samples' images, uint8 (or float in [0, 1]) ``(N, C, H, W)``.
        classes: Class names, in class-index order.
        image_paths: Each sample's image file, for Label Studio.
        predictions: The model's class probabilities ``(N, C)``, sent to Label Studio as pre-annotations.
        project: The labeling project's token, written into every CSV row and task
            (:mod:`robustal.labeling.label_origin`).
    """
    ids, classes = list(ids), list(classes)
    _check_request(name, ids, images, classes, image_paths, predictions)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if image_paths is None:
        image_dir = folder / f"{name}-images"
        image_paths = [image_dir / n for n in _safe_names(ids)]
        for path, image in zip(image_paths, images, strict=True):
            atomic_write_bytes(path, _png(_pil(image)))
    tasks = label_studio_tasks(name, ids, image_paths, classes, predictions, project)
    label_studio = folder / f"{name}-label-studio.json"
    atomic_write_bytes(label_studio, (json.dumps(tasks, indent=1, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(folder / LABEL_STUDIO_CONFIG, label_studio_config(classes).encode())
    sheets = []
    for k, page in enumerate(contact_sheets(images, ids, name)):
        sheets.append(folder / (f"{name}.png" if k == 0 else f"{name}-{k + 1}.png"))
        atomic_write_bytes(sheets[-1], page)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "label"] + ([PROJECT_FIELD] if project else []))
    writer.writerows([i, ""] + ([project] if project else []) for i in ids)
    csv_path = folder / f"{name}.csv"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    return Request(csv=csv_path, sheet=sheets[0], label_studio=label_studio, ids=ids, sheets=sheets)


__all__ = ["LABEL_STUDIO_CONFIG", "LOCAL_FILES_URL", "PREDICTION_MODEL_VERSION", "PROJECT_FIELD", "REQUEST_FIELD",
           "Request", "contact_sheets", "label_studio_config", "label_studio_tasks", "write_request"]
