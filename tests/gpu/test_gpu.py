"""The GPU check: every command on a CUDA device -- training in fp32 and bf16, all twelve acquisition functions,
runs and studies, selection, retraining, evaluation and AutoAttack. Skipped (with the reason) without a GPU; run
it on one with ``scripts/gpu-check``."""

from __future__ import annotations

import json

import pytest
import torch

from robustal.cli import main

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device (run scripts/gpu-check on a GPU machine)")]

FAST = ["--epochs", "2", "--attack-steps", "3", "--eval-steps", "10", "--no-progress", "--device", "cuda"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "cnn.pt"
    assert main(["train", "--dataset", "digits", "--training", "pgd", "--train-size", "700", "--save", str(path),
                 *FAST]) == 0
    return path


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_on_cuda(precision, capsys):
    assert main(["train", "--dataset", "digits", "--training", "pgd", "--precision", precision, *FAST,
                 "--epochs", "4"]) == 0
    out = capsys.readouterr().out
    clean = float(out.split("clean accuracy: ")[1].split()[0])
    robust = float(out.split("robust accuracy: ")[1].split()[0])
    assert clean > 0.4 and 0 < robust <= clean


def test_every_acquisition_function_selects_on_cuda(checkpoint, tmp_path):
    from robustal.acquisition import list_acquisitions

    for metric in list_acquisitions():
        out = tmp_path / f"{metric}.csv"
        assert main(["select", "--model", str(checkpoint), "--metric", metric, "--n", "20", "--out", str(out),
                     "--device", "cuda", "--no-progress"]) == 0, metric
        assert len(out.read_text().splitlines()) == 21, metric


def test_run_every_function_and_a_study_on_cuda(tmp_path):
    from robustal.acquisition import list_acquisitions

    for acq in list_acquisitions():
        assert main(["run", "--dataset", "digits", "--acquisition", acq, "--initial", "50", "--per-stage", "50",
                     "--budget", "100", "--min-steps", "10", *FAST, "--out", str(tmp_path / "runs"),
                     "--name", acq]) == 0, acq
    study = tmp_path / "s.toml"
    study.write_text('[grid]\ndatasets = ["digits"]\ntraining = ["pgd", "trades"]\nacquisitions = ["random", "bald"]\n'
                     'seeds = [0]\n[loop]\ninitial = 50\nper_stage = 50\nbudget = 100\neval_steps = 5\n'
                     '[train]\nepochs = 1\nattack_steps = 2\nprecision = "bf16"\n')
    assert main(["study", str(study), "--out", str(tmp_path / "study"), "--workers", "2", "--device", "cuda",
                 "--no-progress"]) == 0


def test_retrain_and_evaluate_on_cuda(checkpoint, tmp_path, capsys):
    picks = tmp_path / "picks.csv"
    assert main(["select", "--model", str(checkpoint), "--metric", "dre", "--n", "100", "--out", str(picks),
                 "--device", "cuda"]) == 0
    assert main(["retrain", "--model", str(checkpoint), "--selected", str(picks), "--training", "pgd",
                 "--precision", "bf16", *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(checkpoint), "--eval-steps", "20", "--device", "cuda", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["robust"] <= result["clean"] <= 1


def test_autoattack_on_cuda(checkpoint, capsys):
    pytest.importorskip("pyautoattack", reason="pip install 'robustal[autoattack]'")
    assert main(["evaluate", "--model", str(checkpoint), "--attack", "autoattack", "--n", "100", "--device", "cuda",
                 "--json"]) == 0
    aa = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--model", str(checkpoint), "--n", "100", "--eval-steps", "50", "--device", "cuda",
                 "--json"]) == 0
    pgd = json.loads(capsys.readouterr().out)
    assert aa["clean"] == pgd["clean"] and aa["robust"] <= pgd["robust"] + 0.02  # AutoAttack is the stronger one
