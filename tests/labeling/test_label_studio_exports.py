"""Answers as Label Studio 1.23 exports them from one project kept across rounds (JSON, JSON-MIN, CSV), predictions
sent as pre-annotations, and request CSVs as spreadsheets save them.

The export shapes below are those Label Studio 1.23.2 wrote for robustal's tasks (tests/labeling/
test_label_studio_live.py checks them against the real program): JSON-MIN and CSV give one entry per annotation with
the task's data fields beside the choice, and Label Studio's own task ``id``, which must never be read as robustal's.
"""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from robustal.errors import AnswersWarning, DataError
from robustal.labeling.label_answers import check_imported, filled_in, read_answers
from robustal.labeling.label_files import PREDICTION_MODEL_VERSION, write_request

DIGITS = [str(c) for c in range(10)]


def ls_json(rounds: list[tuple[str, dict[str, int | None]]]) -> list[dict]:
    """A JSON export of a project holding several rounds' tasks: ``[(request, {id: label or None})]``; Label Studio's
    task ids run 1, 2, ... across the project, annotation ids likewise."""
    tasks, k = [], 0
    for request, labels in rounds:
        for sample_id, label in labels.items():
            k += 1
            annotations = [] if label is None else [{
                "id": k, "completed_by": 1, "was_cancelled": False, "ground_truth": False,
                "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                            "value": {"choices": [str(label)]}}],
                "created_at": f"2026-11-28T08:{k // 60:02d}:{k % 60:02d}.000000Z",
                "updated_at": f"2026-11-28T08:{k // 60:02d}:{k % 60:02d}.000000Z", "lead_time": 1.5, "task": k}]
            tasks.append({"id": k, "annotations": annotations, "drafts": [], "predictions": [],
                          "data": {"image": f"/data/local-files/?d=pool/{sample_id}.png", "robustal_id": sample_id,
                                   "robustal_request": request},
                          "meta": {}, "total_annotations": len(annotations), "project": 1})
    return tasks


def ls_min(tasks: list[dict]) -> list[dict]:
    """The JSON-MIN export of the same project: one entry per annotation, data fields at the top."""
    out = []
    for t in tasks:
        for a in t["annotations"]:
            out.append({**t["data"], "id": t["id"], "label": a["result"][0]["value"]["choices"][0], "annotator": 1,
                        "annotation_id": a["id"], "created_at": a["created_at"], "updated_at": a["updated_at"],
                        "lead_time": a["lead_time"]})
    return out


def ls_csv(tasks: list[dict]) -> str:
    """The CSV export: Label Studio sorts the columns; ``id`` is its task id."""
    columns = ["annotation_id", "annotator", "created_at", "id", "image", "label", "lead_time", "robustal_id",
               "robustal_request", "updated_at"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    w.writeheader()
    w.writerows({c: e.get(c, "") for c in columns} for e in ls_min(tasks))
    return buf.getvalue()


def write(path, content) -> str:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# Pool indices as ids: Label Studio's task ids (1, 2, ...) are pool indices too, so reading the wrong one would pass
# unnoticed unless the labels are checked.
ROUND0 = {str(100 + i): i % 10 for i in range(8)}
ROUND1 = {str(200 + i): (i + 3) % 10 for i in range(6)}
KNOWN = {i: (y, "stage-000") for i, y in ROUND0.items()}


@pytest.mark.parametrize("fmt", ["json", "json-min", "csv"])
def test_every_export_format_of_a_project_across_rounds_reads_the_current_round(tmp_path, fmt):
    tasks = ls_json([("stage-000", ROUND0), ("stage-001", ROUND1)])
    path = {"json": lambda: write(tmp_path / "e.json", tasks),
            "json-min": lambda: write(tmp_path / "e.json", ls_min(tasks)),
            "csv": lambda: write(tmp_path / "e.csv", ls_csv(tasks))}[fmt]()
    assert read_answers(path, list(ROUND1), DIGITS, known=KNOWN, request="stage-001") == ROUND1


@pytest.mark.parametrize("fmt", ["json-min", "csv"])
def test_label_studio_task_ids_are_never_read_as_robustals(tmp_path, fmt):
    ids = [str(i) for i in range(1, 7)]  # robustal ids 1..6; Label Studio numbers these tasks 1..6 in reverse
    tasks = ls_json([("stage-000", {i: int(i) % 10 for i in reversed(ids)})])
    assert [t["id"] for t in tasks] == [1, 2, 3, 4, 5, 6] and tasks[0]["data"]["robustal_id"] == "6"
    path = write(tmp_path / "e.json", ls_min(tasks)) if fmt == "json-min" else write(tmp_path / "e.csv", ls_csv(tasks))
    assert read_answers(path, ids, DIGITS) == {i: int(i) for i in ids}


def test_the_latest_annotation_of_a_task_counts_in_every_format(tmp_path):
    tasks = ls_json([("stage-000", {"a": 1, "b": 2})])
    later = json.loads(json.dumps(tasks[0]["annotations"][0]))
    later.update(id=99, updated_at="2026-11-28T09:00:00.000000Z")
    later["result"][0]["value"]["choices"] = ["7"]
    tasks[0]["annotations"].append(later)  # newer last here, older last below: the date decides, not the order
    earlier = json.loads(json.dumps(tasks[1]["annotations"][0]))
    earlier.update(id=0, updated_at="2026-11-28T07:00:00.000000Z")
    earlier["result"][0]["value"]["choices"] = ["5"]
    tasks[1]["annotations"].append(earlier)
    for path in (write(tmp_path / "e.json", tasks), write(tmp_path / "m.json", ls_min(tasks)),
                 write(tmp_path / "e.csv", ls_csv(tasks))):
        with pytest.warns(AnswersWarning, match=r"2 task\(s\) annotated more than once with different classes; the "
                                                r"latest annotation of each is used: (task|entry|row) \d+ \(id 'a'\): "
                                                r"'7', its latest annotation, over '1'"):  # reported (issue 28)
            assert read_answers(path, ["a", "b"], DIGITS) == {"a": 7, "b": 2}, path.name


@pytest.mark.parametrize("fmt", ["json", "json-min", "csv"])
def test_earlier_answers_that_disagree_are_listed_with_the_file_and_ids(tmp_path, fmt):
    changed = dict(ROUND0, **{"101": 5, "104": 9})  # imported: 1 and 4
    tasks = ls_json([("stage-000", changed), ("stage-001", ROUND1)])
    path = {"json": lambda: write(tmp_path / "e.json", tasks),
            "json-min": lambda: write(tmp_path / "e.json", ls_min(tasks)),
            "csv": lambda: write(tmp_path / "e.csv", ls_csv(tasks))}[fmt]()
    with pytest.raises(DataError) as e:
        read_answers(path, list(ROUND1), DIGITS, known=KNOWN, request="stage-001")
    msg = str(e.value)
    assert msg.startswith(f"{path}: 2 problem(s) in the answers; none were used")
    assert "(id '101'): '5' here, but '1' was imported from stage-000" in msg
    assert "(id '104'): '9' here, but '4' was imported from stage-000" in msg
    assert "set those answers back in Label Studio" in msg


def test_an_export_of_earlier_rounds_only_says_so(tmp_path):
    path = write(tmp_path / "e.json", ls_json([("stage-000", ROUND0)]))
    with pytest.raises(DataError) as e:
        read_answers(path, list(ROUND1), DIGITS, known=KNOWN, request="stage-001")
    msg = str(e.value)
    assert "none of the 6 ids of stage-001 is in the file" in msg
    assert "only answers to earlier requests, already imported (stage-000: 8 labels)" in msg
    assert "import stage-001-label-studio.json" in msg
    # the same for the filled CSV of an answered request given again
    old = write(tmp_path / "stage-000.csv", "id,label\n" + "".join(f"{i},{y}\n" for i, y in ROUND0.items()))
    with pytest.raises(DataError, match="none of the 6 ids of stage-001 is in the file: it holds only answers"):
        read_answers(old, list(ROUND1), DIGITS, known=KNOWN, request="stage-001")


def test_unannotated_and_unknown_tasks_of_the_project(tmp_path):
    # earlier tasks left unannotated (answered by CSV) are fine; a task robustal never asked for is not
    tasks = ls_json([("stage-000", dict.fromkeys(ROUND0)), ("stage-001", ROUND1), ("other", {"999": 3})])
    path = write(tmp_path / "e.json", tasks)
    with pytest.raises(DataError, match=r"1 problem\(s\)(?s:.*)task 15: id '999' was not asked for"):
        read_answers(path, list(ROUND1), DIGITS, known=KNOWN, request="stage-001")
    write(path, tasks[:-1])
    assert read_answers(path, list(ROUND1), DIGITS, known=KNOWN, request="stage-001") == ROUND1


def test_several_choices_in_a_json_min_or_csv_export(tmp_path):
    entries = ls_min(ls_json([("stage-000", {"a": 1})]))
    entries[0]["label"] = {"choices": ["1", "2"]}  # how JSON-MIN gives a multiple choice
    with pytest.raises(DataError, match=r"entry 1 \(id 'a'\): 2 choices \['1', '2'\]; pick exactly one class"):
        read_answers(write(tmp_path / "e.json", entries), ["a"], DIGITS)


# Predictions ------------------------------------------------------------------------------------------------------

def test_predictions_are_label_studio_pre_annotations_with_their_score(tmp_path, digit_images):
    images, _ = digit_images
    probs = torch.softmax(torch.randn(5, 10, generator=torch.Generator().manual_seed(0)) * 3, 1)
    request = write_request(tmp_path, "stage-002", [f"d{i}" for i in range(5)], torch.from_numpy(images[:5, None]),
                            DIGITS, predictions=probs)
    tasks = json.loads(request.label_studio.read_text())
    for task, p in zip(tasks, probs, strict=True):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == PREDICTION_MODEL_VERSION
        assert prediction["score"] == pytest.approx(float(p.max()), abs=1e-4)
        assert prediction["result"] == [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [DIGITS[int(p.argmax())]]}}]
    with pytest.raises(Exception, match="'predictions' parameter of write_request"):
        write_request(tmp_path, "s", ["a"], torch.from_numpy(images[:1, None]), DIGITS, predictions=probs[:2])


def test_a_model_at_chance_level_sends_no_pre_annotations(tmp_path, digit_images):
    """Issue 27.5: a model flagged at chance pre-ticked a 6 as "4" at 21 %; its request carries no predictions."""
    from types import SimpleNamespace

    from robustal.cli.label import _predictions
    from robustal.labeling.oracle import FileOracle
    from robustal.loop.experiment import model_factory

    images, _ = digit_images
    x = torch.from_numpy(images[:6, None])
    model = model_factory("small-cnn", num_classes=10, in_channels=1, image_size=8)()
    loop = SimpleNamespace(at_chance=True, model=model, device="cpu")
    oracle = FileOracle(tmp_path, [f"d{i}" for i in range(6)], x, DIGITS, image_paths=None,
                        predict=_predictions(loop, x))
    assert oracle.ask("stage-001", torch.arange(3), predict=True) is None
    assert not any("predictions" in t for t in json.loads((tmp_path / "stage-001-label-studio.json").read_text()))
    loop.at_chance = False  # a model that has learned: its classes are pre-annotations
    oracle.ask("stage-002", torch.arange(3, 6), predict=True)
    tasks = json.loads((tmp_path / "stage-002-label-studio.json").read_text())
    assert len(tasks) == 3 and all(len(t["predictions"]) == 1 for t in tasks)


# Request CSVs as spreadsheets save them (issue 19.4) -----------------------------------------------------------

@pytest.mark.parametrize("header, sep", [("id,label", ";"), ("id,label", "\t"), ("ID,Label", ","),
                                         ("id, label", ","), ("Id;LABEL", ";")])
def test_a_request_filled_in_place_with_any_separator_or_header_case_is_read(tmp_path, header, sep):
    ids = ["a.png", "b.png"]
    path = tmp_path / "stage-000.csv"
    path.write_text(header.replace(",", sep).replace(";", sep) + "\n" + "".join(f"{i}{sep}\n" for i in ids))
    assert not filled_in(path)  # untouched: still awaited
    path.write_text(header.replace(",", sep).replace(";", sep) + "\n" + f"a.png{sep}3\nb.png{sep} 4\n")
    assert filled_in(path)
    assert read_answers(path, ids, DIGITS) == {"a.png": 3, "b.png": 4}


def test_an_id_that_starts_with_a_space_can_be_answered(tmp_path, digit_images):
    images, _ = digit_images
    ids = [" lead.png", "lead.png", "trail .png"]  # distinct files, two differing only by the space
    request = write_request(tmp_path, "stage-000", ids, torch.from_numpy(images[:3, None]), DIGITS)
    rows = list(csv.reader(request.csv.open(newline="")))
    with request.csv.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [[i, str(k)] for k, (i, _) in enumerate(rows[1:])])
    assert read_answers(request.csv, ids, DIGITS) == {" lead.png": 0, "lead.png": 1, "trail .png": 2}
    tasks = json.loads(request.label_studio.read_text())
    assert [t["data"]["robustal_id"] for t in tasks] == ids


def test_a_request_edited_after_its_labels_were_imported_is_refused(tmp_path):
    path = write(tmp_path / "stage-000.csv", "id,label\n" + "".join(f"{i},{y}\n" for i, y in ROUND0.items()))
    check_imported(path, DIGITS, KNOWN)  # as imported: fine
    write(path, "id,label\n" + "".join(f"{i},\n" for i in ROUND0))
    check_imported(path, DIGITS, KNOWN)  # answered in Label Studio instead: empty cells are fine
    write(path, "id,label\n" + "".join(f"{i},{9 if i == '102' else y}\n" for i, y in ROUND0.items()))
    with pytest.raises(DataError) as e:
        check_imported(path, DIGITS, KNOWN)
    msg = str(e.value)
    assert f"{path} was changed after its labels were imported (1 problem(s))" in msg
    assert "row 4 (id '102'): '9' here, but '2' was imported from stage-000" in msg
    assert "put the file back as it was" in msg


@pytest.mark.parametrize("fmt", ["json-min", "csv"])
def test_a_choice_control_named_otherwise_is_named_in_the_refusal(tmp_path, fmt):
    """A labeling config whose <Choices> is not named 'label' puts the class under its own name (issue 28)."""
    entries = [{("digit" if k == "label" else k): v for k, v in e.items()}
               for e in ls_min(ls_json([("stage-000", ROUND0)]))]
    if fmt == "json-min":
        path = write(tmp_path / "e.json", entries)
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, sorted(entries[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(entries)
        path = write(tmp_path / "e.csv", buf.getvalue())
    with pytest.raises(DataError, match=r"without a 'label' field \(it has 'digit'\).*<Choices name=\"label\""):
        read_answers(path, list(ROUND0), DIGITS)
