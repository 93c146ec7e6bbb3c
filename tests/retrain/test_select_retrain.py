"""Test selection and retraining on real MNIST: a LeNet-5 trained on the first K samples, a selection from the rest,
adversarial fine-tuning on K + selected, and clear errors for bad inputs."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch

from robustal.cli import main

K = 800  # original training data: the first K training samples
N_TRAIN = 2400


@pytest.fixture(scope="module")
def small_npz(mnist_npz, tmp_path_factory):
    """2 400 train / 600 test real MNIST images (300 validation, 300 test) from the README's npz."""
    d = np.load(mnist_npz)
    path = tmp_path_factory.mktemp("mnist-small") / "mnist-small.npz"
    np.savez(path, x_train=d["x_train"][:N_TRAIN], y_train=d["y_train"][:N_TRAIN], x_test=d["x_test"][:600],
             y_test=d["y_test"][:600])
    return path


@pytest.fixture(scope="module")
def checkpoint(small_npz, tmp_path_factory):
    """LeNet-5, standard training for 2 epochs on the first K samples (accurate, not robust)."""
    out = tmp_path_factory.mktemp("ckpt") / "lenet.pt"
    code = main(["train", "--dataset", str(small_npz), "--training", "standard", "--epochs", "2", "--train-size",
                 str(K), "--eval-steps", "0", "--save", str(out), "--no-progress"])
    assert code == 0
    return out


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("metric, has_scores", [("entropy", True), ("random", False), ("k-center", None),
                                               ("robust-boundary", None)])
def test_select_writes_ranked_csv(checkpoint, small_npz, tmp_path, metric, has_scores):
    out = tmp_path / "picks.csv"
    assert main(["select", "--model", str(checkpoint), "--data", str(small_npz), "--metric", metric, "--n", "200",
                 "--out", str(out), "--no-progress"]) == 0
    rows = _read(out)
    assert list(rows[0]) == ["rank", "index", "score", "label"]  # an npz has no files; label: for a person
    assert all(r["label"] == "" for r in rows)
    assert [int(r["rank"]) for r in rows] == list(range(1, 201))
    idx = [int(r["index"]) for r in rows]
    assert len(set(idx)) == 200 and all(K <= i < N_TRAIN for i in idx)  # only from the new unlabeled set
    if has_scores is True:
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)  # entropy: highest first
    elif has_scores is False:
        assert all(r["score"] == "" for r in rows)


def test_select_defaults_to_checkpoint_dataset_and_is_reproducible(checkpoint, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for out in (a, b):
        assert main(["select", "--model", str(checkpoint), "--metric", "dre", "--n", "50", "--out", str(out)]) == 0
    assert a.read_text() == b.read_text()


def test_retrain_with_pgd_raises_robust_accuracy(checkpoint, small_npz, tmp_path, capsys):
    picks = tmp_path / "picks.csv"
    assert main(["select", "--model", str(checkpoint), "--data", str(small_npz), "--metric", "dre", "--n", "300",
                 "--out", str(picks)]) == 0
    saved = tmp_path / "retrained.pt"
    capsys.readouterr()
    code = main(["retrain", "--model", str(checkpoint), "--data", str(small_npz), "--selected", str(picks),
                 "--training", "pgd", "--epochs", "2", "--epsilon-warmup", "1", "--attack-steps", "5",
                 "--eval-steps", "10", "--save", str(saved), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    clean = re.search(r"clean accuracy:\s+before ([\d.]+), after ([\d.]+)", out)
    robust = re.search(r"robust accuracy: before ([\d.]+), after ([\d.]+)", out)
    assert clean and robust, out
    before, after = float(robust.group(1)), float(robust.group(2))
    assert after > before + 0.05, out
    ckpt = torch.load(saved, weights_only=True)
    assert ckpt["train_size"] == K and len(ckpt["selected"]) == 300
    # a second round ranks only what the retrained model has not seen: neither the first K nor the 300 picks
    again = tmp_path / "again.csv"
    n_left = N_TRAIN - K - 300
    assert main(["select", "--model", str(saved), "--metric", "random", "--n", str(n_left), "--out", str(again)]) == 0
    second = {int(r["index"]) for r in _read(again)}
    assert len(second) == n_left and min(second) >= K and not second & set(ckpt["selected"])


def _expect_error(capsys, argv, pattern):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_bad_inputs(checkpoint, small_npz, tmp_path, capsys):
    picks = tmp_path / "picks.csv"
    common = ["--data", str(small_npz), "--epochs", "1", "--eval-steps", "0", "--no-progress"]
    # missing checkpoint
    _expect_error(capsys, ["select", "--model", str(tmp_path / "nope.pt"), "--data", str(small_npz), "--n", "5",
                           "--out", str(picks)], r"nope\.pt not found")
    # corrupt checkpoint
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(checkpoint.read_bytes()[:500])
    _expect_error(capsys, ["select", "--model", str(bad), "--n", "5", "--out", str(picks)],
                  r"cannot be read as a robustal model checkpoint")
    # a torch file that is not a robustal checkpoint
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    _expect_error(capsys, ["select", "--model", str(other), "--data", str(small_npz), "--n", "5", "--out", str(picks)],
                  r"not a robustal model checkpoint")
    # a robustal checkpoint whose weights do not fit its architecture, or images of another shape
    wrong = tmp_path / "wrong.pt"
    torch.save({**torch.load(checkpoint, weights_only=True), "model_name": "small-cnn"}, wrong)
    _expect_error(capsys, ["select", "--model", str(wrong), "--n", "5", "--out", str(picks)],
                  r"weights do not fit a 'small-cnn' model")
    _expect_error(capsys, ["select", "--model", str(checkpoint), "--data", "digits", "--n", "5", "--out", str(picks)],
                  r"is for images \(1, 32, 32\)")
    # unknown metric
    _expect_error(capsys, ["select", "--model", str(checkpoint), "--metric", "entropyy", "--n", "5", "--out",
                           str(picks)], r"Unknown acquisition function 'entropyy'.*Did you mean 'entropy'")
    assert not picks.exists()
    # out-of-range indices: one from the original training data, one past the end
    for index in (3, N_TRAIN + 7):
        picks.write_text(f"rank,index,score\n1,{K + 1},\n2,{index},\n")
        _expect_error(capsys, ["retrain", "--model", str(checkpoint), "--selected", str(picks), *common],
                      rf"outside the new unlabeled set \[{K}, {N_TRAIN}\)")
    picks.write_text(f"rank,index,score\n1,{K + 1},\n2,{K + 1},\n")
    _expect_error(capsys, ["retrain", "--model", str(checkpoint), "--selected", str(picks), *common], r"repeat")
    _expect_error(capsys, ["retrain", "--model", str(checkpoint), "--selected", str(tmp_path / "none.csv"), *common],
                  r"none\.csv not found")
    # a --train-size other than the recorded one would rank samples the model has seen (or hide unseen ones)
    for size in (K - 300, N_TRAIN):
        _expect_error(capsys, ["select", "--model", str(checkpoint), "--train-size", str(size), "--n", "5", "--out",
                               str(picks)], rf"--train-size {size}: .*trained on the first {K} training samples"
                                            r".*Leave --train-size out")
    # the recorded size itself is accepted
    assert main(["select", "--model", str(checkpoint), "--train-size", str(K), "--n", "5", "--out", str(picks),
                 "--metric", "random"]) == 0


def test_retrain_study(checkpoint, small_npz, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["retrain-study", "--model", str(checkpoint), "--data", str(small_npz), "--metrics", "entropy,random",
            "--sizes", "50", "--seeds", "0,1", "--out", str(out), "--training", "standard", "--epochs", "1",
            "--eval-steps", "0", "--no-progress"]
    assert main(argv) == 0
    rows = _read(out / "results.csv")
    assert sorted((r["metric"], r["seed"]) for r in rows) == [("entropy", "0"), ("entropy", "1"), ("random", "0"),
                                                               ("random", "1")]
    table = (out / "results.md").read_text()
    assert "| entropy" in table and "±" in table
    capsys.readouterr()
    assert main(argv) == 0  # resumes: nothing left to do
    assert len(_read(out / "results.csv")) == 4


def test_api_fine_tuning_does_not_warm_up_by_default(checkpoint, small_npz, monkeypatch):
    from robustal.data import load_dataset
    from robustal.engine.training import TrainConfig
    from robustal.loop.checkpoint import load_checkpoint
    from robustal.studies import retrain as retrain_module

    seen = []
    monkeypatch.setattr(retrain_module, "fit", lambda *a, **k: seen.append(a[3].epsilon_warmup))
    data = load_dataset(str(small_npz))
    model = load_checkpoint(checkpoint).build(data)
    cfg = TrainConfig(mode="pgd", epochs=1)  # epsilon_warmup=2 by default: for models trained from scratch
    retrain_module.retrain(model, data, K, torch.arange(K, K + 10), cfg)
    retrain_module.retrain(model, data, K, torch.arange(K, K + 10), cfg, warmup=True)
    assert seen == [0, 2]


def test_retrain_study_measures_before_and_after_with_the_same_seed(checkpoint, small_npz, tmp_path):
    from robustal.data import load_dataset
    from robustal.engine.evaluation import evaluate, paper_attack
    from robustal.engine.training import TrainConfig
    from robustal.loop.checkpoint import load_checkpoint
    from robustal.studies.retrain import retrain_study

    data = load_dataset(str(small_npz))
    ckpt = load_checkpoint(checkpoint)
    attack = paper_attack(data, 5)
    rows = retrain_study(ckpt, data, ["random"], [20], [3, 4], TrainConfig(mode="standard", epochs=1), attack,
                         tmp_path, train_size=K)
    for row in rows:
        before = evaluate(ckpt.build(data), data.splits().test, attack, seed=row["seed"])
        assert row["robust_before"] == before.robust


def test_retrain_study_pairs_each_metric_with_random_by_seed():
    from robustal.studies.retrain import paired_table, study_table

    rows = []
    for seed in range(5):
        for metric, clean, robust in (("random", 0.80, 0.40), ("dre", 0.81, 0.40 + 0.01 * (seed + 1)),
                                      ("entropy", 0.79 - 0.01 * seed, 0.39)):
            rows.append({"metric": metric, "size": 100, "seed": seed, "clean_before": 0.7, "robust_before": 0.3,
                         "clean_after": clean, "robust_after": robust, "best_epoch": 5, "seconds": 1.0})
    table = paired_table(rows, ["random", "dre", "entropy"])
    lines = [ln for ln in table.splitlines() if ln.startswith("| dre") or ln.startswith("| entropy")]
    dre = [c.strip() for c in lines[0].strip("|").split("|")]
    # dre beats random in all 5 seeds by 0.01..0.05 (mean 0.03): the exact two-sided p of 5 of 5 is 2 / 2^5.
    assert dre[:3] == ["dre", "100", "5"] and dre[6] == "+0.0300" and dre[7] == "5 / 0" and dre[8] == "0.0625"
    assert dre[3] == "+0.0100" and dre[4] == "5 / 0"
    entropy = [c.strip() for c in lines[1].strip("|").split("|")]
    assert entropy[3] == "-0.0300" and entropy[4] == "0 / 5" and entropy[7] == "0 / 5"  # clean -0.01..-0.05
    assert "paired by seed" in study_table(rows, ["random", "dre", "entropy"])
    assert paired_table([r for r in rows if r["metric"] != "random"], ["dre"]) == ""
    versus = paired_table(rows, ["random", "dre", "entropy"], against="dre")
    cells = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")] for ln in versus.splitlines()
             if ln.startswith("| random") or ln.startswith("| entropy")}
    assert cells["random"][6:9] == ["-0.0300", "0 / 5", "0.0625"]  # the same pairs as dre vs random, sign flipped
    assert cells["entropy"][3:5] == ["-0.0400", "0 / 5"] and "| dre " not in versus  # (0.79 - 0.01 s) - 0.81
    assert "Each metric vs dre, paired by seed" in study_table(rows, ["random", "dre", "entropy"])
    flipped = paired_table(rows, ["random", "dre", "entropy"], against="dre", against_first=True)
    row = next(ln for ln in flipped.splitlines() if ln.startswith("| entropy"))
    assert [c.strip() for c in row.strip("|").split("|")][3:5] == ["+0.0400", "5 / 0"]  # dre - entropy, dre ahead
    assert flipped in study_table(rows, ["random", "dre", "entropy"])
