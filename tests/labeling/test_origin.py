"""Answers from another labeling project are refused, naming both projects, and nothing is stored (issue 28).

Two projects can ask for the same ids: npz pools number their images 0..N-1, and image folders often share file
names. Each case starts two projects A and B on pools with the same ids and different images (same seed, so both
ask for the same held-out sample), and gives A the answers B's person gave.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from robustal.cli import main
from robustal.labeling.label_origin import PROJECT_FIELD
from robustal.labeling.labeling import PROJECT_FILE, TOKEN_KEY

N = 40


def digits(start: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images[start:start + N] * (255 / 16)).astype(np.uint8)
    return x, d.target[start:start + N].astype(np.int64)


def folder_pool(path: Path, x: np.ndarray) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    for i, image in enumerate(x):
        Image.fromarray(image).save(path / f"mnist-{i:05d}.png")
    return path


def npz_pool(path: Path, x: np.ndarray) -> Path:
    np.savez(path, x_train=x)
    return path


def args(pool: Path, out: Path, *extra) -> list[str]:
    return ["label", "--pool", str(pool), "--classes", ",".join(map(str, range(10))), "--image-size", "8",
            "--channels", "1", "--epsilon", "0.2", "--heldout-size", "10", "--initial", "10", "--per-stage", "10",
            "--budget", "20", "--epochs", "1", "--min-steps", "0", "--eval-steps", "0", "--no-progress",
            "--out", str(out), *extra]


def truth_of(pool: Path, y: np.ndarray) -> dict[str, int]:
    return {f"mnist-{i:05d}.png" if pool.is_dir() else str(i): int(y[i]) for i in range(N)}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".robustal.lock"}


def token(out: Path) -> str:
    return json.loads((out / PROJECT_FILE).read_text())[TOKEN_KEY]


def filled_csv(out: Path, truth: dict[str, int], dest: Path) -> Path:
    """The project's held-out request CSV filled in as a person would, keeping every column robustal wrote."""
    with (out / "requests" / "heldout.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with dest.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows({**r, "label": truth[r["id"]]} for r in rows)
    return dest


def tasks_of(out: Path, truth: dict[str, int] | None, first_id: int = 1, strip_token: bool = False) -> list[dict]:
    """The held-out request's Label Studio tasks as a project would export them (JSON), annotated from ``truth``
    (None: not annotated)."""
    tasks = []
    for k, task in enumerate(json.loads((out / "requests" / "heldout-label-studio.json").read_text())):
        data = {key: v for key, v in task["data"].items() if not (strip_token and key == PROJECT_FIELD)}
        annotations = [] if truth is None else [{
            "id": first_id + k, "was_cancelled": False, "updated_at": "2026-12-01T00:00:00Z",
            "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                        "value": {"choices": [str(truth[data["robustal_id"]])]}}]}]
        tasks.append({"id": first_id + k, "data": data, "annotations": annotations})
    return tasks


def json_min(tasks: list[dict]) -> list[dict]:
    return [{**t["data"], "id": t["id"], "label": a["result"][0]["value"]["choices"][0], "annotation_id": a["id"]}
            for t in tasks for a in t["annotations"]]


@pytest.fixture
def two_projects(tmp_path, request):
    """Projects A and B, each waiting for its held-out labels, on pools of the kind ``request.param`` with the same
    ids and different images."""
    xa, ya = digits(0)
    xb, yb = digits(N)
    make = folder_pool if request.param == "folder" else npz_pool
    suffix = "" if request.param == "folder" else ".npz"
    pools = [make(tmp_path / f"pool-{p}{suffix}", x) for p, x in (("a", xa), ("b", xb))]
    outs = [tmp_path / "A", tmp_path / "B"]
    for pool, out in zip(pools, outs, strict=True):
        assert main(args(pool, out)) == 0
    return pools, outs, truth_of(pools[0], ya), truth_of(pools[1], yb)


def refused(capsys, pool: Path, out: Path, answers: Path, *expect: str) -> str:
    """``label --answers`` is refused with every fragment of ``expect`` in its message, and nothing is stored."""
    before = snapshot(out)
    capsys.readouterr()
    assert main(args(pool, out, "--answers", str(answers))) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in expect:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert snapshot(out) == before, "refused answers changed the project folder"
    assert not (out / "heldout-labels.csv").exists()
    return err


@pytest.mark.parametrize("two_projects", ["folder", "npz"], indirect=True)
def test_every_request_carries_the_projects_token(two_projects):
    _, (a, b), _, _ = two_projects
    assert token(a) != token(b) and token(a).startswith("A:")
    with (a / "requests" / "heldout.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {r[PROJECT_FIELD] for r in rows} == {token(a)} and {r["label"] for r in rows} == {""}
    tasks = json.loads((a / "requests" / "heldout-label-studio.json").read_text())
    assert {t["data"][PROJECT_FIELD] for t in tasks} == {token(a)}


@pytest.mark.parametrize("two_projects", ["folder", "npz"], indirect=True)
@pytest.mark.parametrize("fmt", ["request csv", "json", "json-min"])
def test_another_projects_answers_are_refused_naming_both(two_projects, fmt, tmp_path, capsys):
    (pool_a, _), (a, b), _, truth_b = two_projects
    if fmt == "request csv":
        answers = filled_csv(b, truth_b, tmp_path / "b-answers.csv")
    else:
        tasks = tasks_of(b, truth_b)
        answers = tmp_path / "b-export.json"
        answers.write_text(json.dumps(tasks if fmt == "json" else json_min(tasks)))
    refused(capsys, pool_a, a, answers, "belong to another labeling project", token(b), token(a), str(pool_a),
            "another pool")


@pytest.mark.parametrize("two_projects", ["folder", "npz"], indirect=True)
def test_answers_without_a_token_are_checked_by_their_image(two_projects, tmp_path, capsys):
    """Tasks written before tokens existed: B's tasks name B's images, which are not A's."""
    (pool_a, _), (a, b), truth_a, truth_b = two_projects
    answers = tmp_path / "b-old.json"
    answers.write_text(json.dumps(tasks_of(b, truth_b, strip_token=True)))
    refused(capsys, pool_a, a, answers, "names the image", "none were used")
    own = tmp_path / "a-old.json"  # A's own tasks without the token: accepted
    own.write_text(json.dumps(tasks_of(a, truth_a, strip_token=True)))
    assert main(args(pool_a, a, "--answers", str(own))) == 0
    assert (a / "heldout-labels.csv").is_file()


@pytest.mark.parametrize("two_projects", ["npz"], indirect=True)
def test_one_label_studio_project_holding_both_projects_tasks(two_projects, tmp_path, capsys):
    """Both projects' tasks imported into one Label Studio project, only A's annotated: B does not import A's
    labels; A, given an export of its own tasks only, does."""
    (pool_a, pool_b), (a, b), truth_a, _ = two_projects
    both = tasks_of(a, truth_a) + tasks_of(b, None, first_id=100)
    answers = tmp_path / "shared.json"
    answers.write_text(json.dumps(both))
    refused(capsys, pool_b, b, answers, "belong to another labeling project", token(a), token(b),
            "export only the tasks whose robustal_project is", str(b / "requests"))
    refused(capsys, pool_a, a, answers, "belong to another labeling project", token(b))
    mine = tmp_path / "a-only.json"
    mine.write_text(json.dumps([t for t in both if t["data"][PROJECT_FIELD] == token(a)]))
    assert main(args(pool_a, a, "--answers", str(mine))) == 0
    kept = (a / "heldout-labels.csv").read_text().splitlines()[1:]
    assert kept and all(int(line.split(",")[1]) == truth_a[line.split(",")[0]] for line in kept)


@pytest.mark.parametrize("two_projects", ["folder"], indirect=True)
def test_a_task_naming_a_request_the_project_never_wrote_is_refused(two_projects, tmp_path, capsys):
    (pool_a, _), (a, _), truth_a, _ = two_projects
    tasks = tasks_of(a, truth_a)
    tasks[0]["data"]["robustal_request"] = "stage-007"
    answers = tmp_path / "export.json"
    answers.write_text(json.dumps(tasks))
    refused(capsys, pool_a, a, answers, "task 1", "'stage-007', which this project never wrote")


def test_a_project_made_before_tokens_gets_one_and_its_old_request_still_reads(tmp_path, capsys):
    """An older project: no token in project.json, its request CSV without the token column. Filled in place, the
    request is read as before; the token is added, and written into the requests after it."""
    x, y = digits(0)
    pool, out = folder_pool(tmp_path / "pool", x), tmp_path / "old"
    assert main(args(pool, out)) == 0
    settings = json.loads((out / PROJECT_FILE).read_text())
    del settings[TOKEN_KEY]
    (out / PROJECT_FILE).write_text(json.dumps(settings))
    request = out / "requests" / "heldout.csv"
    ids = [r["id"] for r in csv.DictReader(request.open(newline=""))]
    truth = truth_of(pool, y)
    request.write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
    assert main(args(pool, out)) == 0
    assert (out / "heldout-labels.csv").is_file()
    new = token(out)
    stage0 = list(csv.DictReader((out / "requests" / "stage-000.csv").open(newline="")))
    assert new.startswith("old:") and {r[PROJECT_FIELD] for r in stage0} == {new}


def test_a_changed_pool_is_refused_naming_the_images(tmp_path, capsys):
    """One image added and one changed since the project started: the refusal names both files."""
    import shutil

    from PIL import Image

    x, _ = digits(0)
    pool, out = folder_pool(tmp_path / "pool", x), tmp_path / "p"
    assert main(args(pool, out)) == 0
    shutil.copy(pool / "mnist-00003.png", pool / "zz-new.png")
    Image.fromarray(255 - x[5]).save(pool / "mnist-00005.png")
    capsys.readouterr()
    assert main(args(pool, out)) != 0
    err = capsys.readouterr().err
    assert "1 image(s) added (zz-new.png)" in err and "1 image(s) changed (mnist-00005.png)" in err
