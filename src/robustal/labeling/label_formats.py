"""The answer file formats: a filled request CSV, or a Label Studio export, parsed into one answer per sample id.

Formats read:

* robustal's request CSV filled in (columns ``id`` and ``label``; ``,``, ``;`` or tab separated, as spreadsheets of
  different locales save it);
* Label Studio's **JSON** export: tasks with ``data.robustal_id`` and ``annotations[*].result[*].value.choices``
  (https://labelstud.io/guide/export#JSON);
* Label Studio's **JSON-MIN** and **CSV** exports: one entry or row per annotation, with the task's data fields
  (``robustal_id``) and the choice under the control's name (``label``) (https://labelstud.io/guide/export). Label
  Studio's own task ``id`` is never read as robustal's id.

Within one Label Studio task the latest annotation that was not cancelled counts. This module only parses: whether
the answers are the right ones (the ids asked for, known classes, agreeing with earlier rounds) is checked by
:mod:`robustal.labeling.label_answers`, which reads a file through :func:`parse_answers`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import NamedTuple

from robustal.labeling.label_origin import PROJECT_FIELD, REQUEST_FIELD, Screen, Tags

#: The data field of a Label Studio task that holds robustal's sample id (written by write_request).
ID_FIELD = "robustal_id"
#: The name of the choice control in robustal's Label Studio labeling config.
CHOICE_NAME = "label"


class Refused(Exception):
    """The file as a whole cannot be read (wrong format); its message says why."""


class Answer(NamedTuple):
    """One answer as read: where it is in the file (for messages), the sample id as written, the label text (None:
    missing), and whether a problem with it is already listed."""

    where: str
    sample_id: str
    label: str | None
    reported: bool = False
    tags: Tags = Tags()


class _Annotation(NamedTuple):
    """One Label Studio annotation (or an unannotated task, ``label`` None): merged per id by :func:`_merge`."""

    where: str
    sample_id: str
    label: str | None
    task: object  # Label Studio's task id (or the position): several annotations of one task
    order: tuple  # (updated_at, annotation id): the latest annotation of a task counts
    reported: bool = False
    tags: Tags = Tags()


# CSV ---------------------------------------------------------------------------------------------------------------

def csv_table(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(row number, cells)])`` of a CSV (row 2 = the first after the header, as a spreadsheet numbers
    it) whose separator (``,``, ``;`` or tab) is the one its first line uses most; header names are stripped and
    lower-cased (``ID, Label`` reads as ``id,label``)."""
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:  # e.g. a quote left open, which would swallow the rows after it
        raise Refused(f"not a readable CSV file (line {reader.line_num}: {e}). Check the quotes on that line, "
                      "or save the file again as CSV with columns id,label.") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    return header, list(enumerate(rows[1:], start=2))


def cell(row: list[str], col: int) -> str:
    return row[col] if col < len(row) else ""


def _csv_answers(text: str, problems: list[str], screen) -> list[Answer]:
    header, rows = csv_table(text)
    if ID_FIELD in header and CHOICE_NAME in header:
        return _merge(screen(_label_studio_csv(header, rows, problems)), problems, screen.notes)
    others = [h for h in header if h not in _LABEL_STUDIO_FIELDS]
    if ID_FIELD in header and others:  # a Label Studio CSV export whose choice control is named otherwise
        raise Refused(_other_choice_name(others))
    if "id" not in header or "label" not in header:
        raise Refused(f"the first row must name the columns 'id' and 'label' (or, in a Label Studio CSV export, "
                      f"'{ID_FIELD}' and '{CHOICE_NAME}'); it is {header}. Keep the header robustal wrote "
                      "(id,label) and fill in the label column.")
    col_id, col_label = header.index("id"), header.index("label")
    col_project = header.index(PROJECT_FIELD) if PROJECT_FIELD in header else None
    answers = []
    for row_number, row in rows:
        if not any(c.strip() for c in row):
            continue  # blank lines that spreadsheets leave at the end
        sample_id, label = cell(row, col_id), cell(row, col_label).strip()
        if not sample_id.strip():
            problems.append(f"row {row_number}: no id (the id column is empty)")
            continue
        project = cell(row, col_project) if col_project is not None else None
        answers.append(Answer(f"row {row_number}", sample_id, label or None, tags=Tags(project=project or None)))
    return screen(answers)


#: Fields of a Label Studio JSON-MIN or CSV export that are not the choice (the task's data and Label Studio's own).
_LABEL_STUDIO_FIELDS = {ID_FIELD, PROJECT_FIELD, REQUEST_FIELD, "image", "id", "annotator", "annotation_id",
                        "created_at", "updated_at", "lead_time", "agreement", "drafts", "predictions", "meta",
                        "total_annotations", "cancelled_annotations", "total_predictions", "project"}


def _other_choice_name(candidates: list[str]) -> str:
    return (f"a Label Studio export without a '{CHOICE_NAME}' field (it has {', '.join(map(repr, candidates))}): "
            "the choice control of its labeling "
            f"config has another name, under which the export puts the class. Name it '{CHOICE_NAME}' as robustal's "
            f"label-studio-config.xml does (<Choices name=\"{CHOICE_NAME}\" ...>) in the project's Settings > "
            "Labeling Interface, then export again (or export as JSON, which robustal reads under any name)")


def _label_studio_csv(header: list[str], rows: list[tuple[int, list[str]]], problems: list[str]
                      ) -> list[_Annotation]:
    """Label Studio's CSV export: a row per annotation (``robustal_id``, ``label``, ``annotation_id``, ``updated_at``
    and the task's ``id``, which is Label Studio's, not robustal's)."""
    col = {name: header.index(name) for name in (ID_FIELD, CHOICE_NAME, "id", "annotation_id", "updated_at",
                                                 PROJECT_FIELD, REQUEST_FIELD, "image") if name in header}

    def get(row: list[str], name: str) -> str:
        return cell(row, col[name]) if name in col else ""

    out = []
    for row_number, row in rows:
        if not any(c.strip() for c in row):
            continue
        sample_id, choice = get(row, ID_FIELD), get(row, CHOICE_NAME).strip()
        if not sample_id.strip():
            problems.append(f"row {row_number}: no {ID_FIELD} (import the tasks robustal wrote, not the images "
                            "alone)")
            continue
        if choice.startswith("{") and '"choices"' in choice:  # several choices come as a JSON object
            try:
                choice = json.loads(choice)["choices"]
            except (ValueError, KeyError, TypeError):
                pass
        where = f"row {row_number}"
        label, reported = _choices_label(choice, f"{where} (id {sample_id.strip()!r})", problems)
        tags = Tags(get(row, PROJECT_FIELD) or None, get(row, REQUEST_FIELD) or None, get(row, "image") or None)
        out.append(_Annotation(where, sample_id, label, get(row, "id") or row_number,
                               (get(row, "updated_at"), _number(get(row, "annotation_id"))), reported, tags))
    return out


def _number(text: object) -> float:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


# Label Studio JSON and JSON-MIN ------------------------------------------------------------------------------------

def _choices_label(choices: object, where: str, problems: list[str]) -> tuple[str | None, bool]:
    """The one chosen class of a ``choices`` value: ``(label or None, problem listed)``."""
    if isinstance(choices, str):
        choices = [choices]
    if not isinstance(choices, list):
        return None, False
    if len(choices) > 1:
        problems.append(f"{where}: {len(choices)} choices {choices}; pick exactly one class")
        return None, True
    return (str(choices[0]).strip() or None if choices else None), False


def _tags(fields: dict) -> Tags:
    """The project, request and image a Label Studio task's data (or a JSON-MIN entry) name."""
    def text(name: str) -> str | None:
        value = fields.get(name)
        return value if isinstance(value, str) and value.strip() else None

    return Tags(text(PROJECT_FIELD), text(REQUEST_FIELD), text("image"))


def _task_annotations(task: dict, position: int, sample_id: str, problems: list[str]) -> list[_Annotation]:
    """A JSON export's task: one entry per annotation that was not cancelled, or one without a label."""
    where = f"task {position}"
    key = task.get("id", position)
    tags = _tags(task["data"])
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        problems.append(f"{where} (id {sample_id.strip()!r}): 'annotations' is not a list")
        return [_Annotation(where, sample_id, None, key, (), True, tags)]
    out = []
    for a in annotations:
        if not isinstance(a, dict) or a.get("was_cancelled"):
            continue
        choices = [c for r in a.get("result") or [] if isinstance(r, dict)
                   for c in (r.get("value") or {}).get("choices") or []]
        label, reported = _choices_label(choices, f"{where} (id {sample_id.strip()!r})", problems)
        out.append(_Annotation(where, sample_id, label, key, (str(a.get("updated_at") or ""), _number(a.get("id"))),
                               reported, tags))
    return out or [_Annotation(where, sample_id, None, key, (), tags=tags)]


def _json_answers(text: str, problems: list[str], screen) -> list[Answer]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise Refused(f"not valid JSON ({e}). Export the project again from Label Studio as JSON.") from None
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise Refused("not a Label Studio JSON export: expected a list of tasks ({\"data\": ..., \"annotations\": "
                      f"...}}), got {type(items).__name__}. Export the project with the 'JSON' format.")
    annotations: list[_Annotation] = []
    for position, item in enumerate(items, start=1):
        data = item.get("data")
        if isinstance(data, dict):  # the JSON export: a task with its data and annotations
            sample_id = _id_text(data.get(ID_FIELD))
            if sample_id is not None:
                annotations += _task_annotations(item, position, sample_id, problems)
                continue
        elif ID_FIELD in item:  # JSON-MIN: an annotation, the task's data fields beside the choice
            sample_id = _id_text(item.get(ID_FIELD))
            if sample_id is not None:
                where = f"entry {position}"
                label, reported = _choices_label(_min_choice(item.get(CHOICE_NAME)),
                                                 f"{where} (id {sample_id.strip()!r})", problems)
                annotations.append(_Annotation(where, sample_id, label, item.get("id", position),
                                               (str(item.get("updated_at") or ""),
                                                _number(item.get("annotation_id"))), reported, _tags(item)))
                continue
        problems.append(f"task {position}: no data.{ID_FIELD} (import the tasks robustal wrote, not the images "
                        "alone)")
    minimal = [item for item in items if not isinstance(item.get("data"), dict) and ID_FIELD in item]
    keys = sorted({k for item in minimal for k in item} - _LABEL_STUDIO_FIELDS)
    if keys and not any(CHOICE_NAME in item for item in minimal):  # JSON-MIN under another control name
        raise Refused(_other_choice_name(keys))
    return _merge(screen(annotations), problems, screen.notes)


def _id_text(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.strip() else None


def _min_choice(value: object) -> object:
    """A JSON-MIN choice: the class name, or ``{"choices": [...]}`` when several were picked."""
    return value.get("choices") if isinstance(value, dict) else value


def _merge(annotations: list[_Annotation], problems: list[str], notes: list[str]) -> list[Answer]:
    """One answer per id: each task's latest annotation (a task annotated with several classes is noted in
    ``notes``); tasks of one id (imported twice) must agree."""
    by_id: dict[str, list[_Annotation]] = {}
    for a in annotations:
        by_id.setdefault(a.sample_id, []).append(a)
    answers = []
    for sample_id, group in by_id.items():
        latest: dict[object, _Annotation] = {}
        for a in group:
            if a.task not in latest or a.order >= latest[a.task].order:
                latest[a.task] = a
        for task, used in latest.items():
            others = {a.label for a in group if a.task == task and a.label not in (None, used.label)}
            if used.label is not None and others:
                notes.append(f"{used.where} (id {sample_id.strip()!r}): {used.label!r}, its latest annotation, over "
                             f"{', '.join(map(repr, sorted(others)))}")
        reported = any(a.reported for a in group)
        labels = {a.label for a in latest.values() if a.label is not None}
        if len(labels) > 1:
            shown = ", ".join(f"{a.where}: {a.label!r}" for a in latest.values() if a.label is not None)
            problems.append(f"{group[0].where} (id {sample_id.strip()!r}): labeled differently in several tasks "
                            f"({shown}); keep one task per image")
            reported = True
        answers.append(Answer(group[0].where, sample_id, labels.pop() if len(labels) == 1 else None, reported))
    return answers


def parse_answers(text: str, suffix: str, problems: list[str], screen: Screen) -> tuple[list[Answer], str]:
    """The answers of a file's ``text`` (``suffix`` ``.json``: a Label Studio JSON or JSON-MIN export; else a CSV) and
    its kind (``"csv"`` or ``"label-studio"``); problems found while parsing are appended to ``problems``.

    Raises:
        Refused: the file as a whole cannot be read in that format.
    """
    if suffix == ".json":
        return _json_answers(text, problems, screen), "label-studio"
    header, _ = csv_table(text)
    return _csv_answers(text, problems, screen), "label-studio" if ID_FIELD in header else "csv"


def answers_kind(path: str | Path) -> str:
    """``"label-studio"`` for a Label Studio export (JSON, JSON-MIN, or CSV with a ``robustal_id`` column), else
    ``"csv"`` (a filled request CSV)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return "label-studio"
    try:
        header, _ = csv_table(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, Refused):
        return "csv"
    return "label-studio" if ID_FIELD in header else "csv"


__all__ = ["CHOICE_NAME", "ID_FIELD", "Answer", "Refused", "answers_kind", "cell", "csv_table", "parse_answers"]
