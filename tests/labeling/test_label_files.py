"""Labeling requests written for real digits, and answers (CSV, Label Studio export) read back or refused."""

from __future__ import annotations

import csv
import itertools
import json
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from robustal.errors import ConfigError, DataError
from robustal.labeling.label_answers import read_answers
from robustal.labeling.label_files import LABEL_STUDIO_CONFIG, LOCAL_FILES_URL, write_request

DIGITS = [str(c) for c in range(10)]
TASK_IDS = itertools.count(7)  # Label Studio's task ids: unique in a project
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
N = 30


@pytest.fixture(scope="module")
def request_30(tmp_path_factory, digit_images):
    """A request for 30 real digits with ids '100'..'129' (pool indices) and classes '0'..'9'."""
    images, labels = digit_images
    ids = [str(100 + i) for i in range(N)]
    folder = tmp_path_factory.mktemp("requests") / "labels"  # created by write_request
    request = write_request(folder, "stage-003", ids, torch.from_numpy(images[:N, None]), DIGITS)
    return request, dict(zip(ids, labels[:N].tolist(), strict=True))


def local_file(url: str) -> Path:
    assert url.startswith(LOCAL_FILES_URL)
    return Path("/" + unquote(url[len(LOCAL_FILES_URL):]))


def write_csv(path: Path, rows: list[list[str]], header=("id", "label"), delimiter=",", encoding="utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f, delimiter=delimiter)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def ls_task(sample_id: str, *labels: str, cancelled: tuple[bool, ...] = ()) -> dict:
    """A task as Label Studio's JSON export gives it: one annotation per label, each a single choice."""
    annotations = [{"id": 1000 + k, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                 "value": {"choices": [label]}, "id": f"r{k}"}],
                    "was_cancelled": cancelled[k] if k < len(cancelled) else False, "ground_truth": False,
                    "lead_time": 2.5, "task": 7, "completed_by": 1} for k, label in enumerate(labels)]
    return {"id": next(TASK_IDS), "data": {"image": f"{LOCAL_FILES_URL}x/{sample_id}.png", "robustal_id": sample_id},
            "annotations": annotations, "predictions": [], "project": 3}


def problems(excinfo) -> str:
    return str(excinfo.value)


# Writing -------------------------------------------------------------------------------------------------------

def test_csv_lists_every_id_in_order_with_an_empty_label(request_30):
    request, truth = request_30
    assert request.csv.name == "stage-003.csv" and request.ids == list(truth)
    with open(request.csv, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and rows[1:] == [[i, ""] for i in truth]


def test_contact_sheet_is_a_png_showing_every_image(request_30):
    request, _ = request_30
    assert request.sheet.name == "stage-003.png" and request.sheets == [request.sheet]
    assert request.sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(request.sheet) as im:
        assert im.width >= 10 * 100 and im.height >= 3 * 100  # 10 columns × 3 rows of ≥ 100 px cells
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # the digits' grey levels, not a blank page


def test_label_studio_tasks_reference_existing_images_and_the_config_lists_the_classes(request_30, digit_images):
    request, truth = request_30
    tasks = json.loads(request.label_studio.read_text())
    assert request.label_studio.name == "stage-003-label-studio.json"
    assert [t["data"]["robustal_id"] for t in tasks] == list(truth)
    for k, task in enumerate(tasks):
        assert set(task) == {"data"}  # no model yet: no predictions
        assert task["data"]["robustal_request"] == "stage-003" and set(task["data"]) == {"image", "robustal_id",
                                                                                          "robustal_request"}
        path = local_file(task["data"]["image"])
        assert path.is_file() and path.parent.name == "stage-003-images"
        np.testing.assert_array_equal(np.asarray(Image.open(path)), digit_images[0][k])
    config = ET.parse(request.csv.parent / LABEL_STUDIO_CONFIG).getroot()
    image, choices = config.find("Image"), config.find("Choices")
    assert config.tag == "View" and image.attrib == {"name": "image", "value": "$image"}
    assert choices.get("name") == "label" and choices.get("toName") == "image"
    assert [c.get("value") for c in choices.findall("Choice")] == DIGITS


def test_given_image_paths_are_referenced_and_odd_names_escaped(tmp_path, digit_images):
    images, _ = digit_images
    ids = ["cat/a b&c.png", "dog/ä#1.png"]
    paths = [tmp_path / "pool" / i for i in ids]
    classes = ['cat "tabby"', "dog & <co>"]
    request = write_request(tmp_path / "req", "stage-001", ids, torch.from_numpy(images[:2, None]), classes,
                            image_paths=paths)
    tasks = json.loads(request.label_studio.read_text(encoding="utf-8"))
    assert [local_file(t["data"]["image"]) for t in tasks] == [p.resolve() for p in paths]
    assert not (tmp_path / "req" / "stage-001-images").exists()
    root = ET.parse(tmp_path / "req" / LABEL_STUDIO_CONFIG).getroot()
    assert [c.get("value") for c in root.iter("Choice")] == classes
    assert not list((tmp_path / "req").glob(".*.tmp"))  # atomic writes leave no temporary file


def test_many_images_give_several_sheet_pages_and_colour_float_images_work(tmp_path, digit_images):
    images, _ = digit_images
    x = torch.from_numpy(images[:250, None]).repeat(1, 3, 1, 1).float() / 255
    ids = [f"img/{i:04d}.png" for i in range(250)]
    request = write_request(tmp_path, "stage-010", ids, x, DIGITS)
    assert [p.name for p in request.sheets] == ["stage-010.png", "stage-010-2.png", "stage-010-3.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in request.sheets)
    assert len(list((tmp_path / "stage-010-images").glob("*.png"))) == 250


@pytest.mark.parametrize("kwargs, param", [
    ({"name": "a/b"}, "name"), ({"name": ""}, "name"),
    ({"ids": ["1", "1"]}, "ids"), ({"ids": ["1", ""]}, "ids"),
    ({"images": torch.zeros(3, 1, 8, 8, dtype=torch.uint8)}, "images"),
    ({"images": torch.zeros(2, 8, 8, dtype=torch.uint8)}, "images"),
    ({"classes": []}, "classes"), ({"classes": ["a", "a"]}, "classes"),
    ({"image_paths": [Path("x.png")]}, "image_paths"),
])
def test_write_request_checks_its_arguments(tmp_path, kwargs, param):
    args = {"name": "s", "ids": ["1", "2"], "images": torch.zeros(2, 1, 8, 8, dtype=torch.uint8),
            "classes": ["a", "b"]} | kwargs
    with pytest.raises(ConfigError, match=f"The '{param}' parameter of write_request must be"):
        write_request(tmp_path, **args)


# Reading: the happy paths ---------------------------------------------------------------------------------------

def test_filled_csv_reads_back_the_truth(request_30, tmp_path):
    request, truth = request_30
    with open(request.csv, newline="") as f:
        rows = list(csv.reader(f))[1:]
    filled = write_csv(tmp_path / "filled.csv", [[i, str(truth[i])] for i, _ in rows])
    assert read_answers(filled, request.ids, DIGITS) == truth


def test_indices_names_whitespace_bom_semicolons_and_blank_lines(tmp_path, request_30):
    _, truth = request_30
    rows = [[f" {i} ", f" {WORDS[y]}" if k % 2 else str(y)] for k, (i, y) in enumerate(truth.items())]
    path = write_csv(tmp_path / "a.csv", rows + [["", ""], []], header=("ID", "Label", "notes"), delimiter=";",
                     encoding="utf-8-sig")
    assert read_answers(path, list(truth), WORDS) == truth


def test_label_studio_export_reads_back_the_truth_ignoring_cancelled_annotations(tmp_path, request_30):
    _, truth = request_30
    ids = list(truth)
    tasks = [ls_task(i, str(truth[i])) for i in ids]
    tasks[0] = ls_task(ids[0], str(truth[ids[0]]), "9" if truth[ids[0]] != 9 else "8", cancelled=(False, True))
    tasks[1] = ls_task(ids[1], "5" if truth[ids[1]] != 5 else "4", str(truth[ids[1]]))  # corrected later
    (tmp_path / "export.json").write_text(json.dumps(tasks[::-1]))
    assert read_answers(tmp_path / "export.json", ids, DIGITS) == truth


@settings(max_examples=20, deadline=None)
@given(order=st.permutations(range(N)))
def test_any_row_order_reads_back_the_same(order, request_30):
    _, truth = request_30
    items = list(truth.items())
    with tempfile.TemporaryDirectory() as tmp:
        path = write_csv(Path(tmp) / "a.csv", [[items[k][0], str(items[k][1])] for k in order])
        assert read_answers(path, list(truth), DIGITS) == truth


# Reading: every problem, all in one error -----------------------------------------------------------------------

def test_csv_problems_are_listed_with_their_spreadsheet_rows(tmp_path):
    ids = ["a", "b", "c", "d", "e"]
    rows = [["a", "cat"],       # row 2: fine
            ["b", "Cat"],       # row 3: case differs
            ["c", ""],          # row 4: empty
            ["zzz", "dog"],     # row 5: not asked
            ["a", "cat"],       # row 6: duplicate, same label
            ["d", "doggo"],     # row 7: near miss
            ["", "dog"]]        # row 8: no id;  "e" is missing
    with pytest.raises(DataError) as e:
        read_answers(write_csv(tmp_path / "a.csv", rows), ids, ["cat", "dog"])
    msg = problems(e)
    assert "7 problem(s)" in msg and "none were used" in msg and str(tmp_path / "a.csv") in msg
    assert "row 3 (id 'b'): unknown class 'Cat'; did you mean 'cat'?" in msg
    assert "row 4 (id 'c'): no label" in msg
    assert "row 5: id 'zzz' was not asked for" in msg
    assert "row 6: id 'a' appears again (first at row 2)" in msg
    assert "row 7 (id 'd'): unknown class 'doggo'; did you mean 'dog'?" in msg
    assert "row 8: no id" in msg
    assert "1 requested id(s) are not in the file: 'e'" in msg
    assert "Valid classes: cat, dog (or their indices 0..1)." in msg
    assert "row 2" not in msg.replace("first at row 2", "")


def test_indices_are_not_accepted_when_class_names_are_numbers(tmp_path):
    path = write_csv(tmp_path / "a.csv", [["a", "0"], ["b", "3"], ["c", "2"]])  # '3' is a name, '0', '2' are not
    with pytest.raises(DataError, match=r"row 2 \(id 'a'\): unknown class '0'.*\n.*row 4 \(id 'c'\): unknown class"
                       r" '2'\nValid classes: 1, 3\.") as e:
        read_answers(path, ["a", "b", "c"], ["1", "3"])
    assert "or their indices" not in problems(e)
    with pytest.raises(DataError, match=r"unknown class '2'"):  # an index out of range
        read_answers(write_csv(tmp_path / "b.csv", [["a", "2"]]), ["a"], ["x", "y"])


def test_many_problems_are_cut_after_twenty(tmp_path):
    ids = [str(i) for i in range(30)]
    with pytest.raises(DataError) as e:
        read_answers(write_csv(tmp_path / "a.csv", [[i, "nope"] for i in ids]), ids, ["cat", "dog"])
    msg = problems(e)
    assert "30 problem(s)" in msg and "row 21 (id '19')" in msg and "row 22" not in msg and "and 10 more" in msg


@pytest.mark.parametrize("content, expected", [
    (b"name,class\na,cat\n", r"first row must name the columns 'id' and 'label'"),
    (b"", r"first row must name the columns 'id' and 'label'"),
    ("id,label\na,ch\xe9ri\n".encode("latin-1"), r"not UTF-8 text.*CSV UTF-8"),
    (b"id,label\na,\"cat\nb,dog\n", r"not a readable CSV file \(line 3: unexpected end of data\)"),
    (b"id,label\na,\"cat\"x\n", r"not a readable CSV file \(line 2: ',' expected after '\"'\)"),
])
def test_unreadable_csv_files(tmp_path, content, expected):
    (tmp_path / "a.csv").write_bytes(content)
    with pytest.raises(DataError, match=expected):
        read_answers(tmp_path / "a.csv", ["a"], ["cat"])


def test_label_studio_export_problems_name_the_task(tmp_path):
    tasks = [ls_task("a", "cat"),
             ls_task("b", "Dog"),                              # task 2: near miss
             ls_task("c"),                                     # task 3: no annotation
             ls_task("d", "dog", cancelled=(True,)),           # task 4: only a cancelled one
             {"data": {"image": "x.png"}, "annotations": []},  # task 5: not robustal's task
             ls_task("a", "dog"),                              # task 6: imported twice, labeled differently
             ls_task("q", "cat")]                              # task 7: not asked; "e" missing
    tasks[2]["annotations"] = []
    (tmp_path / "e.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError) as e:
        read_answers(tmp_path / "e.json", ["a", "b", "c", "d", "e"], ["cat", "dog"])
    msg = problems(e)
    assert "7 problem(s)" in msg
    assert "task 2 (id 'b'): unknown class 'Dog'; did you mean 'dog'?" in msg
    assert "task 3 (id 'c'): no label" in msg and "task 4 (id 'd'): no label" in msg
    assert "task 5: no data.robustal_id" in msg
    assert "task 1 (id 'a'): labeled differently in several tasks (task 1: 'cat', task 6: 'dog')" in msg
    assert "task 7: id 'q' was not asked for" in msg and "not in the file (in a Label Studio export: tasks not " \
        "annotated yet, or not imported into the project): 'e'" in msg


@pytest.mark.parametrize("content, expected", [
    ('{"data": {}}', r"not a Label Studio JSON export: expected a list of tasks"),
    ('[1, 2]', r"not a Label Studio JSON export"),
    ('[{"data": ', r"not valid JSON"),
])
def test_unreadable_json_files(tmp_path, content, expected):
    (tmp_path / "a.json").write_text(content)
    with pytest.raises(DataError, match=expected):
        read_answers(tmp_path / "a.json", ["a"], ["cat"])


def test_several_choices_wrong_suffix_and_missing_file(tmp_path):
    task = ls_task("a", "cat")
    task["annotations"][0]["result"][0]["value"]["choices"] = ["cat", "dog"]
    (tmp_path / "a.json").write_text(json.dumps([task]))
    with pytest.raises(DataError, match=r"1 problem\(s\)(?s:.*)task 1 \(id 'a'\): 2 choices \['cat', 'dog'\]; "
                       "pick exactly one"):
        read_answers(tmp_path / "a.json", ["a"], ["cat", "dog"])
    (tmp_path / "a.txt").write_text("a,cat")
    with pytest.raises(DataError, match=r"the request's filled \.csv or a Label Studio export \(\.json for JSON"):
        read_answers(tmp_path / "a.txt", ["a"], ["cat"])
    with pytest.raises(DataError, match="does not exist"):
        read_answers(tmp_path / "nope.csv", ["a"], ["cat"])


def test_ids_that_clash_as_file_names_get_distinct_images(tmp_path, digit_images):
    images, _ = digit_images
    ids = ["a/b", "a_b", "A_b", ".hidden"]
    request = write_request(tmp_path, "s", ids, torch.from_numpy(images[:4, None]), DIGITS)
    paths = [local_file(t["data"]["image"]) for t in json.loads(request.label_studio.read_text())]
    assert len({p.name.lower() for p in paths}) == 4 and all(p.is_file() for p in paths)
    assert not any(p.name.startswith(".") for p in paths)
    for k, p in enumerate(paths):
        np.testing.assert_array_equal(np.asarray(Image.open(p)), images[k])


def test_a_blank_label_studio_choice_is_a_missing_label_not_a_skipped_task(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([ls_task("a", "  "), ls_task("b", " dog ")]))
    with pytest.raises(DataError, match=r"1 problem\(s\)(?s:.*)task 1 \(id 'a'\): no label"):
        read_answers(tmp_path / "a.json", ["a", "b"], ["cat", "dog"])
