"""Every stored model is evaluable (issue 27.1): a run's stage checkpoint (in its results folder, as a copy such as
MLflow's, and as an earlier robustal wrote it), ``evaluate DIR --run NAME``, ``export``; by default ``evaluate``
reproduces the run's stored clean and robust accuracy (the run's attack and seed stream); ``select`` and
``retrain`` take a stage checkpoint and pick outside its labeled set."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from robustal.cli import main
from robustal.storage.outputs import atomic_torch_save, safe_torch_load
from robustal.storage.store import Store

RUN = "tiny"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A two-stage PGD run on digits (one epoch a stage, PGD-3 evaluation)."""
    out = tmp_path_factory.mktemp("stored") / "runs"
    code = main(["run", "--dataset", "digits", "--training", "pgd", "--initial", "60", "--per-stage", "40",
                 "--budget", "100", "--epochs", "1", "--min-steps", "0", "--eval-steps", "3", "--no-progress",
                 "--out", str(out), "--name", RUN])
    assert code == 0
    return out


def _stored(out):
    return Store(out, create=False).stages(RUN)[-1]


def _evaluate(capsys, *argv):
    capsys.readouterr()
    assert main(["evaluate", *argv, "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_a_run_by_name_reproduces_its_stored_accuracy(results, capsys):
    last = _stored(results)
    got = _evaluate(capsys, str(results), "--run", RUN)
    assert (got["clean"], got["robust"]) == (last.clean, last.robust)
    assert got["stored"] == {"run": RUN, "stage": last.stage, "clean": last.clean, "robust": last.robust}
    assert got["attack"]["steps"] == 3  # the run's own attack, not evaluate's PGD-50
    # the stage given explicitly, and DIR alone (its only run), are the same model
    assert _evaluate(capsys, str(results), "--run", RUN, "--stage", str(last.stage))["robust"] == last.robust
    assert _evaluate(capsys, str(results))["robust"] == last.robust


def test_a_stage_checkpoint_in_its_folder_and_a_copy_elsewhere_reproduce_it(results, tmp_path, capsys):
    last = _stored(results)
    path = Store(results, create=False).checkpoint_path(RUN, last.stage)
    got = _evaluate(capsys, "--model", str(path))
    assert (got["clean"], got["robust"]) == (last.clean, last.robust)
    copy = tmp_path / "mlartifacts" / "1" / "abc" / "artifacts" / "checkpoint" / path.name  # as MLflow keeps it
    copy.parent.mkdir(parents=True)
    shutil.copy(path, copy)
    got = _evaluate(capsys, "--model", str(copy))
    assert (got["clean"], got["robust"]) == (last.clean, last.robust)


def test_an_earlier_robustals_stage_checkpoint_is_read_with_its_store(results, tmp_path, capsys):
    """robustal 0.3 stored only weights, optimizer and labeled set: the store describes the model."""
    out = tmp_path / "old"
    shutil.copytree(results, out)
    last = _stored(out)
    path = Store(out, create=False).checkpoint_path(RUN, last.stage)
    state = safe_torch_load(path)
    atomic_torch_save({k: state[k] for k in ("model", "optimizer", "labeled", "stage")}, path)
    got = _evaluate(capsys, "--model", str(path))
    assert (got["clean"], got["robust"]) == (last.clean, last.robust)
    shutil.copy(path, tmp_path / "alone.pt")  # away from its folder: refused with the command that works
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "alone.pt")]) == 2
    err = capsys.readouterr().err
    assert "before robustal 0.4" in err and "robustal evaluate DIR --run NAME" in err


def test_export_writes_a_standalone_checkpoint_that_reproduces_the_run(results, tmp_path, capsys):
    last = _stored(results)
    out = tmp_path / "final.pt"
    assert main(["export", str(results), "--run", RUN, "--out", str(out)]) == 0
    state = safe_torch_load(out)
    assert not {"optimizer", "labeled", "stage"} & set(state)
    assert len(state["selected"]) == last.labeled and state["model_name"] == "small-cnn"
    got = _evaluate(capsys, "--model", str(out))
    assert (got["clean"], got["robust"]) == (last.clean, last.robust)
    # another attack or seed is the person's choice, and then nothing claims to reproduce the run
    other = _evaluate(capsys, "--model", str(out), "--eval-steps", "2", "--seed", "1")
    assert other["stored"] is None and other["attack"]["steps"] == 2


def test_select_from_a_stage_checkpoint_picks_outside_its_labeled_set(results, tmp_path):
    path = Store(results, create=False).checkpoint_path(RUN, _stored(results).stage)
    labeled = set(torch.as_tensor(safe_torch_load(path)["labeled"]).tolist())
    picks = tmp_path / "picks.csv"
    assert main(["select", "--model", str(path), "--metric", "entropy", "--n", "20", "--out", str(picks)]) == 0
    with open(picks, newline="") as f:
        chosen = {int(r["index"]) for r in csv.DictReader(f)}
    assert len(chosen) == 20 and not chosen & labeled


@pytest.mark.parametrize("argv, message", [
    (["--run", "tinny"], "did you mean 'tiny'"),
    (["--run", RUN, "--stage", "0"], "keeps only its last stage's checkpoint (stage 1)"),
    (["--run", RUN, "--stage", "7"], "has stages 0, 1"),
])
def test_a_wrong_run_or_stage_names_the_right_ones(results, capsys, argv, message):
    assert main(["evaluate", str(results), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_no_model_gets_a_hint_naming_the_right_commands(tmp_path, capsys):
    path = tmp_path / "x.pt"
    atomic_torch_save({"weights": torch.zeros(2)}, path)
    assert main(["evaluate", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Save one with robustal train --save" not in err
    assert "robustal export" in err and "stage-NNN.pt" in err
