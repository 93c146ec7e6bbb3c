"""The eight "lost or mixed" cases of issue 10, each reproduced as a sequence of commands, plus file permissions and a
report over a damaged checkpoint.

A result is *lost* when it is computed and cannot be written, and *mixed* when results made under one setting are
reported, resumed or overwritten under another. Each test repeats what a user would type and asserts the refusal.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from errors_conftest import (
    RS_ARGS,
    RUN_ARGS,
    assert_unchanged,
    call,
    copy_tree,
    small_arrays,
    snapshot,
    write_npz,
    write_tiny_study,
)

from robustal.storage.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::robustal.errors.ChanceLevelWarning")


# 1 ------------------------------------------------------------------------------------------------------------------
def test_retrain_study_rerun_with_other_settings_is_refused_and_the_same_settings_resume(artefacts, tmp_path, capsys):
    out = copy_tree(artefacts.rs_dir, tmp_path / "rs")
    same = [*RS_ARGS, "--model", artefacts.ckpt, "--out", out]
    before = snapshot(out)

    other = [*same, "--training", "pgd", "--epochs", "2", "--eval-steps", "1"]
    r = call(other, capsys)
    assert r.code != 0
    assert "Traceback" not in r.err
    for fragment in ("other settings", "train.mode", "'standard'", "'pgd'", "train.epochs", "attack"):
        assert fragment in r.err, f"the refusal should list {fragment!r}:\n{r.err}"
    assert_unchanged(before, snapshot(out), "a refused retrain-study: ")

    r = call(same, capsys)
    assert r.code == 0, r.err
    assert "seed 0: clean" not in r.out + r.err, "the finished trial was computed again"
    assert (out / "results.csv").read_bytes() == (artefacts.rs_dir / "results.csv").read_bytes()
    assert (out / "settings.json").read_bytes() == (artefacts.rs_dir / "settings.json").read_bytes()


# 2 ------------------------------------------------------------------------------------------------------------------
def test_study_with_an_edited_study_file_is_refused_and_the_old_results_stay(artefacts, tmp_path, capsys):
    out = copy_tree(artefacts.study_dir, tmp_path / "study")
    assert call(["report", out, "--no-entropy", "--out", tmp_path / "report-before"], capsys).code == 0
    edited_folder = tmp_path / "edited"
    edited_folder.mkdir()
    edited = write_tiny_study(edited_folder, epochs=2)  # the same runs, epochs 1 -> 2
    old_copy = (out / "study.toml").read_bytes()
    before = snapshot(out)

    r = call(["study", edited, "--out", out, "--workers", "1", "--no-progress"], capsys)
    assert r.code != 0
    assert "Traceback" not in r.err
    for fragment in ("digits-small-cnn-standard-random-s0", "digits-small-cnn-standard-entropy-s0", "epochs",
                     "stored 1, now 2"):
        assert fragment in r.err, f"the refusal should name {fragment!r}:\n{r.err}"
    assert (out / "study.toml").read_bytes() == old_copy, "the refused study replaced DIR/study.toml"
    assert_unchanged(before, snapshot(out), "a refused study: ")

    assert call(["report", out, "--no-entropy", "--out", tmp_path / "report-after"], capsys).code == 0
    for name in ("report.md", "stages.csv"):
        assert (tmp_path / "report-after" / name).read_text() == (tmp_path / "report-before" / name).read_text(), \
            f"the report's {name} changed after the refused study"
    assert "epochs = 1" in (out / "study.toml").read_text()


# 3 ------------------------------------------------------------------------------------------------------------------
def test_run_names_a_slash_b_and_a_underscore_b_do_not_share_checkpoints(tmp_path, capsys):
    out = tmp_path / "out"
    assert call([*RUN_ARGS, "--out", out, "--name", "a/b"], capsys).code == 0
    first = sorted((out / "checkpoints").rglob("stage-*.pt"))
    assert len(first) == 1, first
    first_bytes = first[0].read_bytes()

    assert call([*RUN_ARGS, "--out", out, "--name", "a_b"], capsys).code == 0
    store = Store(out)
    assert {r["name"]: r["status"] for r in store.runs()} == {"a/b": "finished", "a_b": "finished"}
    folders = sorted(p for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert len(folders) == 2, f"one checkpoint folder per run expected, got {folders}"
    for name in ("a/b", "a_b"):
        path = store.checkpoint_path(name, 1)
        assert path.is_file(), f"run {name!r} lost its final checkpoint {path}"
    assert store.checkpoint_path("a/b", 1) != store.checkpoint_path("a_b", 1)
    assert first[0].is_file() and first[0].read_bytes() == first_bytes, \
        "the second run overwrote the first's checkpoint"


# 4 ------------------------------------------------------------------------------------------------------------------
def test_resume_on_changed_data_is_refused_and_a_relative_path_to_the_same_data_resumes(tmp_path, monkeypatch,
                                                                                       capsys):
    data = write_npz(tmp_path / "data.npz", **small_arrays(seed=0))
    original = data.read_bytes()
    out = tmp_path / "out"
    args = [*RUN_ARGS, "--out", out]
    assert call([*args, "--dataset", data], capsys).code == 0  # an absolute path
    Store(out).set_status("run", "interrupted")

    write_npz(data, **small_arrays(seed=1))  # same path, same shapes, other images
    assert data.stat().st_size == len(original)
    before = snapshot(out)
    r = call([*args, "--dataset", data], capsys)
    assert r.code != 0
    assert "Traceback" not in r.err
    assert "data" in r.err and "contents differ" in r.err, f"the refusal should say the data changed:\n{r.err}"
    assert_unchanged(before, snapshot(out), "a refused resume on changed data: ")
    assert Store(out).status("run") == "interrupted"

    data.write_bytes(original)
    monkeypatch.chdir(tmp_path)
    r = call([*args, "--dataset", "data.npz"], capsys)  # the same file, by a relative path
    assert r.code == 0, r.err
    assert Store(out).status("run") == "finished"
    assert len(Store(out).runs()) == 1


# 5 ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["/proc/m.pt", "a directory"])
def test_train_save_that_cannot_be_written_is_refused_before_training(where, tmp_path, capsys):
    save = tmp_path if where == "a directory" else Path(where)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    # 40 epochs of PGD training on digits would take minutes on 2 cores
    r = call(["train", "--dataset", "digits", "--training", "pgd", "--epochs", "40", "--eval-steps", "50",
              "--no-progress", "--save", save], capsys)
    seconds = time.perf_counter() - started
    assert r.code != 0
    assert "Traceback" not in r.err
    assert "--save" in r.err
    assert "best epoch" not in r.err and "clean accuracy" not in r.out, "it trained before refusing the --save path"
    assert seconds < 10, f"refusing took {seconds:.1f} s: the check did not come before the work"
    assert_unchanged(before, snapshot(tmp_path), "a refused train: ")
    assert not Path("/proc/m.pt").exists()


# 6 ------------------------------------------------------------------------------------------------------------------
def test_demo_without_robust_evaluation_finishes_and_reruns(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--initial", "30", "--per-stage", "30", "--budget", "60", "--epochs", "1",
            "--min-steps", "0", "--eval-steps", "0", "--workers", "1", "--no-progress"]
    r = call(args, capsys)
    assert r.code == 0, r.err
    rows = [ln for ln in r.out.splitlines() if ln.startswith(("| standard", "| pgd"))]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert sorted((c[0], c[1]) for c in cells) == sorted(
        (t, a) for t in ("standard", "pgd") for a in ("random", "dre")), r.out
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-2:] == ["-", "-"], f"robust accuracy was not measured, so it should print '-': {row}"
    assert "robust not measured" in r.out
    stored = snapshot(out)

    again = call(args, capsys)
    assert again.code == 0, again.err
    assert [ln for ln in again.out.splitlines() if ln.startswith(("| standard", "| pgd"))] == rows
    assert_unchanged(stored, snapshot(out), "rerunning the finished demo: ")


# 7 ------------------------------------------------------------------------------------------------------------------
def test_report_on_another_programs_sqlite_database_is_refused_and_leaves_it_unchanged(tmp_path, capsys):
    folder = tmp_path / "foreign"
    folder.mkdir()
    db = folder / "results.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
    con.commit()
    con.close()
    original = db.read_bytes()

    r = call(["report", folder], capsys)
    assert r.code != 0
    assert "Traceback" not in r.err
    assert "results.db" in r.err and "not a robustal results store" in r.err, r.err
    assert db.read_bytes() == original, "the foreign database was modified"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["results.db"], \
        f"files appeared beside it: {sorted(p.name for p in folder.iterdir())}"
    con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["users"]
    finally:
        con.close()


# 8 ------------------------------------------------------------------------------------------------------------------
def test_two_identical_runs_into_one_folder_at_once_one_runs_the_other_is_refused(tmp_path):
    out = tmp_path / "out"
    # long enough (several seconds of training) that the two processes overlap
    args = [sys.executable, "-m", "robustal.cli", "run", "--dataset", "digits", "--training", "standard",
            "--acquisition", "random", "--initial", "100", "--per-stage", "100", "--budget", "300", "--epochs", "2",
            "--eval-steps", "0", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    ended: dict[int, float] = {}
    while len(ended) < 2:
        for i, p in enumerate(procs):
            if i not in ended and p.poll() is not None:
                ended[i] = time.perf_counter() - started
        time.sleep(0.05)
    outputs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(c == 0 for c in codes) == [False, True], f"exit codes {codes}; stderr:\n" + \
        "\n---\n".join(e for _, e in outputs)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    err = outputs[loser][1]
    assert "Traceback" not in err, err
    assert "in use" in err and "pid" in err and "robustal run" in err, \
        f"the refused run should say the folder is in use, by which pid and command:\n{err}"
    assert ended[loser] < ended[winner], "the refused run did not stop at once (it ended after the one that ran)"

    store = Store(out)
    runs = store.runs()
    name = "digits-small-cnn-standard-random-s0"  # named after its settings, not 'run' (issue 27.7)
    assert [(r["name"], r["status"]) for r in runs] == [(name, "finished")]
    assert [s.labeled for s in store.stages(name)] == [100, 200, 300]
    assert [len(v) for v in store.selections(name).values()] == [100, 100, 100]
    assert sorted(p.name for p in (out / "checkpoints" / name).iterdir()) == ["stage-002.pt"]


# permissions ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_the_permissions_of_a_plain_open(umask_022, artefacts, tmp_path, capsys):
    model = tmp_path / "m.pt"
    r = call(["train", "--dataset", "digits", "--training", "standard", "--epochs", "1", "--eval-steps", "0",
              "--train-size", "600", "--no-progress", "--save", model], capsys)
    assert r.code == 0, r.err
    picks = tmp_path / "picks.csv"
    r = call(["select", "--model", model, "--metric", "random", "--n", "10", "--out", picks, "--no-progress"], capsys)
    assert r.code == 0, r.err
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    for path in (model, picks):
        mode = path.stat().st_mode & 0o777
        assert mode == 0o644 == plain.stat().st_mode & 0o777, f"{path.name} has mode {oct(mode)}, not 0o644"


# a report over a damaged checkpoint ---------------------------------------------------------------------------------
def test_report_with_a_damaged_checkpoint_is_written_and_lists_the_run_as_left_out(artefacts, tmp_path, capsys):
    out = copy_tree(artefacts.study_dir, tmp_path / "study")
    store = Store(out)
    names = [r["name"] for r in store.runs()]
    damaged, intact = names[0], names[1]
    ckpt = store.checkpoint_path(damaged, len(store.stages(damaged)) - 1)
    assert ckpt.is_file()
    ckpt.write_bytes(np.random.default_rng(0).bytes(4096))

    r = call(["report", out], capsys)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    text = (out / "report" / "report.md").read_text()
    entropy = text.split("### Entropy of the selected samples vs the pool", 1)
    assert len(entropy) == 2, "the report has no entropy section"
    section = entropy[1]
    assert "Left out of the entropy distributions" in section
    left_out = section.split("Left out of the entropy distributions", 1)[1]
    assert damaged in left_out, f"the damaged run {damaged!r} is not listed as left out:\n{section}"
    assert intact not in left_out
    assert (out / "report" / "stages.csv").is_file()
