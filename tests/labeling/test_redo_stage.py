"""A labeling project whose stage checkpoint is lost or damaged is told how to go on without losing a label: restore
the file, or `--redo-stage N`, which trains that stage again on the same labels (issue 28.5)."""

from __future__ import annotations

import csv
import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from robustal.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::robustal.errors.ChanceLevelWarning")


def pool(folder: Path) -> tuple[Path, dict[str, int]]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    folder.mkdir()
    truth = {}
    for i in range(40):
        Image.fromarray(np.round(d.images[i] * (255 / 16)).astype(np.uint8)).save(folder / f"d{i:03d}.png")
        truth[f"d{i:03d}.png"] = int(d.target[i])
    return folder, truth


def args(pool_dir: Path, out: Path, *extra) -> list[str]:
    return ["label", "--pool", str(pool_dir), "--classes", ",".join(map(str, range(10))), "--image-size", "8",
            "--channels", "1", "--epsilon", "0.2", "--heldout-size", "10", "--initial", "10", "--per-stage", "10",
            "--budget", "30", "--epochs", "1", "--min-steps", "0", "--eval-steps", "0", "--no-progress",
            "--out", str(out), *extra]


def fill(request: Path, truth: dict[str, int]) -> None:
    rows = list(csv.DictReader(request.open(newline="")))
    with request.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows({**r, "label": truth[r["id"]]} for r in rows)


def rows(out: Path, table: str) -> list[tuple]:
    con = sqlite3.connect(out / "results.db")
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        con.close()


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path, dict[str, int]]:
    """A project with stage 0 trained and stage 1 awaited."""
    pool_dir, truth = pool(tmp_path / "pool")
    out = tmp_path / "project"
    assert main(args(pool_dir, out)) == 0
    fill(out / "requests" / "heldout.csv", truth)
    assert main(args(pool_dir, out)) == 0
    fill(out / "requests" / "stage-000.csv", truth)
    assert main(args(pool_dir, out)) == 0
    assert (out / "requests" / "stage-001.csv").is_file()
    return pool_dir, out, truth


def test_a_damaged_stage_checkpoint_is_told_to_restore_it_or_redo_the_stage(project, capsys):
    pool_dir, out, _ = project
    ckpt = out / "checkpoints" / "label" / "stage-000.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    labels = rows(out, "labels")
    capsys.readouterr()
    assert main(args(pool_dir, out)) != 0
    err = capsys.readouterr().err
    assert "stage-000.pt" in err and "--redo-stage 0" in err and "labels are safe" in err
    assert "delete" not in err.lower() and "remove" not in err.lower()
    assert rows(out, "labels") == labels


def test_redo_stage_trains_the_last_stage_again_and_asks_nothing_again(project, capsys):
    pool_dir, out, _ = project
    ckpt = out / "checkpoints" / "label" / "stage-000.pt"
    ckpt.unlink()
    labels, selections = rows(out, "labels"), rows(out, "selections")
    request = hashlib.sha256((out / "requests" / "stage-001.csv").read_bytes()).hexdigest()
    assert main(args(pool_dir, out, "--redo-stage", "0")) == 0
    assert "waiting for 10 labels" in capsys.readouterr().out
    assert ckpt.is_file() and rows(out, "labels") == labels and rows(out, "selections") == selections
    assert [r[1] for r in rows(out, "stages")] == [0]
    assert hashlib.sha256((out / "requests" / "stage-001.csv").read_bytes()).hexdigest() == request
    assert main(args(pool_dir, out)) == 0  # the project goes on from the new stage-0 model


@pytest.mark.parametrize("stage, message", [(1, "only the last finished stage, 0"), (0, None)])
def test_redo_stage_of_another_stage_is_refused_before_anything_is_written(project, stage, message, capsys,
                                                                           tmp_path):
    pool_dir, out, _ = project
    if message is None:  # a new project: no stage to redo
        out, message = tmp_path / "new", "nothing to redo"
        assert main(args(pool_dir, out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".robustal.lock"}
    capsys.readouterr()
    assert main(args(pool_dir, out, "--redo-stage", str(stage))) != 0
    assert message in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".robustal.lock"} == before
