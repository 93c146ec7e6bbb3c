"""Shared pieces of the error-catalogue tests (issue 10, "Nothing lost, nothing mixed, no traceback").

* :func:`snapshot` / :func:`assert_unchanged`: every file under some folders, by path, size and bytes (a SHA-256 of
  the bytes), before and after a command; the comparison lists what was created, changed or lost.
* :func:`call`: ``robustal.cli.main(argv)`` in-process; an exception escaping ``main`` is a traceback and fails
  the test with it.
* ``artefacts``: built once per session with the real CLI, on digits: a small checkpoint, a finished tiny run, a
  finished tiny study, a selection CSV and a retrain-study folder. Tests that must change one copy it first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from robustal.cli import main
from study_files import TINY_LOOP, TINY_TRAIN, grid_toml, settings_toml, study_toml

#: The test modules import these helpers as ``errors_conftest`` (several conftest.py files share the name "conftest").
sys.modules["errors_conftest"] = sys.modules[__name__]

#: robustal's results-folder lock file: it records the last process that held the folder (pid, command, time), so
#: it is rewritten by design whenever a command takes the folder, and is not a result.
LOCK_FILE = ".robustal.lock"


# --- snapshots --------------------------------------------------------------------------------------------------------
def snapshot(*roots: Path, ignore: tuple[str, ...] = (LOCK_FILE,)) -> dict[str, tuple[int, str]]:
    """``{path: (size, sha256 of the bytes)}`` of every file under ``roots`` (a root that is a file: that file).

    Files named in ``ignore`` are left out (by default the folder lock, see :data:`LOCK_FILE`).
    """
    out: dict[str, tuple[int, str]] = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]
        else:
            files = []
        for p in files:
            if p.name in ignore:
                continue
            try:
                data = p.read_bytes()
            except OSError as e:  # a dangling link or an unreadable file still counts as "there"
                out[str(p)] = (-1, f"unreadable: {e}")
                continue
            out[str(p)] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """What changed between two :func:`snapshot` results, one line per file."""
    lines = [f"created: {p}" for p in sorted(set(after) - set(before))]
    lines += [f"lost: {p}" for p in sorted(set(before) - set(after))]
    lines += [f"changed: {p} (size {before[p][0]} -> {after[p][0]})" for p in sorted(set(before) & set(after))
              if before[p] != after[p]]
    return lines


def assert_unchanged(before: dict, after: dict, what: str = "") -> None:
    diff = snapshot_diff(before, after)
    assert not diff, f"{what}files were created, changed or lost:\n  " + "\n  ".join(diff)


# --- calling the CLI --------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    out: str
    err: str
    warnings: list = field(default_factory=list)  # warnings.WarningMessage raised during the call

    def foreign_warnings(self) -> list[str]:
        """Warnings raised by other libraries (torch, numpy...): on a terminal they print a file name and a source
        line, like a piece of a traceback, under the command's output."""
        return [f"{w.category.__name__} from {w.filename}:{w.lineno}: {w.message}" for w in self.warnings
                if f"{os.sep}robustal{os.sep}" not in w.filename]


def call(argv: list[str], capsys) -> Outcome:
    """``main(argv)`` with captured output and warnings; any exception escaping it fails the test with its
    traceback."""
    capsys.readouterr()  # drop what came before
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = main([str(a) for a in argv])
    except SystemExit as e:  # main returns its exit code; a SystemExit escaping it is a bug too
        captured = capsys.readouterr()
        pytest.fail(f"SystemExit({e.code!r}) escaped robustal.cli.main({argv!r}); stderr:\n{captured.err}")
    except BaseException:  # noqa: BLE001 - anything else is a traceback the user would see
        captured = capsys.readouterr()
        pytest.fail(f"an exception escaped robustal.cli.main({argv!r}) (the user sees a traceback):\n"
                    f"{traceback.format_exc()}\nstderr:\n{captured.err}")
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, list(caught))


# --- data -------------------------------------------------------------------------------------------------------------
def small_arrays(n_train: int = 60, n_test: int = 20, classes: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid 8×8 uint8 images with every class 0..classes-1 present in both splits."""
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, 8, 8), dtype=np.uint8),
            "y_train": np.arange(n_train) % classes,
            "x_test": rng.integers(0, 256, (n_test, 8, 8), dtype=np.uint8),
            "y_test": np.arange(n_test) % classes}


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


# --- tiny study files (tests/study_files.py) -------------------------------------------------------------------------
def tiny_study_text(acquisitions=("random", "entropy"), epochs: int = 1) -> str:
    """A tiny digits study (a run per function of two stages, standard training, no robust evaluation)."""
    train = {**TINY_TRAIN, "epochs": epochs, "attack_steps": 2, "epsilon_warmup": 0}
    return study_toml(grid_toml(acquisitions), settings=settings_toml(TINY_LOOP, train))


def write_tiny_study(folder: Path, acquisitions=("random", "entropy"), epochs: int = 1,
                     name: str = "tiny.toml") -> Path:
    """A tiny digits study (two runs of two stages, standard training, no robust evaluation)."""
    path = Path(folder) / name
    path.write_text(tiny_study_text(acquisitions, epochs))
    return path


# --- artefacts built once ---------------------------------------------------------------------------------------------
#: The tiny run of ``artefacts.run_dir``: its argv without ``--out`` (append ``["--out", DIR]``).
RUN_ARGS = ["run", "--dataset", "digits", "--training", "standard", "--acquisition", "entropy", "--initial", "30",
            "--per-stage", "30", "--budget", "60", "--epochs", "1", "--min-steps", "0", "--eval-steps", "0",
            "--no-progress", "--name", "run"]
#: How ``artefacts.ckpt`` is trained: on the first 600 of digits' 1 297 training samples.
TRAIN_SIZE = 600
#: The retrain study of ``artefacts.rs_dir``, without ``--model``/``--out``.
RS_ARGS = ["retrain-study", "--metrics", "random", "--sizes", "20", "--seeds", "0", "--training", "standard",
           "--epochs", "1", "--eval-steps", "0", "--no-progress"]


@dataclass
class Artefacts:
    root: Path
    ckpt: Path  # train --save of a small-cnn on the first TRAIN_SIZE digits
    run_dir: Path  # a finished 2-stage run (RUN_ARGS), run name "run"
    study_file: Path
    study_dir: Path  # the finished tiny study of study_file
    selection: Path  # select --metric random --n 20 with ckpt
    rs_dir: Path  # a finished retrain-study (RS_ARGS) with ckpt
    extra: dict = field(default_factory=dict)


def _must(argv: list[str]) -> None:
    code = main([str(a) for a in argv])
    assert code == 0, f"building a test artefact failed: robustal {' '.join(map(str, argv))} exited {code}"


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Artefacts:
    root = tmp_path_factory.mktemp("artefacts")
    ckpt = root / "model.pt"
    _must(["train", "--dataset", "digits", "--training", "standard", "--epochs", "1", "--eval-steps", "0",
           "--train-size", str(TRAIN_SIZE), "--no-progress", "--save", ckpt])
    run_dir = root / "run"
    _must([*RUN_ARGS, "--out", run_dir])
    study_src = root / "study-src"
    study_src.mkdir()
    study_file = write_tiny_study(study_src)
    study_dir = root / "study"
    _must(["study", study_file, "--out", study_dir, "--workers", "1", "--no-progress"])
    selection = root / "picks.csv"
    _must(["select", "--model", ckpt, "--metric", "random", "--n", "20", "--out", selection, "--no-progress"])
    rs_dir = root / "retrain-study"
    _must([*RS_ARGS, "--model", ckpt, "--out", rs_dir])
    return Artefacts(root=root, ckpt=ckpt, run_dir=run_dir, study_file=study_file, study_dir=study_dir,
                     selection=selection, rs_dir=rs_dir)


def copy_tree(src: Path, dest: Path) -> Path:
    """A copy of a file or folder (the lock file left behind)."""
    if Path(src).is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns(LOCK_FILE))
    else:
        shutil.copy2(src, dest)
    return dest
