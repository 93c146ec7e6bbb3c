"""Reading a person's answers to a labeling request: a filled request CSV, or a Label Studio export.

:func:`read_answers` turns a file into ``{id: class index}`` for exactly the ids asked for, or refuses the whole file
with every problem listed, so that no wrong or partial label enters training. Formats read:

* robustal's request CSV filled in (columns ``id`` and ``label``; ``,``, ``;`` or tab separated, as spreadsheets of
  different locales save it);
* Label Studio's **JSON** export: tasks with ``data.robustal_id`` and ``annotations[*].result[*].value.choices``
  (https://labelstud.io/guide/export#JSON);
* Label Studio's **JSON-MIN** and **CSV** exports: one entry or row per annotation, with the task's data fields
  (``robustal_id``) and the choice under the control's name (``label``) (https://labelstud.io/guide/export). Label
  Studio's own task ``id`` is never read as robustal's id.

People keep one Label Studio project across rounds, so an export also holds earlier rounds' tasks: answers to ids
imported before (``known``) are checked against what was imported, and ignored when they agree; a disagreement is a
problem like any other. Within one Label Studio task the latest annotation that was not cancelled counts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from robustal.errors import DataError, nearest
from robustal.labeling.label_origin import PROJECT_FIELD, REQUEST_FIELD, Origin, Screen, Tags

#: Problems listed in one error message before "and K more".
MAX_PROBLEMS = 20
#: The data field of a Label Studio task that holds robustal's sample id (written by write_request).
ID_FIELD = "robustal_id"
#: The name of the choice control in robustal's Label Studio labeling config.
CHOICE_NAME = "label"


class _Refused(Exception):
    """The file as a whole cannot be read (wrong format); its message says why."""


class _Answer(NamedTuple):
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

def _csv_table(text: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(row number, cells)])`` of a CSV (row 2 = the first after the header, as a spreadsheet numbers
    it) whose separator (``,``, ``;`` or tab) is the one its first line uses most; header names are stripped and
    lower-cased (``ID, Label`` reads as ``id,label``)."""
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter, strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:  # e.g. a quote left open, which would swallow the rows after it
        raise _Refused(f"not a readable CSV file (line {reader.line_num}: {e}). Check the quotes on that line, "
                       "or save the file again as CSV with columns id,label.") from None
    header = [h.strip().lower() for h in rows[0]] if rows else []
    return header, list(enumerate(rows[1:], start=2))


def _cell(row: list[str], col: int) -> str:
    return row[col] if col < len(row) else ""


def _csv_answers(text: str, problems: list[str], screen) -> list[_Answer]:
    header, rows = _csv_table(text)
    if ID_FIELD in header and CHOICE_NAME in header:
        return _merge(screen(_label_studio_csv(header, rows, problems)), problems, screen.notes)
    others = [h for h in header if h not in _LABEL_STUDIO_FIELDS]
    if ID_FIELD in header and others:  # a Label Studio CSV export whose choice control is named otherwise
        raise _Refused(_other_choice_name(others))
    if "id" not in header or "label" not in header:
        raise _Refused(f"the first row must name the columns 'id' and 'label' (or, in a Label Studio CSV export, "
                       f"'{ID_FIELD}' and '{CHOICE_NAME}'); it is {header}. Keep the header robustal wrote "
                       "(id,label) and fill in the label column.")
    col_id, col_label = header.index("id"), header.index("label")
    col_project = header.index(PROJECT_FIELD) if PROJECT_FIELD in header else None
    answers = []
    for row_number, row in rows:
        if not any(c.strip() for c in row):
            continue  # blank lines that spreadsheets leave at the end
        sample_id, label = _cell(row, col_id), _cell(row, col_label).strip()
        if not sample_id.strip():
            problems.append(f"row {row_number}: no id (the id column is empty)")
            continue
        project = _cell(row, col_project) if col_project is not None else None
        answers.append(_Answer(f"row {row_number}", sample_id, label or None, tags=Tags(project=project or None)))
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
        return _cell(row, col[name]) if name in col else ""

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


def _json_answers(text: str, problems: list[str], screen) -> list[_Answer]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Refused(f"not valid JSON ({e}). Export the project again from Label Studio as JSON.") from None
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        raise _Refused("not a Label Studio JSON export: expected a list of tasks ({\"data\": ..., \"annotations\": "
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
        raise _Refused(_other_choice_name(keys))
    return _merge(screen(annotations), problems, screen.notes)


def _id_text(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.strip() else None


def _min_choice(value: object) -> object:
    """A JSON-MIN choice: the class name, or ``{"choices": [...]}`` when several were picked."""
    return value.get("choices") if isinstance(value, dict) else value


def _merge(annotations: list[_Annotation], problems: list[str], notes: list[str]) -> list[_Answer]:
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
        answers.append(_Answer(group[0].where, sample_id, labels.pop() if len(labels) == 1 else None, reported))
    return answers


# Checking the answers ----------------------------------------------------------------------------------------------

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


def _read(path: str | Path, problems: list[str], screen: Screen) -> tuple[Path, list[_Answer], str]:
    """The answers of a file, its kind ("csv" or "label-studio"), problems found while parsing."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"{path}: answers must be the request's filled .csv or a Label Studio export (.json for "
                        f"JSON and JSON-MIN, .csv); got a {suffix or 'suffix-less'} file.")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a BOM from spreadsheets is dropped
    except FileNotFoundError:
        raise DataError(f"{path}: the answers file does not exist. Fill in the request's CSV and give its path, "
                        "or export the Label Studio project (JSON, JSON-MIN or CSV).") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the answers file ({e}).") from None
    except UnicodeDecodeError as e:
        fix = ("Export it again from Label Studio (its exports are UTF-8), or save it as UTF-8 in the program that "
               "changed it." if suffix == ".json" else "Save it as 'CSV UTF-8' (or export it again).")
        raise DataError(f"{path}: not UTF-8 text ({e}). {fix}") from None
    try:
        if suffix == ".json":
            return path, _json_answers(text, problems, screen), "label-studio"
        header, _ = _csv_table(text)
        return path, _csv_answers(text, problems, screen), "label-studio" if ID_FIELD in header else "csv"
    except _Refused as e:
        raise DataError(f"{path}: {e}") from None


def read_answers(path: str | Path, ids: list[str], classes: list[str], *,
                 known: Mapping[str, tuple[int, str]] | None = None, request: str | None = None,
                 origin: Origin | None = None) -> dict[str, int]:
    """The labels a person gave for ``ids``: ``{id: class index}``, for exactly these ids.

    Reads a filled request CSV (``.csv``: columns ``id`` and ``label``, label as a class name or, where no class
    name is itself a number, a class index) or a Label Studio export (``.json``: JSON or JSON-MIN; ``.csv``: its CSV
    export, recognised by its ``robustal_id`` column). Whitespace around labels is ignored; an id matches as written,
    or else without surrounding whitespace; class names are case-sensitive.

    Args:
        path: The answers file.
        ids: The ids asked for.
        classes: Class names, in class-index order.
        known: Labels imported earlier, ``{id: (class index, request name)}``: answers for them (an export of a
            Label Studio project kept across rounds) are ignored when they agree, and listed when they do not.
        request: The request's name (e.g. ``"stage-003"``), for messages.
        origin: The labeling project the answers are given to: answers from another project or pool, or naming
            another image or request, are problems (:mod:`robustal.labeling.label_origin`). None: not checked.

    Raises:
        DataError: Listing every problem with its CSV row (2 = first data row, as a spreadsheet numbers it) or
            task / entry position: unknown classes, missing labels, ids not asked for or missing, duplicate ids,
            answers that disagree with labels imported earlier, a wrong header or format. Nothing is returned unless
            the whole file is right.
    """
    ids, classes, request = list(ids), list(classes), request or "this request"
    problems: list[str] = []
    screen = Screen(origin, problems, ids, request)
    path, answers, kind = _read(path, problems, screen)
    checked = _check(answers, ids, classes, known or {}, problems)
    missing = [i for i in ids if i not in checked.seen]
    if missing and not screen.foreign:  # answers from another project: the ids it lacks say nothing more
        hint = (" (in a Label Studio export: tasks not annotated yet, or not imported into the project)"
                if kind == "label-studio" else "")
        if len(missing) == len(ids) and checked.earlier:
            problems.append(f"none of the {len(ids)} ids of {request} is in the file{hint}: it holds only answers "
                            f"to earlier requests, already imported ({_rounds(checked.earlier)}). Label {request}'s "
                            f"tasks (import {request}-label-studio.json into the Label Studio project if they are "
                            "not there yet), then export again")
        else:
            problems.append(f"{len(missing)} requested id(s) are not in the file{hint}: {_listed(missing)}")
    if problems:
        raise DataError(f"{path}: {len(problems)} problem(s) in the answers; none were used:\n  "
                        f"{_shown(problems)}{_notes(checked, classes)}\nFix the file and read it again.")
    if screen.notes:
        import warnings

        from robustal.errors import AnswersWarning

        warnings.warn(AnswersWarning(f"{path}: {len(screen.notes)} task(s) annotated more than once with different "
                                     f"classes; the latest annotation of each is used: {'; '.join(screen.notes[:5])}"
                                     + (f"; and {len(screen.notes) - 5} more" if len(screen.notes) > 5 else "")),
                      stacklevel=2)
    assert checked.labels.keys() == set(ids), "every asked id is labeled or listed as a problem"
    return checked.labels


def check_imported(path: str | Path, classes: list[str], known: Mapping[str, tuple[int, str]],
                   origin: Origin | None = None) -> None:
    """Refuse a request file changed after its labels were imported: a filled label that differs from the imported
    one (an edit robustal would otherwise never read), an id it did not ask for, a duplicate."""
    problems: list[str] = []
    path, answers, _ = _read(path, problems, Screen(origin, problems, [], None))
    _check(answers, [], list(classes), known, problems)
    if problems:
        raise DataError(f"{path} was changed after its labels were imported ({len(problems)} problem(s)):\n  "
                        f"{_shown(problems)}\nLabels once imported stay as they were (the model has trained on "
                        "them): put the file back as it was (empty label cells are fine), then run the command again. "
                        "To label these images differently, start a new project in another --out.")


class _Checked(NamedTuple):
    labels: dict[str, int]  # the asked ids' labels
    seen: set[str]  # every id the file answers (listed as a problem or not)
    earlier: list[tuple[str, str]]  # (id, request) of answers to earlier requests
    conflicts: bool  # answers disagree with imported labels
    unknown: bool  # unknown classes were listed


def _check(answers: list[_Answer], ids: list[str], classes: list[str], known: Mapping[str, tuple[int, str]],
           problems: list[str]) -> _Checked:
    """Check each answer against the asked ids, the classes and the labels imported earlier; problems are appended
    to ``problems``."""
    asked = set(ids)
    indices_allowed = not any(re.fullmatch(r"\d+", c) for c in classes)
    first_seen: dict[str, str] = {}
    labels: dict[str, int] = {}
    earlier: list[tuple[str, str]] = []
    conflicts = unknown = False
    for where, raw_id, label, reported, _ in answers:
        sample_id = raw_id if raw_id in asked or raw_id in known else raw_id.strip()
        if sample_id in first_seen:
            problems.append(f"{where}: id {sample_id!r} appears again (first at {first_seen[sample_id]}); "
                            "keep one row per id")
            continue
        first_seen[sample_id] = where
        if sample_id not in asked and sample_id not in known:
            problems.append(f"{where}: id {sample_id!r} was not asked for in this request")
            continue
        if reported:
            continue
        index = None if label is None else _class_index(label, classes, indices_allowed)
        if sample_id not in asked:  # an earlier request's: it must agree with what was imported
            imported, request = known[sample_id]
            earlier.append((sample_id, request))
            if label is not None and index != imported:
                conflicts = True
                problems.append(f"{where} (id {sample_id!r}): {label!r} here, but {classes[imported]!r} was "
                                f"imported from {request}")
        elif label is None:
            problems.append(f"{where} (id {sample_id!r}): no label; give one of the classes")
        elif index is None:
            unknown = True
            problems.append(f"{where} (id {sample_id!r}): unknown class {label!r}{_suggest(label, classes)}")
        else:
            labels[sample_id] = index
    return _Checked(labels, set(first_seen), earlier, conflicts, unknown)


def _shown(problems: list[str]) -> str:
    more = f"\n  and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    return "\n  ".join(problems[:MAX_PROBLEMS]) + more


def _notes(checked: _Checked, classes: list[str]) -> str:
    notes = ""
    if checked.unknown:
        indices_allowed = not any(re.fullmatch(r"\d+", c) for c in classes)
        notes += f"\nValid classes: {', '.join(classes)}"
        notes += f" (or their indices 0..{len(classes) - 1})." if indices_allowed else "."
    if checked.conflicts:
        notes += ("\nLabels once imported stay as they were (the model has trained on them): set those answers back "
                  "in Label Studio (or leave their tasks out of the export).")
    return notes


def _rounds(earlier: list[tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for _, request in earlier:
        counts[request] = counts.get(request, 0) + 1
    return ", ".join(f"{request}: {n} labels" for request, n in counts.items())


def filled_in(path: str | Path) -> bool:
    """Whether a person has started to fill in a request CSV: any label cell not empty, read as :func:`read_answers`
    reads it (any separator, any case of the header). A header robustal did not write counts as filled in, so that
    reading the file says what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
        header, rows = _csv_table(text)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}): the spreadsheet saved it in another encoding. Open it "
                        "again and save it under the same name as 'CSV UTF-8 (comma delimited)'; the labels typed "
                        "in it are kept. Then run the command again.") from None
    except (OSError, _Refused) as e:
        raise DataError(f"{path} cannot be read ({e}). Fix it where the message says and save it under the same "
                        "name, keeping the labels typed in it (robustal wrote it with the columns id,label and an "
                        "empty label column).") from None
    if "label" not in header or "id" not in header:
        return True
    col = header.index("label")
    return any(_cell(row, col).strip() for _, row in rows)


#: In a project's ``requests/`` folder: which kind of file answered each request whose answers came with
#: ``--answers`` (``{request: "csv" | "label-studio"}``), so that exported labels say where they came from.
ANSWER_SOURCES = "answer-sources.json"


def answers_kind(path: str | Path) -> str:
    """``"label-studio"`` for a Label Studio export (JSON, JSON-MIN, or CSV with a ``robustal_id`` column), else
    ``"csv"`` (a filled request CSV)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return "label-studio"
    try:
        header, _ = _csv_table(path.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, _Refused):
        return "csv"
    return "label-studio" if ID_FIELD in header else "csv"


def record_answers_source(folder: str | Path, request: str, kind: str) -> None:
    """Note in ``folder/`` :data:`ANSWER_SOURCES` that ``request`` was answered by a file of ``kind`` (atomic)."""
    from robustal.storage.outputs import atomic_write_bytes

    sources = answers_sources(folder)
    if sources.get(request) != kind:
        sources[request] = kind
        atomic_write_bytes(Path(folder) / ANSWER_SOURCES, (json.dumps(sources, indent=1) + "\n").encode())


def answers_sources(folder: str | Path) -> dict[str, str]:
    """What :func:`record_answers_source` noted (empty where nothing was, or the file is unreadable)."""
    try:
        sources = json.loads((Path(folder) / ANSWER_SOURCES).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return {str(k): str(v) for k, v in sources.items()} if isinstance(sources, dict) else {}


__all__ = ["ANSWER_SOURCES", "CHOICE_NAME", "ID_FIELD", "MAX_PROBLEMS", "answers_kind", "answers_sources",
           "check_imported", "filled_in", "read_answers", "record_answers_source"]
