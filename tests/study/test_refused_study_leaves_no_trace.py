"""A refused or failed study leaves its --out as it was (issue 28.2): byte for byte for a folder that holds a
finished study, and no folder at all for a new --out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from robustal.cli import main
from robustal.storage.outputs import LOCK_FILE, claimed_folder
from study_files import TINY_LOOP, settings_toml, study_toml


def study_text(**loop) -> str:
    """A tiny one-run study; ``loop``: more ``[loop]`` settings (another study than the one without them)."""
    return study_toml(settings=settings_toml({**TINY_LOOP, **loop}))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder``, the lock file included, by its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished one-run study: its file and its folder."""
    root = tmp_path_factory.mktemp("finished")
    study = root / "tiny.toml"
    study.write_text(study_text())
    assert main(["study", str(study), "--out", str(root / "done"), "--no-progress"]) == 0
    return study, root / "done"


def edited(tmp_path: Path, eval_attack: str) -> Path:
    """The study file with another [loop] eval_attack: another study, whose copy must not replace the finished
    one's."""
    path = tmp_path / "edited.toml"
    path.write_text(study_text(eval_attack=eval_attack))
    return path


REFUSALS = {
    "an unanswering ray:// address": (["--executor", "ray", "--address", "ray://127.0.0.1:9"],
                                      "No Ray client server answers at ray://127.0.0.1:9"),
    "a port out of range": (["--executor", "ray", "--address", "127.0.0.1:99999"], "'99999' is not a port number"),
    "a host:port where no Ray cluster answers": (["--executor", "ray", "--address", "127.0.0.1:9"],
                                                 "No Ray cluster answers at 127.0.0.1:9"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_executor_leaves_an_existing_out_byte_for_byte(finished, case, tmp_path, capsys):
    study, done = finished
    before = snapshot(done)
    flags, message = REFUSALS[case]
    assert main(["study", str(edited(tmp_path, "fgsm")), "--out", str(done), "--no-progress",
                 *flags]) != 0
    assert message in capsys.readouterr().err
    assert snapshot(done) == before


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_executor_leaves_no_new_out(finished, case, tmp_path, capsys):
    study, _ = finished
    flags, message = REFUSALS[case]
    out = tmp_path / "new" / "study"
    assert main(["study", str(study), "--out", str(out), "--no-progress", *flags]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_an_unknown_eval_attack_is_refused_when_the_study_is_read(finished, tmp_path, capsys):
    _, done = finished
    before = snapshot(done)
    bad = edited(tmp_path, "bogus")
    for out in (done, tmp_path / "new"):
        assert main(["study", str(bad), "--out", str(out), "--no-progress"]) != 0
        assert "eval_attack in [loop]: Unknown attack 'bogus'" in capsys.readouterr().err
    assert snapshot(done) == before and not (tmp_path / "new").exists()


def test_a_study_that_fails_before_its_first_stage_puts_its_folder_back(finished, tmp_path, monkeypatch, capsys):
    """The executor fails after the store and the study copy were written (Ray lost, a worker crashed): the study
    copy is the finished study's again, and a new --out is gone."""
    import robustal.studies.study_run
    from robustal.errors import ConfigError
    from robustal.storage.store import Store

    def lost(tasks, out, **kwargs):
        Store(out)
        raise ConfigError("Cannot connect to Ray (lost)")

    monkeypatch.setattr(robustal.studies.study_run, "run_local", lost)
    study, done = finished
    copy = (done / "study.toml").read_bytes()
    assert main(["study", str(edited(tmp_path, "fgsm")), "--out", str(done), "--no-progress"]) != 0
    assert (done / "study.toml").read_bytes() == copy
    out = tmp_path / "new"
    assert main(["study", str(study), "--out", str(out), "--no-progress"]) != 0
    assert "Cannot connect to Ray (lost)" in capsys.readouterr().err
    assert not out.exists()


def test_a_claimed_folder_is_removed_only_when_the_command_failed_and_left_nothing(tmp_path):
    made = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), claimed_folder(made, "--out", "test"):
        assert (made / LOCK_FILE).is_file()
        raise RuntimeError("refused")
    assert not (tmp_path / "a").exists()
    with pytest.raises(RuntimeError), claimed_folder(made, "--out", "test"):
        (made / "results.db").write_text("kept")
        raise RuntimeError("failed after a result")
    assert (made / "results.db").read_text() == "kept"
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(RuntimeError), claimed_folder(existing, "--out", "test"):
        raise RuntimeError("refused")
    assert existing.is_dir()
