"""The results store: schema, concurrent writers, atomic checkpoints, configuration checks."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from robustal.engine.training import TrainConfig
from robustal.errors import StoreError
from robustal.storage.outputs import atomic_write_bytes
from robustal.storage.schema import CHANGED_TRAIN_DEFAULTS, StageRecord, config_diff
from robustal.storage.store import Store


def _writer(root: str, worker: int, runs: int, stages: int) -> None:
    store = Store(root)
    for r in range(runs):
        name = f"w{worker}-r{r}"
        store.start_run(name, {"worker": worker, "run": r}, seed=r)
        for s in range(stages):
            store.add_stage(name, StageRecord(s, 10 * (s + 1), 0.5, 0.25), torch.arange(s * 10, s * 10 + 10), None)
        store.set_status(name, "finished")


def test_two_processes_writing_one_store_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 5, 8)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = Store(tmp_path)
    runs = store.runs()
    assert len(runs) == 10 and {r["status"] for r in runs} == {"finished"}
    for r in runs:
        assert [s.stage for s in store.stages(r["name"])] == list(range(8))
        assert sum(len(v) for v in store.selections(r["name"]).values()) == 80


def test_runs_record_config_seed_and_versions(tmp_path):
    store = Store(tmp_path)
    assert store.start_run("a", {"x": 1, "t": (1, 2)}, seed=7) == "new"
    (run,) = store.runs()
    assert run["config"] == {"x": 1, "t": [1, 2]} and run["seed"] == 7 and run["status"] == "running"
    assert {"robustal", "torch", "numpy", "python"} <= set(run["versions"])
    assert store.start_run("a", {"x": 1, "t": (1, 2)}, seed=7) == "running"  # resumable, tuples == lists


def test_different_config_is_refused_with_the_differences(tmp_path):
    store = Store(tmp_path)
    store.start_run("a", {"loop": {"budget": 100, "device": "cpu"}}, seed=0)
    store.start_run("a", {"loop": {"budget": 100, "device": "cuda"}}, seed=0)  # device does not matter
    with pytest.raises(StoreError, match="loop.budget: stored 100, now 200"):
        store.start_run("a", {"loop": {"budget": 200, "device": "cpu"}}, seed=0)


def test_a_run_stored_under_the_old_training_defaults_is_refused_with_the_flags_that_resume_it(tmp_path):
    """robustal 0.4 raised the default epochs and step floor: a run stored under 0.3's defaults and resumed with
    the new ones is refused, and the refusal names the flags that resume it; other differences get no such hint."""
    now = TrainConfig()
    assert (now.epochs, now.min_steps) == tuple(CHANGED_TRAIN_DEFAULTS[k][1] for k in ("epochs", "min_steps"))
    store = Store(tmp_path)
    store.start_run("a", {"train": {"epochs": 10, "min_steps": 100, "mode": "pgd"}}, seed=0)
    with pytest.raises(StoreError, match="0.3's training defaults") as refused:
        store.start_run("a", {"train": {"epochs": now.epochs, "min_steps": now.min_steps, "mode": "pgd"}}, seed=0)
    assert "--epochs 10 --min-steps 100" in str(refused.value)
    assert "[train] epochs = 10, min_steps = 100" in str(refused.value)
    with pytest.raises(StoreError) as other:
        store.start_run("a", {"train": {"epochs": 5, "min_steps": 100, "mode": "pgd"}}, seed=0)
    assert "train.epochs: stored 10, now 5" in str(other.value) and "0.3's" not in str(other.value)


def test_selection_scores_round_trip(tmp_path):
    store = Store(tmp_path)
    store.start_run("a", {}, 0)
    store.add_stage("a", StageRecord(0, 3, 0.9, None), torch.tensor([5, 1, 9]), torch.tensor([0.5, 0.25, 0.125]))
    assert store.selections("a") == {0: [5, 1, 9]}
    assert store.selection_scores("a") == {0: [0.5, 0.25, 0.125]}
    assert store.stages("a")[0].robust is None


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    store = Store(tmp_path)
    for stage in range(3):
        store.save_checkpoint("a", stage, {"model": {"w": torch.full((2,), float(stage))}, "optimizer": {},
                                           "labeled": torch.arange(stage)})
    store.prune_checkpoints("a", 2)
    assert [p.name for p in (tmp_path / "checkpoints" / "a").iterdir()] == ["stage-002.pt"]
    assert torch.equal(store.load_checkpoint("a", 2)["model"]["w"], torch.full((2,), 2.0))
    with pytest.raises(StoreError, match="checkpoint .* is missing"):
        store.load_checkpoint("a", 0)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temporary left behind


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="Choose a writable folder with --out"):
        Store(Path(blocker) / "out")


def test_config_diff_ignores_runtime_keys():
    assert config_diff({"a": 1, "device": "cpu"}, {"a": 1, "device": "cuda"}) == []
    assert config_diff({"a": {"b": 1}}, {"a": {"b": 2}}) == ["a.b: stored 1, now 2"]


def test_a_store_of_the_first_release_gains_the_new_stage_columns(tmp_path):
    import sqlite3

    with sqlite3.connect(tmp_path / "results.db") as con:  # the first release's stages table
        con.executescript("""
            CREATE TABLE runs (name TEXT PRIMARY KEY, config TEXT NOT NULL, seed INTEGER NOT NULL,
                               versions TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
                               updated REAL NOT NULL);
            CREATE TABLE stages (run TEXT NOT NULL, stage INTEGER NOT NULL, labeled INTEGER NOT NULL, clean REAL,
                                 robust REAL, train_seconds REAL, select_seconds REAL, eval_seconds REAL,
                                 best_epoch INTEGER, val_score REAL, PRIMARY KEY (run, stage));
            CREATE TABLE selections (run TEXT NOT NULL, stage INTEGER NOT NULL, position INTEGER NOT NULL,
                                     pool_index INTEGER NOT NULL, score REAL, PRIMARY KEY (run, stage, position));
            INSERT INTO runs VALUES ('old', '{}', 0, '{}', 'finished', 0, 0);
            INSERT INTO stages VALUES ('old', 0, 100, 0.9, 0.4, 1, 0, 1, 3, 0.45);
        """)
    store = Store(tmp_path)
    (s,) = store.stages("old")
    assert (s.labeled, s.clean, s.val_score, s.val_clean, s.at_chance, s.recovery) == (100, 0.9, 0.45, None, False, "")
    store.add_stage("old", StageRecord(1, 200, 0.5, 0.1, val_clean=0.1, at_chance=True, recovery="reinit"),
                    torch.arange(3), None)
    assert store.stages("old")[1].at_chance is True and store.stages("old")[1].recovery == "reinit"


def test_resuming_under_another_numeric_environment_warns(tmp_path):
    from robustal.errors import ReproducibilityWarning

    store = Store(tmp_path)
    threads = torch.get_num_threads()
    assert store.start_run("r", {"a": 1}, seed=0, device="cpu") == "new"
    assert store.runs()[0]["versions"]["threads"] == threads and store.runs()[0]["versions"]["device"] == "cpu"
    store.set_status("r", "interrupted")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same environment: no warning
        store.start_run("r", {"a": 1}, seed=0, device="cpu")
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(ReproducibilityWarning, match=rf"threads {threads} -> {threads + 1}.*not be bit for bit"):
            store.start_run("r", {"a": 1}, seed=0, device="cpu")
    finally:
        torch.set_num_threads(threads)


def _open_store(root: str, barrier, errors) -> None:
    barrier.wait()
    try:
        Store(root)
    except StoreError as e:
        errors.put(str(e))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork to start processes quickly")
def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    """Creating a store is atomic: no opener sees half a schema or a 'database is locked' from the WAL switch."""
    ctx = mp.get_context("fork")  # the children only touch SQLite; fork keeps 60 of them fast
    for trial in range(10):
        root, barrier, errors = str(tmp_path / f"t{trial}"), ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_store, args=(root, barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        assert errors.empty(), errors.get()
        assert Store(root).runs() == []


def test_a_folder_that_cannot_be_locked_still_opens(tmp_path, monkeypatch):
    """Some network file systems refuse flock on a folder: the store opens unlocked instead of being refused."""
    fcntl = pytest.importorskip("fcntl")

    def refuse(fd, op):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", refuse)
    store = Store(tmp_path)
    store.start_run("r", {"a": 1}, seed=0)
    assert [r["name"] for r in Store(tmp_path).runs()] == ["r"]
