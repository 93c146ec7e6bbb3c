"""The labeling round trip as a person drives it: start on an unlabeled folder of real MNIST images, receive a
request, fill it from the true labels (CSV, or a Label Studio export), continue; killed at any moment, the same
command loses nothing and asks for nothing twice."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustal.cli import main


def label_args(pool: Path, out: Path, *extra: str) -> list[str]:
    return ["label", "--pool", str(pool), "--classes", ",".join(map(str, range(10))), "--image-size", "16",
            "--channels", "1", "--epsilon", "0.3", "--heldout-size", "40", "--initial", "20", "--per-stage", "20",
            "--budget", "60", "--epochs", "1", "--eval-steps", "2", "--attack-steps", "2", "--min-steps", "0",
            "--no-progress",
            "--out", str(out), *extra]


def fill(request: Path, truth: dict[str, int]) -> list[str]:
    """Fill a request CSV's label column from the true labels, as a person would; returns the ids asked for."""
    with request.open(newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    with request.open("w", newline="") as f:
        f.write("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    return ids


def annotate(tasks: list[dict], request: Path, truth: dict[str, int]) -> None:
    """Import a request's Label Studio tasks into the project ``tasks`` (a list of all its tasks, as Label Studio keeps
    them) and annotate them from the true labels, the first one after a cancelled attempt."""
    for k, task in enumerate(json.loads(request.with_name(request.stem + "-label-studio.json").read_text())):
        task_id = len(tasks) + 1
        choice = {"from_name": "label", "to_name": "image", "type": "choices",
                  "value": {"choices": [str(truth[task["data"]["robustal_id"]])]}}
        annotations = [{"id": 2 * task_id, "was_cancelled": False, "result": [choice],
                        "updated_at": f"2026-01-01T00:00:{task_id % 60:02d}Z"}]
        if k == 0:
            annotations.insert(0, {"id": 2 * task_id - 1, "was_cancelled": True, "result": []})
        tasks.append({"id": task_id, "data": task["data"], "annotations": annotations,
                      "predictions": task.get("predictions", [])})


def export(tasks: list[dict], fmt: str, folder: Path) -> Path:
    """The project's export in Label Studio's JSON, JSON-MIN or CSV format (one entry per kept annotation)."""
    if fmt == "json":
        path = folder / "export.json"
        path.write_text(json.dumps(tasks))
        return path
    entries = [{**t["data"], "id": t["id"], "label": a["result"][0]["value"]["choices"][0], "annotator": 1,
                "annotation_id": a["id"], "updated_at": a["updated_at"]}
               for t in tasks for a in t["annotations"] if not a["was_cancelled"]]
    if fmt == "json-min":
        path = folder / "export-min.json"
        path.write_text(json.dumps(entries))
        return path
    path = folder / "export.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, sorted(entries[0]))
        w.writeheader()
        w.writerows(entries)
    return path


def _waiting_for(out_text: str) -> Path:
    line = next(ln for ln in out_text.splitlines() if ln.startswith("waiting for"))
    return Path(line.split(" in ", 1)[1].split(" ")[0].rstrip(":"))


def test_csv_round_trip_from_an_unlabeled_folder(mnist_folder, tmp_path, capsys):
    pool, truth = mnist_folder
    out = tmp_path / "project"
    asked: list[str] = []
    requests = []
    for _ in range(5):  # held-out sample, then the 3 stages of 20 labels, then the end
        assert main(label_args(pool, out)) == 0
        text = capsys.readouterr().out
        if "waiting for" not in text:
            break
        request = _waiting_for(text)
        requests.append(request.name)
        asked += fill(request, truth)
    assert requests == ["heldout.csv", "stage-000.csv", "stage-001.csv", "stage-002.csv"]
    assert len(asked) == len(set(asked)) == 40 + 60  # nobody labels an image twice
    assert "| 2     | 60      |" in text  # the final table: stage 2 at 60 labels
    from robustal.storage.store import Store

    store = Store(out)
    assert store.status("label") == "finished" and [s.labeled for s in store.stages("label")] == [20, 40, 60]
    assert all(0 <= s.clean <= 1 for s in store.stages("label"))
    assert len(store.labels("label")) == 60  # every answer kept
    assert main(["status", str(out)]) == 0
    assert "run 'label': finished, 3 stages, 60 labels so far" in capsys.readouterr().out
    # run again: nothing left to do, nothing asked
    assert main(label_args(pool, out)) == 0
    assert "waiting for" not in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["json", "json-min", "csv"])
def test_one_label_studio_project_across_rounds(mnist_folder, tmp_path, capsys, fmt):
    """Every round's tasks go into one project; each export holds the earlier rounds' tasks too. Standard training
    with a floor on the steps, so that the models learn: a model at chance level sends no predictions (issue 27.5)."""
    pool, truth = mnist_folder
    out = tmp_path / "project"

    def args(*extra: str) -> list[str]:
        return label_args(pool, out, "--training", "standard", "--min-steps", "60", *extra)

    assert main(args()) == 0
    request = _waiting_for(capsys.readouterr().out)
    project: list[dict] = []
    for _ in range(4):
        annotate(project, request, truth)
        assert main(args("--answers", str(export(project, fmt, tmp_path)))) == 0
        text = capsys.readouterr().out
        if "waiting for" not in text:
            break
        request = _waiting_for(text)
        if request.name == "stage-001.csv":  # its predictions are those of stage 0's model, the latest checkpoint
            assert_predictions_are_the_models(request, pool, out / "checkpoints" / "label" / "stage-000.pt")
    from robustal.storage.store import Store

    assert [s.labeled for s in Store(out).stages("label")] == [20, 40, 60]
    assert not any(s.at_chance for s in Store(out).stages("label")[:2])  # the models that sent predictions learned
    assert len(project) == 100  # held-out 40 + 3 stages of 20, all in the one project
    # the model's predictions came with every request after the first stage, as Label Studio pre-annotations
    predicted = [t for t in project if t["predictions"]]
    assert {t["data"]["robustal_request"] for t in predicted} == {"stage-001", "stage-002"} and len(predicted) == 40
    for t in predicted:
        (p,) = t["predictions"]
        assert p["model_version"] == "robustal" and 0.1 <= p["score"] <= 1
        assert p["result"][0]["value"]["choices"][0] in map(str, range(10))
    # given again once finished: nothing to answer, and it agrees with what was imported
    assert main(args("--answers", str(export(project, fmt, tmp_path)))) == 0
    assert "no request is awaited that it could answer" in capsys.readouterr().err


def test_a_run_stored_with_its_project_folder_name_resumes_in_a_renamed_folder():
    """robustal 0.2 stored the project folder's name with the run; it is not a setting (issue 19.6)."""
    from robustal.storage.schema import config_diff

    assert config_diff({"loop": {"budget": 60}, "project": "old-name"}, {"loop": {"budget": 60}}) == []
    assert config_diff({"loop": {"budget": 60}}, {"loop": {"budget": 80}}) == ["loop.budget: stored 60, now 80"]


def assert_predictions_are_the_models(request: Path, pool: Path, checkpoint: Path) -> None:
    from robustal.acquisition.inference import predict
    from robustal.data.folders import read_image_folder
    from robustal.loop.experiment import model_factory

    model = model_factory("small-cnn", num_classes=10, in_channels=1, image_size=16)()
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    images = read_image_folder(pool, 16, 1)
    tasks = json.loads(request.with_name(request.stem + "-label-studio.json").read_text())
    rows = [images.ids.index(t["data"]["robustal_id"]) for t in tasks]
    probs = predict(model, images.x[rows]).probs
    for task, p in zip(tasks, probs, strict=True):
        (prediction,) = task["predictions"]
        assert prediction["result"][0]["value"]["choices"] == [str(int(p.argmax()))]
        assert prediction["score"] == pytest.approx(float(p.max()), abs=1e-4)


def test_requests_filled_in_place_by_a_spreadsheet_and_a_renamed_project_folder(mnist_folder, tmp_path, capsys):
    pool, truth = mnist_folder
    out = tmp_path / "project"
    assert main(label_args(pool, out)) == 0
    request = _waiting_for(capsys.readouterr().out)
    ids = fill(request, truth)
    request.write_text("ID;Label\n" + "".join(f"{i};{truth[i]}\n" for i in ids))  # a spreadsheet's locale
    assert main(label_args(pool, out)) == 0
    request = _waiting_for(capsys.readouterr().out)
    assert request.name == "stage-000.csv"
    ids = fill(request, truth)
    request.write_text("id, label\n" + "".join(f"{i},\t{truth[i]}\n" for i in ids))
    moved = out.rename(tmp_path / "renamed")  # the project's folder may move
    assert main(label_args(pool, moved)) == 0
    assert _waiting_for(capsys.readouterr().out) == moved / "requests" / "stage-001.csv"
    from robustal.storage.store import Store

    assert len(Store(moved).labels("label")) == 20


def test_bad_answers_are_refused_whole_and_nothing_is_imported(mnist_folder, tmp_path, capsys):
    pool, truth = mnist_folder
    out = tmp_path / "project"
    assert main(label_args(pool, out)) == 0
    fill(_waiting_for(capsys.readouterr().out), truth)
    assert main(label_args(pool, out)) == 0
    request = _waiting_for(capsys.readouterr().out)
    ids = fill(request, truth)
    rows = request.read_text().splitlines()
    rows[2] = f"{ids[1]},eleven"          # unknown class
    rows[5] = f"{ids[4]},"                # missing label
    rows.append(f"{ids[0]},{truth[ids[0]]}")  # duplicate
    rows.append("digit-9999.png,3")       # not asked for
    request.write_text("\n".join(rows) + "\n")
    assert main(label_args(pool, out)) == 2
    err = capsys.readouterr().err
    for fragment in ("row 3", "'eleven'", "row 6", "no label", "row 22", "appears again", "digit-9999.png",
                     "not asked for"):
        assert fragment in err, fragment
    from robustal.storage.store import Store

    assert Store(out).labels("label") == {}  # nothing half-imported
    request.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    assert main(label_args(pool, out)) == 0  # fixed: it goes on
    assert len(Store(out).labels("label")) == 20


def _labels_in(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("kill_at", ["while training", "right after starting"])
def test_killed_at_any_moment_the_same_command_loses_nothing_and_asks_nothing_twice(mnist_folder, tmp_path, kill_at):
    pool, truth = mnist_folder
    out = tmp_path / "project"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "robustal.cli", *label_args(pool, out, "--epochs", "8")]

    def run() -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    fill(_waiting_for(run()), truth)  # held-out
    fill(_waiting_for(run()), truth)  # stage 0
    # Stage 0 trains now: kill the process mid-way, once its labels are stored (or at once).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    if kill_at == "while training":
        while _labels_in(out / "results.db") < 20 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
    else:
        time.sleep(0.5)
    assert proc.poll() is None, "the command finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    status = subprocess.run([sys.executable, "-m", "robustal.cli", "status", str(out)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert status.returncode == 0 and "'label': running" not in status.stdout, status.stdout  # its process is dead
    if kill_at == "while training":  # stage 0's labels were imported: nothing is awaited any more
        assert "'label': interrupted (its process ended without finishing" in status.stdout
        assert "awaited" not in status.stdout and "stage 0: its 20 labels are imported" in status.stdout
    request0 = out / "requests" / "stage-000.csv"
    before = request0.read_bytes()
    nxt = _waiting_for(run())  # the same command: stage 0 finishes from the stored labels, stage 1 is requested
    assert nxt.name == "stage-001.csv"
    assert request0.read_bytes() == before  # the answered request was not rewritten
    asked = fill(nxt, truth)
    run()
    from robustal.storage.store import Store

    store = Store(out)
    assert [s.labeled for s in store.stages("label")] == [20, 40]
    picks = store.selections("label")
    assert len(set(picks[0]) | set(picks[1])) == 40 and len(asked) == 20
    # the whole run equals one that was never killed
    clean = tmp_path / "clean"
    cmd_clean = [sys.executable, "-m", "robustal.cli", *label_args(pool, clean, "--epochs", "8")]
    for _ in range(3):
        done = subprocess.run(cmd_clean, capture_output=True, text=True, env=env, timeout=300)
        fill(_waiting_for(done.stdout), truth)
    subprocess.run(cmd_clean, capture_output=True, text=True, env=env, timeout=300)
    assert Store(clean).selections("label") == picks
    metrics = lambda s: [(r.labeled, r.clean, r.robust, r.val_score) for r in s.stages("label")]
    assert metrics(Store(clean))[:2] == metrics(store)
    assert np.isfinite([r.clean for r in store.stages("label")]).all()


def test_pseudo_labels_never_reach_a_persons_labels_or_requests(mnist_folder, tmp_path, capsys):
    """A project that trains on its unlabeled images: the store, the requests and the Label Studio tasks hold the
    person's answers and the images asked for, never a pseudo-label."""
    from robustal.storage.store import Store

    pool, truth = mnist_folder
    out = tmp_path / "project"
    extra = ("--pool-training", "self-training", "--teacher-epochs", "50")
    answered: dict[str, int] = {}
    for _ in range(5):
        assert main(label_args(pool, out, *extra)) == 0
        text = capsys.readouterr().out
        if "waiting for" not in text:
            break
        request = _waiting_for(text)
        for name in fill(request, truth):
            answered[name] = truth[name]
        tasks = json.loads(request.with_name(request.stem + "-label-studio.json").read_text())
        assert all(not t.get("annotations") for t in tasks)  # predictions at most, never an annotation
        with request.open(newline="") as f:
            asked = [row["id"] for row in csv.DictReader(f)]
        assert len(asked) == 40 if request.name == "heldout.csv" else len(asked) == 20
    store = Store(out)
    stages = store.stages("label")
    assert [s.labeled for s in stages] == [20, 40, 60]
    assert all(s.pool_images and s.pool_images > 0 for s in stages)  # the unlabeled images were trained on
    assert all(s.pseudo_accuracy is None for s in stages)  # a person's pool: no true labels, no claimed accuracy
    assert len(store.labels("label")) == 60 and len(answered) == 100  # held-out 40 + 60: only what was answered
    assert "pool images" in (main(["status", str(out)]) == 0 and capsys.readouterr().out)
