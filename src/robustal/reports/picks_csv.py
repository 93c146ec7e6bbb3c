"""The picks CSV of ``robustal select``, read back by ``robustal retrain --selected``: also a labeling request.

Columns: ``rank`` (from 1), ``index`` (into the dataset's training set), ``score`` (empty for metrics without
one), ``file`` (image folders only: the image's path under ``train/``) and ``label`` (written empty). A person
may fill in the ``label`` column -- a class name, or a class index where no class name is a number -- and
``retrain`` then trains on those labels instead of the dataset's; a column left empty means "label them from the
dataset", and a column filled in part is refused (the rows left are listed). Spreadsheets' ways of saving it are
read too: ``;`` or tab separators, a byte-order mark, headers in other case or with spaces, trailing empty cells
left out.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from robustal.acquisition import Selection
from robustal.errors import ConfigError, DataError
from robustal.storage.outputs import atomic_write_bytes

#: Problems listed in one message before "and K more".
MAX_LISTED = 10


def selection_csv(selection: Selection, ids: Sequence[str] | None = None) -> str:
    """CSV text with columns ``rank,index,score[,file],label`` (``file`` where ``ids`` names each training sample;
    ``label`` empty, for a person to fill in)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "index", "score", *(["file"] if ids is not None else []), "label"])
    scores = selection.scores.tolist() if selection.scores is not None else [None] * len(selection.indices)
    for rank, (index, score) in enumerate(zip(selection.indices.tolist(), scores, strict=True), start=1):
        score = "" if score is None or math.isnan(score) else repr(float(score))
        writer.writerow([rank, index, score, *([ids[index]] if ids is not None else []), ""])
    return buf.getvalue()


def write_selection(path: str | Path, selection: Selection, ids: Sequence[str] | None = None) -> None:
    """Write :func:`selection_csv` to ``path`` atomically."""
    atomic_write_bytes(Path(path), selection_csv(selection, ids).encode())


@dataclass(frozen=True)
class Picks:
    """Picked training-set indices in rank order, and the labels a person gave them (None: from the dataset)."""

    indices: torch.Tensor
    labels: torch.Tensor | None = None


def _listed(items: list[str]) -> str:
    return "; ".join(items[:MAX_LISTED]) + (f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The normalised header and the ``(line, cells)`` of each non-blank row."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a readable CSV (not UTF-8 text: {e.reason} at byte {e.start}). Save it as "
                        "'CSV UTF-8'.") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}).") from None
    if not text.strip():
        raise DataError(f"{path} is empty: it needs an 'index' column (robustal select writes rank,index,score,"
                        "label) and one row per pick.")
    first = text.splitlines()[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            hint = (f"a quote opened on line {line} is never closed; close it or remove it"
                    if "end of data" in str(e) else str(e))
            raise DataError(f"{path}, line {line}: not a readable CSV row ({hint}).") from None
        if any(c.strip() for c in cells):
            rows.append((line, [c.strip() for c in cells]))
    header = [h.lower() for h in rows[0][1]]
    return header, rows[1:]


def _class_index(label: str, classes: Sequence[str] | None, num_classes: int) -> int | None:
    """A class name's index, or an integer index where no class name is a number (or there are no names)."""
    if classes is not None and label in classes:
        return list(classes).index(label)
    numeric_names = classes is not None and any(re.fullmatch(r"\d+", c) for c in classes)
    if not numeric_names and re.fullmatch(r"\d+", label) and int(label) < num_classes:
        return int(label)
    return None


def read_selection(path: str | Path, pool_size: int, trained: torch.Tensor, n: int | None = None, *,
                   num_classes: int | None = None, classes: Sequence[str] | None = None,
                   ids: Sequence[str] | None = None) -> Picks:
    """The picks of a selection CSV in rank order (the first ``n`` if given), validated, with the person's labels.

    Args:
        pool_size: The training set's size.
        trained: Sorted pool indices the model was trained on: never picks.
        num_classes, classes: The classes labels may name (by name, or by index where no name is a number).
        ids: Each training sample's file (image folders): a ``file`` column must agree with the indices.

    Raises:
        DataError: Missing file, no rows, no ``index`` column, an unreadable or short row, a non-integer or repeated
            index, an index among the model's training data or beyond the training set, a file that is not the
            index's, or labels that are unknown or given for only some picks.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"Selection file {path} is a directory; give the CSV written by robustal select --out.")
    if not path.is_file():
        raise DataError(f"Selection file {path} not found. Write one with: robustal select ... --out {path}")
    header, rows = _rows(path)
    if "index" not in header:
        raise DataError(f"{path}: needs an 'index' column (robustal select writes rank,index,score,label); found "
                        f"{', '.join(header) or 'no header'}.")
    if not rows:
        raise DataError(f"{path} holds no picks, only its header. Write picks with: robustal select ... --out {path}")
    col = {name: header.index(name) for name in ("rank", "index", "file", "label") if name in header}
    problems = []
    parsed = []
    for line, cells in rows:
        if len(cells) > len(header):
            problems.append(f"line {line} has {len(cells)} values but the header names {len(header)} columns (a "
                            "comma inside a value? quote the value)")
            continue
        if len(cells) <= col["index"]:
            problems.append(f"line {line} has {len(cells)} value(s) and no index (the header names "
                            f"{', '.join(header)})")
            continue
        cell = dict(zip(header, cells + [""] * (len(header) - len(cells)), strict=True))
        try:
            rank = int(cell["rank"]) if "rank" in col else len(parsed)
            index = int(cell["index"])
        except ValueError:
            problems.append(f"line {line}: rank and index must be integers; got rank {cell.get('rank', '')!r}, "
                            f"index {cell['index']!r}")
            continue
        parsed.append((rank, line, index, cell.get("file", ""), cell.get("label", "")))
    if problems:
        raise DataError(f"{path}: {len(problems)} row(s) cannot be read: {_listed(problems)}.")
    parsed.sort(key=lambda r: r[0])
    if n is not None:
        if n < 1 or n > len(parsed):
            raise ConfigError(f"--n {n} must lie in [1, {len(parsed)}] (the file has {len(parsed)} picks).")
        parsed = parsed[:n]
    indices = torch.tensor([r[2] for r in parsed], dtype=torch.int64)
    _check_indices(path, indices, [r[1] for r in parsed], pool_size, trained)
    if ids is not None and "file" in col:
        wrong = [f"line {line}: index {i} is {ids[i]}, not {file}" for _, line, i, file, _ in parsed
                 if file and file != ids[i]]
        if wrong:
            raise DataError(f"{path}: files and indices disagree ({_listed(wrong)}). The image folder changed since "
                            "robustal select wrote this file; select again.")
    return Picks(indices, _labels(path, parsed, num_classes, classes) if "label" in col else None)


def _check_indices(path: Path, indices: torch.Tensor, lines: list[int], pool_size: int,
                   trained: torch.Tensor) -> None:
    k = len(trained)
    prefix = bool(torch.equal(trained, torch.arange(k)))
    seen = torch.zeros(pool_size, dtype=torch.bool)
    seen[trained] = True
    bad = [(line, int(i)) for line, i in zip(lines, indices.tolist(), strict=True)
           if not 0 <= i < pool_size or bool(seen[i])]
    if bad:
        where = (f"outside the new unlabeled set [{k}, {pool_size})" if prefix else
                 f"among the {k} samples the model was trained on, or outside [0, {pool_size})")
        raise DataError(f"{path}: {len(bad)} indices are {where} (e.g. {bad[0][1]} on line {bad[0][0]}). Indices "
                        "refer to the dataset's training set; the model's original training data are never picked.")
    if len(set(indices.tolist())) != len(indices):
        raise DataError(f"{path}: indices repeat; each sample can be selected once.")


def _labels(path: Path, parsed: list, num_classes: int | None, classes: Sequence[str] | None) -> torch.Tensor | None:
    """The person's labels of the picks, or None when the label column is empty."""
    given = [(line, label) for _, line, _, _, label in parsed if label]
    if not given:
        return None
    missing = [str(line) for _, line, _, _, label in parsed if not label]
    if missing:
        lines = f"line {missing[0]} has" if len(missing) == 1 else f"lines {', '.join(missing[:MAX_LISTED])}" + (
            " ..." if len(missing) > MAX_LISTED else "") + " have"
        raise DataError(f"{path}: the label column is filled for {len(given)} of {len(parsed)} picks; {lines} none. "
                        "Label every pick used (or use the top ones only, with --n), or empty the column to take "
                        "the dataset's labels.")
    assert num_classes is not None, "labels need the number of classes"
    labels, unknown = [], []
    for line, label in given:
        index = _class_index(label, classes, num_classes)
        if index is None:
            unknown.append(f"line {line}: {label!r}")
        labels.append(index)
    if unknown:
        valid = (f"{', '.join(classes)}" + ("" if any(re.fullmatch(r"\d+", c) for c in classes)
                                            else f" (or 0..{num_classes - 1})")) if classes else f"0..{num_classes - 1}"
        raise DataError(f"{path}: unknown class labels ({_listed(unknown)}). Valid labels: {valid}.")
    return torch.tensor(labels, dtype=torch.int64)


__all__ = ["Picks", "read_selection", "selection_csv", "write_selection"]
