"""scripts/reference_plateau.py: the first epochs of its longer run are the study's all-label run itself."""

from __future__ import annotations

import json

import pytest

from robustal.studies.study import Study
from robustal.studies.study_run import run_study
from study_files import grid_toml, settings_toml, study_toml


def plateau_study(min_steps: int) -> str:
    """A pgd study whose one grid trains on every label (300) for two epochs."""
    grid = grid_toml(("all-labels",), ("pgd",), (1,), several=True, loop={"initial": 300, "budget": 300},
                     train={"epochs": 2, "validate_last": 2, "min_steps": min_steps})
    settings = settings_toml({"initial": 100, "per_stage": 100, "budget": 300, "eval_steps": 3},
                             {"batch_size": 64, "attack_steps": 2, "epsilon_warmup": 1})
    return study_toml(grid, name="plateau", settings=settings, extra='[acquisition.all-labels]\nfunction = "random"\n')


@pytest.fixture(scope="module")
def plateau(load_script):
    return load_script("reference_plateau")


def test_the_longer_run_starts_as_the_stored_run(plateau, tmp_path):
    study_file = tmp_path / "plateau.toml"
    study_file.write_text(plateau_study(0))
    run_study(Study.load(study_file), tmp_path / "out")
    out = tmp_path / "plateau.jsonl"
    assert plateau.main([str(study_file), "--training", "pgd", "--seed", "1", "--epochs", "4",
                         "--store", str(tmp_path / "out"), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["epoch"] for row in lines[:-1]] == [1, 2, 3, 4]
    summary = lines[-1]
    assert summary["reproduces_stored"] is True
    assert summary["kept_within_study_epochs"] in (1, 2)
    assert summary["test_robust_within"] == summary["stored"]["robust"]


def test_refuses_what_it_cannot_reproduce(plateau, tmp_path):
    study_file = tmp_path / "plateau.toml"
    study_file.write_text(plateau_study(100))  # 5 batches x 2 epochs < 100 steps: epochs would differ
    with pytest.raises(SystemExit, match="min_steps"):
        plateau.main([str(study_file), "--epochs", "4", "--seed", "1", "--out", str(tmp_path / "p.jsonl")])
    with pytest.raises(SystemExit, match="exactly one all-label run"):
        plateau.main([str(study_file), "--epochs", "4", "--seed", "7", "--out", str(tmp_path / "p.jsonl")])
    study_file.write_text(plateau_study(0).replace("loop = { initial = 300, budget = 300 }", ""))
    with pytest.raises(SystemExit, match="not an all-label run"):  # three stages of 100
        plateau.main([str(study_file), "--epochs", "4", "--seed", "1", "--out", str(tmp_path / "p.jsonl")])
    study_file.write_text(plateau_study(0))
    with pytest.raises(SystemExit, match="must exceed"):
        plateau.main([str(study_file), "--epochs", "2", "--seed", "1", "--out", str(tmp_path / "p.jsonl")])
