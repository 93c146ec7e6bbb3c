"""Final attacks (issue 26): a study's ``[final_attack]``, ``robustal run --final-attack`` and ``robustal attack`` store
each finished run's final model under AutoAttack in results.db without retraining; rows of another setting are not
reused; every run and row records the machine it was computed on."""

from __future__ import annotations

import shutil

import pytest
import torch

from robustal.cli import main
from robustal.engine.attacks import ATTACKS
from robustal.errors import ConfigError
from robustal.storage.store import Store
from robustal.studies.study import Study
from robustal.studies.study_run import run_study

FINAL = '\n[final_attack]\nattack = "autoattack-fast"\nn = {n}\n'


@pytest.fixture
def fake_fast(monkeypatch):
    """AutoAttack-fast replaced by an attack that changes nothing (robust = clean): the plumbing is tested here, not
    pyautoattack; each call's batch size is recorded."""
    calls = []

    def fast(model, x, y, **kwargs):
        calls.append(len(x))
        return x

    monkeypatch.setitem(ATTACKS._entries, "autoattack-fast", fast)
    return calls


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_writer):
    """A finished tiny study (one standard-training run) without a final attack, and its study file."""
    folder = tmp_path_factory.mktemp("final")
    path = tiny_writer(folder, training=("standard",), acquisitions=("random",), seeds=(0,))
    out = folder / "out"
    run_study(Study.load(path), out)
    return path, out


def _with_final(path, n: int):
    path.write_text(path.read_text().split("\n[final_attack]")[0] + FINAL.format(n=n))
    return Study.load(path)


def test_adding_a_final_attack_to_a_finished_study_attacks_without_retraining(finished, tmp_path, fake_fast):
    path, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    study_file = tmp_path / "tiny.toml"
    shutil.copy(path, study_file)
    store = Store(out)
    (name,) = [r["name"] for r in store.runs()]
    stages = store.stages(name)
    checkpoint = store.checkpoint_path(name, stages[-1].stage)
    mtime = checkpoint.stat().st_mtime_ns
    run_study(_with_final(study_file, 6), out)  # not refused as "other settings": the attack is no run setting
    assert store.stages(name) == stages and checkpoint.stat().st_mtime_ns == mtime  # nothing retrained
    (row,) = store.final_attacks(name)
    assert (row["attack"], row["n"], row["seed"]) == ("autoattack-fast", 6, 0) and sum(fake_fast) > 0
    assert row["robust"] == row["clean"]  # the fake attack changes nothing
    assert row["pgd"] is not None and row["pgd"] <= row["clean"] and row["seconds"] >= 0
    assert row["provenance"]["isa"] == torch.backends.cpu.get_cpu_capability() and row["provenance"]["cpu"]
    calls = len(fake_fast)
    run_study(_with_final(study_file, 6), out)  # done: skipped
    assert len(fake_fast) == calls and store.final_attacks(name)[0]["created"] == row["created"]
    run_study(_with_final(study_file, 8), out)  # another n: attacked again, never the 6-image row reused
    (again,) = store.final_attacks(name)
    assert again["n"] == 8 and len(fake_fast) > calls and store.stages(name) == stages


def test_a_bad_final_attack_section_is_refused_with_the_file(finished, tmp_path):
    path, _ = finished
    study_file = tmp_path / "tiny.toml"
    text = path.read_text()
    study_file.write_text(text + '\n[final_attack]\nattack = "autoatack"\n')
    with pytest.raises(ConfigError, match=r"tiny.toml: .*'autoattack', 'autoattack-fast'"):
        Study.load(study_file)
    study_file.write_text(text + "\n[final_attack]\nimages = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'images' in \[final_attack\]"):
        Study.load(study_file)


def test_the_attack_command_adds_rows_and_refuses_an_unknown_filter(finished, tmp_path, fake_fast, capsys):
    _, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    assert main(["attack", str(out), "--attack", "autoattack-fast", "--n", "5", "--training", "standard"]) == 0
    (row,) = Store(out).final_attacks()
    assert row["n"] == 5 and row["attack"] == "autoattack-fast"
    err = capsys.readouterr().err
    assert main(["status", str(out)]) == 0
    where = row["provenance"]
    assert f"final attacks: 1 stored (robustal report shows them), attacked on {where['cpu']} ({where['isa']})" \
        in capsys.readouterr().out
    assert "[1/1]" in err and "autoattack-fast on 5 test images" in err  # progress: run, attack, seconds
    calls = len(fake_fast)
    assert main(["attack", str(out), "--attack", "autoattack-fast", "--n", "5"]) == 0
    assert len(fake_fast) == calls and "0 of 1 selected final models" in capsys.readouterr().err
    assert main(["attack", str(out), "--attack", "autoattack-fast", "--acquisitions", "bald"]) == 2
    assert "--acquisitions bald: no finished run" in capsys.readouterr().err


def test_run_with_a_real_final_attack_then_resumed_skips_it(tmp_path, monkeypatch, capsys):
    """AutoAttack-fast for real on 5 images (APGD-CE, APGD-T), stored with the run; the same command again neither
    retrains nor attacks; --final-n without --final-attack is refused."""
    out = tmp_path / "run"
    command = ["run", "--dataset", "digits", "--model", "small-cnn", "--training", "standard", "--acquisition",
               "random", "--initial", "100", "--per-stage", "50", "--budget", "150", "--epochs", "2", "--eval-steps",
               "2", "--no-progress", "--out", str(out), "--final-attack", "autoattack-fast", "--final-n", "5"]
    assert main(command) == 0
    name = "digits-small-cnn-standard-random-s0"  # named after its settings (robustal 0.4)
    assert f"final attack: {name}: autoattack-fast on 5 test images" in capsys.readouterr().err
    store = Store(out)
    (row,) = store.final_attacks(name)
    assert row["n"] == 5 and 0 <= row["robust"] <= row["pgd"] <= row["clean"] <= 1
    assert "final_attack" not in str(store.runs()[0]["config"])  # not a run setting
    stages = store.stages(name)

    def refuse(*args, **kwargs):
        raise AssertionError("attacked again")

    monkeypatch.setitem(ATTACKS._entries, "autoattack-fast", refuse)
    assert main(command) == 0 and store.stages(name) == stages
    assert main(command[:-4]) == 0  # the same run without the setting: still resumable, the row kept
    assert len(store.final_attacks(name)) == 1
    assert main([*command[:-4], "--final-n", "5"]) == 2
    assert "--final-n sets the test images of the final attack" in capsys.readouterr().err


def test_every_run_records_its_machine_and_status_shows_it(finished, capsys):
    _, out = finished
    (run,) = Store(out).runs()
    versions = run["versions"]
    assert versions["isa"] == torch.backends.cpu.get_cpu_capability() and versions["cpu"]
    assert versions["threads"] >= 1 and versions["device"] == "cpu" and versions["numpy"] and versions["python"]
    assert main(["status", str(out)]) == 0
    printed = capsys.readouterr().out
    plural = "" if versions["threads"] == 1 else "s"
    assert f"Machine: {versions['cpu']} ({versions['isa']}), {versions['threads']} thread{plural}, cpu" in printed


def test_the_cli_offers_the_final_attacks_of_the_library():
    from robustal.cli.run import FINAL_ATTACK_NAMES
    from robustal.loop.final_eval import FINAL_ATTACKS

    assert FINAL_ATTACK_NAMES == tuple(FINAL_ATTACKS)


def test_final_attack_rows_travel_with_an_exported_run(finished, tmp_path, fake_fast):
    """The Ray executor moves runs between stores with export_run / import_run: the rows go along."""
    _, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    assert main(["attack", str(out), "--attack", "autoattack-fast", "--n", "5"]) == 0
    source = Store(out)
    (name,) = [r["name"] for r in source.runs()]
    target = Store(tmp_path / "other")
    target.import_run(source.export_run(name))
    assert target.final_attacks(name) == source.final_attacks(name) and len(target.final_attacks()) == 1


def test_resuming_under_another_instruction_set_warns(tmp_path):
    import json
    import sqlite3

    from robustal.errors import ReproducibilityWarning

    store = Store(tmp_path)
    store.start_run("r", {"a": 1}, 0, device="cpu")
    con = sqlite3.connect(tmp_path / "results.db")
    stored = json.loads(con.execute("SELECT versions FROM runs").fetchone()[0])
    con.execute("UPDATE runs SET versions = ?, status = 'interrupted'", (json.dumps({**stored, "isa": "OTHER"}),))
    con.commit()
    con.close()
    with pytest.warns(ReproducibilityWarning, match=f"isa OTHER -> {torch.backends.cpu.get_cpu_capability()}"):
        store.start_run("r", {"a": 1}, 0, device="cpu")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_source_commit_names_the_checkout_and_says_when_its_files_were_changed(tmp_path):
    import subprocess

    from robustal.storage.provenance import source_commit, version_label

    assert source_commit(tmp_path) == ""  # not a checkout: nothing claimed
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "code.py").write_text("x = 1\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert source_commit(repo / "pkg") == head
    (repo / "pkg" / "code.py").write_text("x = 2\n")
    assert source_commit.__wrapped__(repo / "pkg") == head + "+"
    (repo / "venv" / "robustal").mkdir(parents=True)  # an installed copy inside the repository, untracked
    (repo / "venv" / "robustal" / "__init__.py").write_text("")
    assert source_commit(repo / "venv" / "robustal") == ""
    assert version_label({"robustal": "0.4.0", "commit": head, "torch": "2.13.0"}) == \
        f"robustal 0.4.0 (commit {head}), torch 2.13.0"
    assert version_label({"robustal": "0.4.0", "torch": "2.13.0"}) == "robustal 0.4.0, torch 2.13.0"


def test_the_study_command_says_what_it_will_attack_and_logs_each_attack(finished, tmp_path, fake_fast, capsys,
                                                                        caplog):
    path, original = finished
    out = tmp_path / "out"
    shutil.copytree(original, out)
    study_file = tmp_path / "tiny.toml"
    shutil.copy(path, study_file)
    _with_final(study_file, 5)
    with caplog.at_level("INFO", logger="robustal"):
        assert main(["study", str(study_file), "--out", str(out), "--no-progress"]) == 0
    assert "autoattack-fast on the first 5 test images after each run (1 finished run to attack, without " \
           "retraining)" in capsys.readouterr().err
    (name,) = [r["name"] for r in Store(out).runs()]
    assert f"final attack: {name}: autoattack-fast on 5 test images" in caplog.text
