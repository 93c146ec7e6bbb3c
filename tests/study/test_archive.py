"""``robustal export-runs`` / ``robustal import-runs``: finished runs carried to another results folder, never mixed."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from robustal.cli import main
from robustal.errors import StoreError
from robustal.storage.archive import export_runs, import_runs, read_export
from robustal.storage.schema import StageRecord
from robustal.storage.store import Store


def _finished(store: Store, name: str, robust: float = 0.25, finished: bool = True) -> None:
    """A run of two stages with picks, labels and a final attack, as a study stores it."""
    store.start_run(name, {"spec": {"seed": 0, "name": name}}, seed=0)
    for s in range(2):
        store.add_stage(name, StageRecord(s, 10 * (s + 1), 0.5, robust + s / 10, train_seconds=1.5),
                        torch.arange(s * 10, s * 10 + 10), torch.linspace(0, 1, 10))
    store.add_labels(name, 1, torch.arange(10, 20), torch.arange(10) % 3)
    store.add_final_attack({"run": name, "attack": "autoattack", "version": "standard", "n": 20, "seed": 0,
                            "clean": 0.5, "pgd": 0.3, "robust": 0.2, "seconds": 3.0,
                            "provenance": {"cpu": "test CPU", "isa": "AVX2", "threads": 1}, "created": 1.0})
    if finished:
        store.set_status(name, "finished")


def _tables(store: Store, name: str) -> dict:
    record = store.export_run(name)
    return {k: record[k] for k in ("stages", "selections", "labels", "final_attacks")} | {"run": record["run"][:6]}


def test_finished_runs_travel_with_every_row_and_unfinished_ones_stay(tmp_path):
    a = Store(tmp_path / "a")
    _finished(a, "r1")
    _finished(a, "r2", robust=0.4)
    _finished(a, "r3", finished=False)
    names = export_runs(a, tmp_path / "runs.json.gz")
    assert names == ["r1", "r2"]
    b = Store(tmp_path / "b")
    imported, same = import_runs(tmp_path / "runs.json.gz", b)
    assert (imported, same) == (["r1", "r2"], [])
    for name in names:
        assert _tables(b, name) == _tables(a, name)
    assert b.status("r1") == "finished" and b.status("r3") is None
    assert b.final_attacks("r2")[0]["provenance"]["cpu"] == "test CPU"  # the machine that computed it travels
    assert not (tmp_path / "b" / "checkpoints" / "r1").exists()  # rows only


def test_importing_twice_changes_nothing(tmp_path):
    a = Store(tmp_path / "a")
    _finished(a, "r1")
    export_runs(a, tmp_path / "runs.json.gz")
    b = Store(tmp_path / "b")
    import_runs(tmp_path / "runs.json.gz", b)
    before = _tables(b, "r1")
    assert import_runs(tmp_path / "runs.json.gz", b) == ([], ["r1"])
    assert _tables(b, "r1") == before


def test_a_run_held_with_other_results_refuses_the_whole_import(tmp_path):
    a = Store(tmp_path / "a")
    _finished(a, "r1")
    _finished(a, "r2")
    export_runs(a, tmp_path / "runs.json.gz")
    b = Store(tmp_path / "b")
    _finished(b, "r2", robust=0.9)  # the same name, other results
    held = _tables(b, "r2")
    with pytest.raises(StoreError, match=r"already holds 1 of the runs .*r2 \(with other rows\).*Nothing was imported"):
        import_runs(tmp_path / "runs.json.gz", b)
    assert b.status("r1") is None and _tables(b, "r2") == held


def test_an_unfinished_run_of_the_same_name_is_not_overwritten(tmp_path):
    a = Store(tmp_path / "a")
    _finished(a, "r1")
    export_runs(a, tmp_path / "runs.json.gz")
    b = Store(tmp_path / "b")
    _finished(b, "r1", finished=False)
    with pytest.raises(StoreError, match=r"r1 \(it is not finished there\)"):
        import_runs(tmp_path / "runs.json.gz", b)
    assert b.status("r1") == "running"


def test_a_large_store_travels_in_several_files_that_together_import_every_run(tmp_path, capsys):
    a = Store(tmp_path / "a")
    for name in ("m-pgd-random-s0", "m-pgd-all-labels-s0", "m-pgd-all-labels-s1"):
        _finished(a, name)
    _finished(a, "m-pgd-random-s1", finished=False)
    assert export_runs(a, tmp_path / "refs.json.gz", ["*-all-labels-*"]) == ["m-pgd-all-labels-s0",
                                                                                "m-pgd-all-labels-s1"]
    assert main(["export-runs", str(tmp_path / "a"), "--out", str(tmp_path / "al.json.gz"), "--runs", "*-random-*",
                 "--runs", "nothing-*"]) == 0
    assert "exported 1 finished run(s)" in capsys.readouterr().err
    b = Store(tmp_path / "b")
    assert import_runs(tmp_path / "refs.json.gz", b)[0] == ["m-pgd-all-labels-s0", "m-pgd-all-labels-s1"]
    assert import_runs(tmp_path / "al.json.gz", b)[0] == ["m-pgd-random-s0"]
    with pytest.raises(StoreError, match=r"No finished run of .* matches --runs \*-trades-\*"):
        export_runs(a, tmp_path / "none.json.gz", ["*-trades-*"])
    assert not (tmp_path / "none.json.gz").exists()


def test_a_store_without_a_finished_run_is_refused(tmp_path):
    a = Store(tmp_path / "a")
    _finished(a, "r1", finished=False)
    with pytest.raises(StoreError, match="no finished run to export"):
        export_runs(a, tmp_path / "runs.json.gz")
    assert not (tmp_path / "runs.json.gz").exists()


@pytest.mark.parametrize("content, message", [
    (b"not gzip at all", "not gzip-compressed JSON"),
    (gzip.compress(b'{"format": "something else"}'), "its format is not 'robustal-runs'"),
    (gzip.compress(b'{"format": "robustal-runs", "version": 99, "runs": []}'), "version 99 export"),
    (gzip.compress(b'{"format": "robustal-runs", "version": 1, "runs": [{"run": ["x"]}]}'), "run 1 is damaged"),
])
def test_a_file_that_is_not_an_export_is_refused_by_name(tmp_path, content, message):
    path = tmp_path / "bad.json.gz"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=message):
        read_export(path)


def test_the_commands_round_trip_a_study_that_then_runs_nothing(tmp_path, tiny_study, capsys):
    """A tiny study run in one folder, exported and imported into another: resuming it there runs no stage, and the
    report shows its runs."""
    assert main(["study", str(tiny_study), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    export = tmp_path / "moved" / "runs.json.gz"
    (tmp_path / "moved").mkdir()
    assert main(["export-runs", str(tmp_path / "a"), "--out", str(export)]) == 0
    assert "exported 2 finished run(s)" in capsys.readouterr().err
    assert main(["import-runs", str(export), "--out", str(tmp_path / "b")]) == 0
    assert "imported 2 finished run(s)" in capsys.readouterr().err
    b = Store(tmp_path / "b")
    names = sorted(r["name"] for r in b.runs())
    stored = {n: b.stages(n) for n in names}
    assert main(["study", str(tiny_study), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert {n: b.stages(n) for n in names} == stored
    assert "2 already finished" in capsys.readouterr().err
    assert not any((tmp_path / "b" / "checkpoints").glob("*/stage-*.pt"))  # nothing was trained there
    assert main(["report", str(tmp_path / "b"), "--no-entropy"]) == 0
    report = (tmp_path / "b" / "report" / "report.md").read_text()
    assert "2 of 2 runs finished" in report


def test_the_commands_refuse_bad_input_with_the_file_named(tmp_path, capsys):
    assert main(["import-runs", str(tmp_path / "missing.json.gz"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "missing.json.gz' is not a file" in err and not (tmp_path / "b").exists()
    assert main(["export-runs", str(tmp_path / "nowhere")]) == 2
    assert "holds no results.db" in capsys.readouterr().err
    _finished(Store(tmp_path / "a"), "r1")
    assert main(["export-runs", str(tmp_path / "a"), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export-runs", str(tmp_path / "a")]) == 0
    document = read_export(tmp_path / "a" / "finished-runs.json.gz")
    assert [r["run"][0] for r in document["runs"]] == ["r1"]
    assert json.loads(gzip.decompress((tmp_path / "a" / "finished-runs.json.gz").read_bytes()))["version"] == 1


def test_the_export_leaves_checkpoints_unread(tmp_path, monkeypatch):
    """Export files hold rows only: the store's checkpoint bytes are not read for them (a study's are megabytes)."""
    store = Store(tmp_path / "a")
    _finished(store, "r1")
    path = store.checkpoint_path("r1", 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    assert store.export_run("r1")["checkpoint"] == b"weights"
    assert store.export_run("r1", checkpoint=False)["checkpoint"] is None

    def unread(*args):
        raise AssertionError("export-runs looked for a checkpoint")

    monkeypatch.setattr(store, "checkpoint_path", unread)
    export_runs(store, tmp_path / "runs.json.gz")
    import_runs(tmp_path / "runs.json.gz", store)  # held with the same rows: compared without its checkpoint
    assert "checkpoint" not in read_export(tmp_path / "runs.json.gz")["runs"][0]
