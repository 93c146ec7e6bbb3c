"""``robustal status`` tells a live run from one whose process was killed: the folder lock says who holds it."""

from __future__ import annotations

from robustal.cli import main
from robustal.outputs import folder_lock, lock_holder
from robustal.store import Store


def test_lock_holder_names_the_live_process_and_nothing_once_it_is_gone(tmp_path):
    assert lock_holder(tmp_path) is None  # never locked: no lock file, none created
    assert not list(tmp_path.iterdir())
    with folder_lock(tmp_path, "robustal label --out x"):
        holder = lock_holder(tmp_path)
        assert holder is not None and holder.startswith("pid ") and "robustal label --out x" in holder
    assert lock_holder(tmp_path) is None  # released (as by SIGKILL: the OS drops the lock with the process)


def test_status_says_running_only_while_a_process_holds_the_folder(tmp_path, capsys):
    store = Store(tmp_path)
    store.start_run("run", {"loop": {}}, 0)  # recorded as running, as a killed process leaves it
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run 'run': interrupted (its process ended without finishing; run the same command again" in out
    with folder_lock(tmp_path, "robustal run --out x"):
        assert main(["status", str(tmp_path)]) == 0
        out = capsys.readouterr().out
    assert "run 'run': running," in out and "in use by pid" in out and "robustal run --out x" in out
    assert store.status("run") == "running"  # status only reads
