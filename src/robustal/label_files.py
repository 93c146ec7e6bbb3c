"""What robustal asks a person to label, and what comes back.

Each round robustal writes a *request* for the samples it picked: a CSV with ``id,label`` to fill in, a contact
sheet (PNG) that shows every image with its CSV row and id, and a Label Studio task file with its labeling config.
The person answers with the filled CSV or a Label Studio JSON export, and :func:`read_answers` turns either into
``{id: class index}``, or refuses the whole file with every problem listed, so that no wrong or partial label
enters training. Sample ids are strings that never change between rounds: an image folder's relative paths, or a
pool index in decimal.

Label Studio formats followed:

* Import: a JSON list of tasks ``{"data": {...}}`` whose keys match the ``$variables`` of the labeling config
  (https://labelstud.io/guide/tasks, https://api.labelstud.io/tutorials/tutorials/import-tasks); the config is the
  image classification template, ``<Image name="image" value="$image"/>`` with ``<Choices>``
  (https://labelstud.io/templates/image_classification, https://labelstud.io/tags/choices).
* Images are referenced as local files, ``/data/local-files/?d=<absolute path without its leading />``, which
  Label Studio serves when started with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
  ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/``, and the folder is added as a Local Files source storage
  (https://labelstud.io/guide/storage).
* Export: the JSON export, a list of tasks with ``data`` and ``annotations[*].result[*].value.choices`` and
  ``was_cancelled`` per annotation (https://labelstud.io/guide/task_format).
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

from robustal.errors import ConfigError, DataError, nearest
from robustal.outputs import atomic_write_bytes

#: Problems listed in one error message before "and K more".
MAX_PROBLEMS = 20
#: Contact sheet layout: images per page, columns, and the side of each image in pixels.
SHEET_PER_PAGE = 100
SHEET_COLUMNS = 10
SHEET_CELL = 112
#: File name of the Label Studio labeling config written next to the requests.
LABEL_STUDIO_CONFIG = "label-studio-config.xml"
LOCAL_FILES_URL = "/data/local-files/?d="


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
                   image_paths: list[Path] | None) -> None:
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
            f"  <Choices name=\"label\" toName=\"image\" choice=\"single\" showInline=\"true\">\n{choices}\n"
            "  </Choices>\n</View>\n")


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
                  image_paths: list[Path] | None = None) -> Request:
    """Write the request ``name`` for ``ids`` into ``folder`` (created if needed); every file atomically.

    Writes ``NAME.csv`` (``id,label``, label empty), the contact sheet ``NAME.png`` (``NAME-2.png``, ... beyond
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
    """
    ids, classes = list(ids), list(classes)
    _check_request(name, ids, images, classes, image_paths)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if image_paths is None:
        image_dir = folder / f"{name}-images"
        image_paths = [image_dir / n for n in _safe_names(ids)]
        for path, image in zip(image_paths, images, strict=True):
            atomic_write_bytes(path, _png(_pil(image)))
    tasks = [{"data": {"image": _local_file_url(Path(p)), "robustal_id": i}}
             for i, p in zip(ids, image_paths, strict=True)]
    label_studio = folder / f"{name}-label-studio.json"
    atomic_write_bytes(label_studio, (json.dumps(tasks, indent=1, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(folder / LABEL_STUDIO_CONFIG, label_studio_config(classes).encode())
    sheets = []
    for k, page in enumerate(contact_sheets(images, ids, name)):
        sheets.append(folder / (f"{name}.png" if k == 0 else f"{name}-{k + 1}.png"))
        atomic_write_bytes(sheets[-1], page)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "label"])
    writer.writerows([i, ""] for i in ids)
    csv_path = folder / f"{name}.csv"
    atomic_write_bytes(csv_path, buf.getvalue().encode())
    return Request(csv=csv_path, sheet=sheets[0], label_studio=label_studio, ids=ids, sheets=sheets)


# Reading answers -------------------------------------------------------------------------------------------------

class _Refused(Exception):
    """The file as a whole cannot be read (wrong format); its message says why."""


#: One answer as read: where it is in the file (for messages), the sample id, the label text (None: missing), and
#: whether a problem with it is already listed.
_Answer = tuple[str, str, str | None, bool]


def _csv_answers(text: str, problems: list[str]) -> list[_Answer]:
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","  # ';' from some locales
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:  # e.g. a quote left open, which would swallow the rows after it
        raise _Refused(f"not a readable CSV file (line {reader.line_num}: {e}). Check the quotes on that line, "
                       "or save the file again as CSV with columns id,label.") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if "id" not in header or "label" not in header:
        raise _Refused(f"the first row must name the columns 'id' and 'label'; it is {rows[0] if rows else []}. "
                       "Keep the header robustal wrote (id,label) and fill in the label column.")
    col_id, col_label = header.index("id"), header.index("label")
    answers = []
    for row_number, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue  # blank lines that spreadsheets leave at the end
        sample_id = cells[col_id] if col_id < len(cells) else ""
        label = cells[col_label] if col_label < len(cells) else ""
        if not sample_id:
            problems.append(f"row {row_number}: no id (the id column is empty)")
            continue
        answers.append((f"row {row_number}", sample_id, label or None, False))
    return answers


def _json_label(task: dict, where: str, problems: list[str]) -> str | None:
    """The label of a Label Studio task: the choice of its last annotation that was not cancelled."""
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        problems.append(f"{where}: 'annotations' is not a list")
        return None
    kept = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not kept:
        return None
    choices = [c for r in kept[-1].get("result") or [] if isinstance(r, dict)
               for c in (r.get("value") or {}).get("choices") or []]
    if len(choices) > 1:
        problems.append(f"{where}: {len(choices)} choices {choices}; pick exactly one class")
        return None
    return str(choices[0]) if choices else None


def _json_answers(text: str, problems: list[str]) -> list[_Answer]:
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Refused(f"not valid JSON ({e}). Export the project again from Label Studio as JSON.") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise _Refused("not a Label Studio JSON export: expected a list of tasks ({\"data\": ..., \"annotations\": "
                       f"...}}), got {type(tasks).__name__}. Export the project with the 'JSON' format.")
    answers = []
    for position, task in enumerate(tasks, start=1):
        data = task.get("data")
        sample_id = data.get("robustal_id") if isinstance(data, dict) else None
        if isinstance(sample_id, int) and not isinstance(sample_id, bool):
            sample_id = str(sample_id)
        if not isinstance(sample_id, str) or not sample_id.strip():
            problems.append(f"task {position}: no data.robustal_id (import the tasks robustal wrote, "
                            "not the images alone)")
            continue
        where = f"task {position} (id {sample_id.strip()!r})"
        listed = len(problems)
        label = _json_label(task, where, problems)
        answers.append((f"task {position}", sample_id.strip(), label.strip() or None if label else None,
                        len(problems) > listed))
    return answers


def _listed(items: list[str]) -> str:
    shown = ", ".join(map(repr, items[:MAX_PROBLEMS]))
    return shown + (f" and {len(items) - MAX_PROBLEMS} more" if len(items) > MAX_PROBLEMS else "")


def _class_index(label: str, classes: list[str], indices_allowed: bool) -> int | None:
    if label in classes:
        return classes.index(label)
    if indices_allowed and re.fullmatch(r"\d+", label) and int(label) < len(classes):
        return int(label)
    return None


def _suggest(label: str, classes: list[str]) -> str:
    close = next((c for c in classes if c.lower() == label.lower()), None) or nearest(label, classes)
    return f"; did you mean {close!r}?" if close else ""


def read_answers(path: str | Path, ids: list[str], classes: list[str]) -> dict[str, int]:
    """The labels a person gave for ``ids``: ``{id: class index}``, for exactly these ids.

    Reads a filled request CSV (``.csv``: columns ``id`` and ``label``, label as a class name or, where no class
    name is itself a number, a class index) or a Label Studio JSON export (``.json``: the last annotation of each
    task that was not cancelled). Whitespace around values is ignored; class names are case-sensitive.

    Raises:
        DataError: Listing every problem with its CSV row (2 = first data row, as a spreadsheet numbers it) or
            task position: unknown classes, missing labels, ids not asked for or missing, duplicate ids, a wrong
            header or format. Nothing is returned unless the whole file is right.
    """
    path = Path(path).expanduser()
    ids, classes = list(ids), list(classes)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"{path}: answers must be the request's filled .csv or a Label Studio .json export; "
                        f"got a {suffix or 'suffix-less'} file.")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM from spreadsheets is dropped
    except FileNotFoundError:
        raise DataError(f"{path}: the answers file does not exist. Fill in the request's CSV and give its path, "
                        "or export the Label Studio project as JSON.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the answers file ({e}).") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e}). Save it as 'CSV UTF-8' (or export JSON again).") from None
    problems: list[str] = []
    try:
        answers = (_csv_answers if suffix == ".csv" else _json_answers)(text, problems)
    except _Refused as e:
        raise DataError(f"{path}: {e}") from None
    asked = set(ids)
    indices_allowed = not any(re.fullmatch(r"\d+", c) for c in classes)
    first_seen: dict[str, str] = {}
    labels: dict[str, int] = {}
    unknown = False
    for where, sample_id, label, reported in answers:
        if sample_id in first_seen:
            problems.append(f"{where}: id {sample_id!r} appears again (first at {first_seen[sample_id]}); "
                            "keep one row per id")
            continue
        first_seen[sample_id] = where
        if sample_id not in asked:
            problems.append(f"{where}: id {sample_id!r} was not asked for in this request")
            continue
        if reported:
            continue
        if label is None:
            problems.append(f"{where} (id {sample_id!r}): no label; give one of the classes")
            continue
        index = _class_index(label, classes, indices_allowed)
        if index is None:
            unknown = True
            problems.append(f"{where} (id {sample_id!r}): unknown class {label!r}{_suggest(label, classes)}")
            continue
        labels[sample_id] = index
    missing = [i for i in ids if i not in first_seen]
    if missing:
        problems.append(f"{len(missing)} requested id(s) are not in the file: {_listed(missing)}")
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS])
        more = f"\n  and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        valid = ""
        if unknown:
            valid = f"\nValid classes: {', '.join(classes)}"
            valid += f" (or their indices 0..{len(classes) - 1})." if indices_allowed else "."
        raise DataError(f"{path}: {len(problems)} problem(s) in the answers; none were used:\n  {shown}{more}"
                        f"{valid}\nFix the file and read it again.")
    assert labels.keys() == asked, "every asked id is labeled or listed as a problem"
    return labels
