"""Checkpoints that work anywhere (issue 18.3, 19.2): the data found from any working folder by absolute path and
fingerprint, else beside the checkpoint; other data refused; the training set taken from the record (a run's
selection too); an image folder's classes mapped by the names the checkpoint records; picks of an image folder with
file names; a person's labels in the picks CSV."""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch

from robustal.cli import main

N_TRAIN, N_TEST, K = 600, 200, 300


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.round(d.images * (255 / 16)).astype(np.uint8), d.target.astype(np.int64)


def _write_npz(path, shift: int = 0):
    x, y = _digits()
    x, y = np.roll(x, shift, axis=0), np.roll(y, shift)
    np.savez(path, x_train=x[:N_TRAIN], y_train=y[:N_TRAIN], x_test=x[N_TRAIN:N_TRAIN + N_TEST],
             y_test=y[N_TRAIN:N_TRAIN + N_TEST])
    return path


def _train(dataset: str, save, *extra: str) -> None:
    assert main(["train", "--dataset", dataset, "--training", "standard", "--epochs", "2", "--eval-steps", "0",
                 "--no-progress", "--save", str(save), *extra]) == 0


def _evaluate_json(capsys, *argv) -> dict:
    capsys.readouterr()
    assert main(["evaluate", *map(str, argv), "--eval-steps", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _error(capsys, argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    return " ".join(err.split())


@pytest.fixture
def made_in_a(tmp_path, monkeypatch):
    """A checkpoint trained in folder a/ on ``m.npz`` named by a relative path, as a person types it."""
    a = tmp_path / "a"
    a.mkdir()
    _write_npz(a / "m.npz")
    monkeypatch.chdir(a)
    _train("m.npz", "m.pt", "--train-size", str(K))
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return a


def test_a_checkpoint_records_its_data_absolutely_and_is_evaluated_from_another_folder(made_in_a, capsys):
    record = torch.load(made_in_a / "m.pt", weights_only=True)
    assert record["dataset"] == str((made_in_a / "m.npz").resolve())
    from robustal.data import load_dataset

    assert record["data_fingerprint"] == load_dataset(str(made_in_a / "m.npz")).fingerprint()
    result = _evaluate_json(capsys, "--model", "../a/m.pt")
    assert result["data"] == str((made_in_a / "m.npz").resolve()) and result["data_is_recorded"]
    assert 0.5 < result["clean"] <= 1


def test_data_moved_with_the_checkpoint_are_found_beside_it(made_in_a, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.move(made_in_a, moved)
    result = _evaluate_json(capsys, "--model", moved / "m.pt")
    assert result["data"] == str(moved / "m.npz")
    picks = tmp_path / "picks.csv"
    assert main(["select", "--model", str(moved / "m.pt"), "--metric", "random", "--n", "5", "--out",
                 str(picks)]) == 0


def test_data_that_changed_are_refused_and_missing_data_are_reported(made_in_a, capsys):
    _write_npz(made_in_a / "m.npz", shift=7)  # the same name, other data
    err = _error(capsys, ["evaluate", "--model", made_in_a / "m.pt", "--eval-steps", "0"])
    assert "hold other data" in err and "m.npz" in err and "--data" in err
    (made_in_a / "m.npz").unlink()
    err = _error(capsys, ["select", "--model", made_in_a / "m.pt", "--n", "5", "--out", "p.csv"])
    assert "which is not there" in err and "m.npz" in err and "--data" in err


def test_other_data_given_with_data(made_in_a, tmp_path, capsys):
    other = _write_npz(tmp_path / "other.npz", shift=7)
    result = _evaluate_json(capsys, "--model", made_in_a / "m.pt", "--data", other)  # evaluate: any data
    assert not result["data_is_recorded"]
    picks = tmp_path / "picks.csv"
    argv = ["select", "--model", made_in_a / "m.pt", "--data", other, "--metric", "random", "--n", "5", "--out", picks]
    err = _error(capsys, argv)  # the recorded first 300 are not "the first 300" of other data
    assert "other data" in err and "--train-size K" in err
    assert main([str(a) for a in argv] + ["--train-size", "100"]) == 0
    assert all(int(r["index"]) >= 100 for r in csv.DictReader(picks.open()))


def test_a_checkpoint_of_an_earlier_robustal_still_works(made_in_a, tmp_path, monkeypatch, capsys):
    """No fingerprint, the dataset recorded relative to the folder it was made in: read from that folder as before,
    and from any other folder beside the checkpoint."""
    record = torch.load(made_in_a / "m.pt", weights_only=True)
    for key in ("data_fingerprint", "classes"):
        record.pop(key, None)
    record["dataset"] = "m.npz"
    torch.save(record, made_in_a / "old.pt")
    assert _evaluate_json(capsys, "--model", made_in_a / "old.pt")["data"] == str(made_in_a / "m.npz")
    monkeypatch.chdir(made_in_a)
    assert _evaluate_json(capsys, "--model", "old.pt")["data"] == str(made_in_a / "m.npz")


def test_select_and_retrain_on_a_run_checkpoint_use_its_recorded_selection(tmp_path, capsys):
    data = _write_npz(tmp_path / "m.npz")
    run_ckpt = tmp_path / "run.pt"
    assert main(["run", "--dataset", str(data), "--training", "standard", "--acquisition", "entropy", "--initial",
                 "100", "--per-stage", "50", "--budget", "150", "--epochs", "1", "--min-steps", "0", "--eval-steps",
                 "0", "--no-progress", "--save", str(run_ckpt)]) == 0
    selected = set(torch.load(run_ckpt, weights_only=True)["selected"])
    assert len(selected) == 150
    picks = tmp_path / "picks.csv"
    capsys.readouterr()
    assert main(["select", "--model", str(run_ckpt), "--metric", "entropy", "--n", str(N_TRAIN - 150), "--out",
                 str(picks)]) == 0
    err = capsys.readouterr().err
    assert f"ranking the {N_TRAIN - 150} new unlabeled samples" in err
    assert "150 training samples recorded in the checkpoint" in err and "whole training set" not in err
    picked = [int(r["index"]) for r in csv.DictReader(picks.open())]
    assert not selected & set(picked) and len(set(picked)) == N_TRAIN - 150  # everything it has not seen
    err = _error(capsys, ["select", "--model", run_ckpt, "--train-size", "500", "--n", "5", "--out", picks])
    assert "--train-size 500" in err and "150 training samples it lists" in err and "Leave --train-size out" in err
    # retrain on 20 picks, save: the new checkpoint records the 150 and the 20
    picks.write_text("rank,index\n" + "".join(f"{r},{i}\n" for r, i in enumerate(picked[:20], 1)))
    saved = tmp_path / "retrained.pt"
    assert main(["retrain", "--model", str(run_ckpt), "--selected", str(picks), "--training", "standard",
                 "--epochs", "1", "--eval-steps", "0", "--no-progress", "--save", str(saved)]) == 0
    record = torch.load(saved, weights_only=True)
    assert "train_size" not in record and set(record["selected"]) == selected | set(picked[:20])
    # a pick among the model's own training data is refused, by line
    picks.write_text(f"rank,index\n1,{picked[30]}\n2,{sorted(selected)[0]}\n")
    err = _error(capsys, ["retrain", "--model", run_ckpt, "--selected", picks, "--training", "standard",
                          "--epochs", "1", "--eval-steps", "0"])
    assert "among the 150 samples the model was trained on" in err and "line 3" in err


def _image_folder(root, classes=("zero", "one", "two"), per_class=(40, 14)):
    """A labeled image-folder dataset of real digits 0, 1, 2 under the given class names."""
    from PIL import Image

    x, y = _digits()
    for part, n in zip(("train", "test"), per_class, strict=True):
        for c, name in enumerate(classes):
            folder = root / part / name
            folder.mkdir(parents=True)
            images = x[y == c][:n] if part == "train" else x[y == c][-n:]
            for i, image in enumerate(images):
                Image.fromarray(image).save(folder / f"{name}-{i:03d}.png")
    return root


FOLDER_ARGS = ["--image-size", "8", "--channels", "1", "--epsilon", "0.2"]


@pytest.fixture
def folder_ckpt(tmp_path):
    data = _image_folder(tmp_path / "data")
    ckpt = tmp_path / "f.pt"
    _train(str(data), ckpt, *FOLDER_ARGS, "--train-size", "100", "--epochs", "6")  # zero: 20 of 40
    return data, ckpt


def test_picks_of_an_image_folder_name_their_files_and_a_person_may_label_them(folder_ckpt, tmp_path, capsys,
                                                                               monkeypatch):
    data, ckpt = folder_ckpt
    assert torch.load(ckpt, weights_only=True)["classes"] == ["one", "two", "zero"]  # sorted sub-folder names
    picks = tmp_path / "picks.csv"
    assert main(["select", "--model", str(ckpt), "--metric", "entropy", "--n", "20", "--out", str(picks)]) == 0
    rows = list(csv.DictReader(picks.open()))
    assert list(rows[0]) == ["rank", "index", "score", "file", "label"]
    from robustal.data.folders import folder_dataset

    ids = folder_dataset(data, 8, 1, 0.2)[1].train_ids
    assert all(ids[int(r["index"])] == r["file"] and r["label"] == "" for r in rows)
    # a person labels the picks by class name (the truth, from the file's folder), in a spreadsheet with ';'
    rows = [{**r, "label": r["file"].split("/")[0]} for r in rows]
    with picks.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Rank", "Index", "Score", "File", "Label"], delimiter=";")
        writer.writeheader()
        writer.writerows({k.capitalize(): v for k, v in r.items()} for r in rows)
    from robustal.studies import retrain as retrain_module

    seen = []
    real_fit = retrain_module.fit
    monkeypatch.setattr(retrain_module, "fit", lambda model, train, *a, **k: seen.append(train.y) or real_fit(
        model, train, *a, **k))
    capsys.readouterr()
    argv = ["retrain", "--model", str(ckpt), "--selected", str(picks), "--training", "standard", "--epochs", "1",
            "--eval-steps", "0", "--no-progress"]
    assert main(argv) == 0
    assert "your labels in" in capsys.readouterr().err
    names = ["one", "two", "zero"]
    assert seen[0][-20:].tolist() == [names.index(r["label"]) for r in rows]
    # other labels than the dataset's are trained on as given
    with picks.open("w", newline="") as f:
        f.write("rank,index,label\n" + "".join(f"{r['rank']},{r['index']},zero\n" for r in rows))
    assert main(argv) == 0
    assert seen[1][-20:].tolist() == [names.index("zero")] * 20
    assert "of your 20 labels differ from the dataset's" in capsys.readouterr().err
    # a file that is not the index's (the folder changed), a label for only some picks, an unknown class
    bad = [("rank,index,file\n1,{i},two/nope.png\n", "files and indices disagree"),
           ("rank,index,label\n1,{i},zero\n2,{j},\n", "filled for 1 of 2 picks"),
           ("rank,index,label\n1,{i},zero\n2,{j},three\n", "unknown class labels (line 3: 'three')")]
    for text, message in bad:
        picks.write_text(text.format(i=rows[0]["index"], j=rows[1]["index"]))
        assert message in _error(capsys, argv)


def _reversed_classes(ckpt, out):
    """The same model under reversed class names: the output rows reversed, the class list too."""
    record = torch.load(ckpt, weights_only=True)
    last = [k for k, v in record["model"].items() if v.ndim == 2][-1]  # the final linear layer
    bias = last.rsplit(".", 1)[0] + ".bias"
    record["model"][last] = record["model"][last].flip(0)
    record["model"][bias] = record["model"][bias].flip(0)
    record["classes"] = record["classes"][::-1]
    torch.save(record, out)
    return out


def test_an_image_folder_is_mapped_by_the_class_names_the_checkpoint_records(folder_ckpt, tmp_path, capsys):
    """Issue 19.2: a model whose classes are in another order than the folder's sorted names."""
    data, ckpt = folder_ckpt
    same = _evaluate_json(capsys, "--model", ckpt, "--data", data)["clean"]
    flipped = _reversed_classes(ckpt, tmp_path / "flipped.pt")
    assert _evaluate_json(capsys, "--model", flipped, "--data", data)["clean"] == same > 0.6
    extra = _image_folder(tmp_path / "four", classes=("zero", "one", "two", "three"), per_class=(2, 2))
    err = _error(capsys, ["evaluate", "--model", flipped, "--data", extra, "--eval-steps", "0"])
    assert re.search(r"the class folder\(s\) three are not among the 3 classes .* \(zero, two, one\)", err), err
