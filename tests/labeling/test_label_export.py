"""A person's labels out of a labeling project (issue 27.2): ``robustal labels DIR --out labels.csv`` writes one row
per image labeled -- file, class name, round, split, source (a filled request CSV or a Label Studio export) -- and
nothing that was not given (a request still awaited, a model's predictions)."""

from __future__ import annotations

import csv

from test_round_trip import _waiting_for, annotate, export, fill, label_args

from robustal.cli import main
from robustal.data.dataset import validation_size
from robustal.storage.store import Store


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_labels_given_by_csv_and_label_studio_come_out_with_their_file_class_round_split_and_source(
        mnist_folder, tmp_path, capsys):
    pool, truth = mnist_folder
    out = tmp_path / "project"
    assert main(label_args(pool, out)) == 0
    heldout = fill(_waiting_for(capsys.readouterr().out), truth)  # the held-out sample: its CSV filled in
    assert main(label_args(pool, out)) == 0
    stage0 = fill(_waiting_for(capsys.readouterr().out), truth)  # stage 0: its CSV filled in
    assert main(label_args(pool, out)) == 0
    request = _waiting_for(capsys.readouterr().out)  # stage 1: answered in Label Studio
    tasks: list[dict] = []
    annotate(tasks, request, truth)
    assert main(label_args(pool, out, "--answers", str(export(tasks, "json", tmp_path)))) == 0
    awaited = _waiting_for(capsys.readouterr().out)  # stage 2: asked, not answered
    assert awaited.name == "stage-002.csv"
    stage1 = [t["data"]["robustal_id"] for t in tasks]

    labels = tmp_path / "labels.csv"
    assert main(["labels", str(out), "--out", str(labels)]) == 0
    assert "80 labels from 3 rounds" in capsys.readouterr().err
    rows = _rows(labels)
    assert list(rows[0]) == ["file", "class", "round", "split", "source"]
    assert [r["file"] for r in rows] == heldout + sorted(stage0) + sorted(stage1)
    assert all(r["class"] == str(truth[r["file"]]) for r in rows)  # the class each image was given
    k = validation_size(len(heldout))
    assert [(r["round"], r["split"], r["source"]) for r in rows] == (
        [("heldout", "validation", "csv")] * k + [("heldout", "test", "csv")] * (len(heldout) - k)
        + [("0", "train", "csv")] * 20 + [("1", "train", "label-studio")] * 20)
    assert len(Store(out, create=False).labels("label")) == 40  # exactly the stored labels, nothing of stage 2

    # the project's model of its last stage is evaluable from the folder and reproduces its stored accuracy (27.1)
    import json

    last = Store(out, create=False).stages("label")[-1]
    assert main(["evaluate", str(out), "--run", "label", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["clean"], got["robust"], got["n"]) == (last.clean, last.robust, 20)  # the 20 held-out test images


def test_labels_refuses_a_folder_that_is_no_labeling_project(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["labels", str(tmp_path / "runs"), "--out", str(tmp_path / "labels.csv")]) == 2
    err = capsys.readouterr().err
    assert "not a labeling project" in err and "--out folder of robustal label" in err
    assert not (tmp_path / "labels.csv").exists()
