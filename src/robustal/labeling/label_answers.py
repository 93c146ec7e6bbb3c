"""Checking a person's answers to a labeling request, whatever file they came in
(:mod:`robustal.labeling.label_formats` parses it).

:func:`read_answers` turns a file into ``{id: class index}`` for exactly the ids asked for, or refuses the whole file
with every problem listed, so that no wrong or partial label enters training.

People keep one Label Studio project across rounds, so an export also holds earlier rounds' tasks: answers to ids
imported before (``known``) are checked against what was imported, and ignored when they agree; a disagreement is a
problem like any other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from robustal.errors import DataError, nearest
from robustal.labeling.label_formats import Answer, Refused, cell, csv_table, parse_answers
from robustal.labeling.label_origin import Origin, Screen

#: Problems listed in one error message before "and K more".
MAX_PROBLEMS = 20


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


def _read(path: str | Path, problems: list[str], screen: Screen) -> tuple[Path, list[Answer], str]:
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
        answers, kind = parse_answers(text, suffix, problems, screen)
    except Refused as e:
        raise DataError(f"{path}: {e}") from None
    return path, answers, kind


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


def _check(answers: list[Answer], ids: list[str], classes: list[str], known: Mapping[str, tuple[int, str]],
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
        header, rows = csv_table(text)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}): the spreadsheet saved it in another encoding. Open it "
                        "again and save it under the same name as 'CSV UTF-8 (comma delimited)'; the labels typed "
                        "in it are kept. Then run the command again.") from None
    except (OSError, Refused) as e:
        raise DataError(f"{path} cannot be read ({e}). Fix it where the message says and save it under the same "
                        "name, keeping the labels typed in it (robustal wrote it with the columns id,label and an "
                        "empty label column).") from None
    if "label" not in header or "id" not in header:
        return True
    col = header.index("label")
    return any(cell(row, col).strip() for _, row in rows)


#: In a project's ``requests/`` folder: which kind of file answered each request whose answers came with
#: ``--answers`` (``{request: "csv" | "label-studio"}``), so that exported labels say where they came from.
ANSWER_SOURCES = "answer-sources.json"


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


__all__ = ["ANSWER_SOURCES", "MAX_PROBLEMS", "answers_sources", "check_imported", "filled_in", "read_answers",
           "record_answers_source"]
