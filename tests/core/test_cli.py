"""The command line: help, train output, and a clear message and non-zero exit for each kind of bad input."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from robustal.cli import build_parser, main


def run_cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robustal.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def test_help_lists_commands_and_every_train_option_is_explained(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "run", "demo"):
        assert command in out
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"


def test_train_prints_clean_and_robust_accuracy(capsys):
    code = main(["train", "--dataset", "digits", "--training", "standard", "--epochs", "2", "--eval-steps", "5",
                 "--no-progress"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    clean = [ln for ln in lines if ln.startswith("clean accuracy:")]
    robust = [ln for ln in lines if ln.startswith("robust accuracy:")]
    assert len(clean) == 1 and len(robust) == 1
    assert 0.5 < float(clean[0].split()[2]) <= 1
    assert 0 <= float(robust[0].split()[2]) <= float(clean[0].split()[2])


def test_train_saves_a_checkpoint_loadable_with_weights_only(tmp_path, capsys):
    import torch

    path = tmp_path / "m.pt"
    assert main(["train", "--epochs", "1", "--training", "standard", "--eval-steps", "0", "--no-progress",
                 "--save", str(path)]) == 0
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["model_name"] == "small-cnn" and "model" in ckpt


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def good_arrays(shape=(20, 8, 8)):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 255, shape, dtype=np.uint8), "y_train": rng.integers(0, 3, shape[0]),
            "x_test": rng.integers(0, 255, (10, *shape[1:]), dtype=np.uint8), "y_test": rng.integers(0, 3, 10)}


def bad_input_cases(tmp_path):
    arrays = good_arrays()
    missing = {k: v for k, v in arrays.items() if k != "y_test"}
    wrong_shape = {**arrays, "x_train": arrays["x_train"].reshape(20, 64)}
    mismatched = {**arrays, "y_train": arrays["y_train"][:5]}
    return {
        "unknown dataset": (["--dataset", "mnistt"], "Unknown dataset 'mnistt'. Did you mean 'mnist'?"),
        "unknown model": (["--model", "resnet-18"], "Unknown model 'resnet-18'. Did you mean 'resnet18'?"),
        "npz missing arrays": (["--dataset", _npz(tmp_path / "m.npz", **missing)], "lacks y_test"),
        "wrong image shapes": (["--dataset", _npz(tmp_path / "s.npz", **wrong_shape)], "must hold images of shape"),
        "labels do not match images": (["--dataset", _npz(tmp_path / "l.npz", **mismatched)], "vector of 20 labels"),
        "missing file": (["--dataset", str(tmp_path / "nope.npz")], "does not exist"),
        "model too big for images": (["--model", "lenet5"], "lenet5 needs images of at least 16"),
        "negative epsilon": (["--epsilon", "-1"], "argument --epsilon: must be a number in [0, 1]"),
        "ema of 1": (["--ema", "1"], "argument --ema: must be a number in [0, 1)"),
    }


@pytest.mark.parametrize("case", ["unknown dataset", "unknown model", "npz missing arrays", "wrong image shapes",
                                  "labels do not match images", "missing file", "model too big for images",
                                  "negative epsilon", "ema of 1"])
def test_bad_input_gives_a_clear_message_and_nonzero_exit(case, tmp_path, capsys):
    args, message = bad_input_cases(tmp_path)[case]
    code = main(["train", "--epochs", "1", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code != 0
    assert message in err
    assert "Traceback" not in err


def _serve_dir_as_mnist(tmp_path, monkeypatch, corrupt: bool):
    """A data dir holding MNIST files whose checksums (patched to match) are fine but whose content may be corrupt."""
    import hashlib

    from robustal.data import builtin

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    files = {}
    for name, magic, shape in [("train-images-idx3-ubyte.gz", 2051, (30, 28, 28)),
                               ("train-labels-idx1-ubyte.gz", 2049, (30,)),
                               ("t10k-images-idx3-ubyte.gz", 2051, (10, 28, 28)),
                               ("t10k-labels-idx1-ubyte.gz", 2049, (10,))]:
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
        body = bytes(int(np.prod(shape)))
        raw = header + (body[: len(body) // 2] if corrupt and "t10k-images" in name else body)
        data = gzip.compress(raw)
        (folder / name).write_bytes(data)
        files[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setitem(builtin.FILES, "mnist", files)
    monkeypatch.setitem(builtin.MIRRORS, "mnist", ("http://127.0.0.1:9/",))
    return tmp_path / "data"


def test_corrupted_idx_file_is_named_in_the_error(tmp_path, monkeypatch, capsys):
    data_dir = _serve_dir_as_mnist(tmp_path, monkeypatch, corrupt=True)
    code = main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "t10k-images-idx3-ubyte.gz" in err and "Traceback" not in err


def test_checksum_mismatch_is_reported(tmp_path, monkeypatch, capsys):
    data_dir = _serve_dir_as_mnist(tmp_path, monkeypatch, corrupt=False)
    from robustal.data import builtin

    files = dict(builtin.FILES["mnist"])
    files["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    monkeypatch.setitem(builtin.FILES, "mnist", files)
    code = main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "t10k-labels-idx1-ubyte.gz" in err and "checksum" in err.lower()


def test_unwritable_data_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", "--dataset", "mnist", "--data-dir", str(blocker / "cache"), "--epochs", "1",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and str(blocker) in err and "Traceback" not in err


def test_run_errors_exit_nonzero_from_the_shell():
    result = run_cli("run", "--dataset", "digits", "--budget", "100000", "--no-progress")
    assert result.returncode != 0
    assert "larger than the pool" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("run", "--dataset", "digits", "--per-stage", "0", "--no-progress")
    assert result.returncode != 0 and "argument --per-stage: must be an integer >= 1; got '0'" in result.stderr
    result = run_cli("run", "--dataset", "digits", "--acquisition", "bald2", "--no-progress")
    assert result.returncode != 0 and "Unknown acquisition function 'bald2'" in result.stderr


def test_run_prints_a_final_table(tmp_path):
    result = run_cli("run", "--dataset", "digits", "--acquisition", "dre", "--initial", "40", "--per-stage", "40",
                     "--budget", "80", "--epochs", "1", "--eval-steps", "2", "--attack-steps", "2", "--min-steps", "0",
                     "--no-progress",
                     "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "| stage | labeled | clean" in result.stdout
    assert (tmp_path / "results.db").is_file()


@pytest.mark.slow
def test_the_demo_tells_its_story(tmp_path, capsys):
    """The default demo: standard training gives accurate but fragile models, PGD training robust ones, for every
    function (the README's conclusion), read from the stored runs."""
    from robustal.cli.run import DEMO_FUNCTIONS
    from robustal.storage.store import Store

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress"]) == 0
    assert "PGD training at every stage gives robust ones" in capsys.readouterr().out
    store = Store(out)
    final = {(r["config"]["loop"]["train"]["mode"], r["config"]["loop"]["acquisition"]):
             store.stages(r["name"])[-1] for r in store.runs()}
    assert len(final) == 2 * len(DEMO_FUNCTIONS)
    for acq in DEMO_FUNCTIONS:
        standard, pgd = final["standard", acq], final["pgd", acq]
        assert standard.clean > 0.85 and pgd.clean > 0.85
        assert standard.robust < 0.1, f"standard training with {acq} is not fragile: {standard.robust}"
        assert pgd.robust > 0.3 and pgd.robust > standard.robust + 0.25, f"PGD training with {acq}: {pgd.robust}"
        assert not any(s.at_chance for s in store.stages(f"digits-pgd-{acq}-s0"))


def test_one_version_everywhere_and_an_mit_license(capsys):
    """Issue 27.7: ``robustal --version`` said 0.2.0 while the README described 0.3, and there was no LICENSE."""
    import tomllib
    from pathlib import Path

    import robustal

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["version"] == robustal.__version__ == "0.4.0"
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"robustal {project['version']}"
    license_text = (root / "LICENSE").read_text()
    assert project["license"] == "MIT" and license_text.startswith("MIT License")
    assert "Copyright (c) 2026 the robustal authors" in license_text


def test_a_run_is_named_after_its_settings_and_an_earlier_robustals_run_resumes(tmp_path, capsys):
    """Issue 27.7: a run without --name was called 'run' ("run 'run'"); a folder holding one still resumes it."""
    from robustal.storage.store import Store

    argv = ["run", "--dataset", "digits", "--training", "standard", "--acquisition", "random", "--initial", "30",
            "--per-stage", "30", "--budget", "30", "--epochs", "1", "--min-steps", "0", "--eval-steps", "0",
            "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "new")]) == 0
    assert "run 'digits-small-cnn-standard-random-s0':" in capsys.readouterr().err
    assert [r["name"] for r in Store(tmp_path / "new").runs()] == ["digits-small-cnn-standard-random-s0"]
    assert main([*argv, "--out", str(tmp_path / "old"), "--name", "run"]) == 0  # as robustal 0.3 named it
    assert main([*argv, "--out", str(tmp_path / "old")]) == 0
    assert "run 'run':" in capsys.readouterr().err
    assert [r["name"] for r in Store(tmp_path / "old").runs()] == ["run"]


def test_counts_take_the_right_number():
    from robustal.reports.tables import count

    assert [count(n, "run") for n in (0, 1, 2)] == ["0 runs", "1 run", "2 runs"]
    assert count(1, "worker") == "1 worker" and count(3, "class", "classes") == "3 classes"
