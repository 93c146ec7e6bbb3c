"""scripts/reproduce_check.py: a results folder's runs against a committed stages.csv, stage by stage."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from robustal.storage.schema import StageRecord
from robustal.storage.store import Store


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("reproduce_check")


def _folder(folder: Path, runs: dict[str, list[tuple[float, float]]]) -> Path:
    store = Store(folder)
    for name, stages in runs.items():
        store.start_run(name, {}, 0, device="cpu")
        for i, (clean, robust) in enumerate(stages):
            store.add_stage(name, StageRecord(stage=i, labeled=100 * (i + 1), clean=clean, robust=robust),
                            torch.tensor([i]), None)
    return folder


def _stages_csv(path: Path, runs: dict[str, list[tuple[float, float]]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "stage", "labeled", "clean", "robust"])
        for name, stages in runs.items():
            for i, (clean, robust) in enumerate(stages):
                w.writerow([name, i, 100 * (i + 1), clean, robust])
    return path


def test_identical_and_drifting_runs_are_told_apart(script, tmp_path, capsys):
    committed = {"a-s0": [(0.5, 0.2), (0.7, 0.3)], "b-s0": [(0.5, 0.2), (0.7, 0.3)], "only-committed": [(0.1, 0.1)]}
    folder = _folder(tmp_path / "runs", {"a-s0": [(0.5, 0.2), (0.7, 0.3)], "b-s0": [(0.5, 0.2), (0.75, 0.28)],
                                         "only-here": [(0.9, 0.9)]})
    assert script.main([str(folder), str(_stages_csv(tmp_path / "stages.csv", committed))]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert "identical" in rows["a-s0"] and "from stage 1" in rows["b-s0"] and "-0.020" in rows["b-s0"]
    assert "only-here" not in out and "only-committed" not in out
    assert "1 of 2 runs identical" in out


def test_unfinished_run_is_compared_on_the_stages_it_has(script, tmp_path, capsys):
    committed = {"a-s0": [(0.5, 0.2), (0.7, 0.3), (0.8, 0.4)]}
    folder = _folder(tmp_path / "runs", {"a-s0": [(0.5, 0.2), (0.7, 0.3)]})
    assert script.main([str(folder), str(_stages_csv(tmp_path / "stages.csv", committed))]) == 0
    assert "| a-s0 | 2 | identical |" in capsys.readouterr().out


def test_bad_input_is_named(script, tmp_path, capsys):
    folder = _folder(tmp_path / "runs", {"a-s0": [(0.5, 0.2)]})
    stages = _stages_csv(tmp_path / "stages.csv", {"other-s0": [(0.5, 0.2)]})
    assert script.main([str(folder), str(stages)]) == 1
    assert "no run of the folder is in the stages file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="holds no results.db"):
        script.main([str(tmp_path / "empty"), str(stages)])
    with pytest.raises(SystemExit, match="does not exist"):
        script.main([str(folder), str(tmp_path / "missing.csv")])
    (tmp_path / "attacks.csv").write_text("run,n,clean,pgd\nx,200,0.9,0.5\n")
    with pytest.raises(SystemExit, match="no column labeled, robust"):
        script.main([str(folder), str(tmp_path / "attacks.csv")])
