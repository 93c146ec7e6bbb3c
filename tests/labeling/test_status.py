"""``robustal status`` tells a live run from one whose process was killed: the folder lock says who holds it."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from robustal.cli import main
from robustal.errors import StoreError
from robustal.storage.outputs import LOCK_FILE, folder_lock, lock_holder
from robustal.storage.store import Store


def test_lock_holder_names_the_live_process_and_nothing_once_it_is_gone(tmp_path):
    assert lock_holder(tmp_path) is None  # never locked: no lock file, none created
    assert not list(tmp_path.iterdir())
    with folder_lock(tmp_path, "robustal label --out x"):
        holder = lock_holder(tmp_path)
        assert holder is not None and holder.startswith("pid ") and "robustal label --out x" in holder
    assert lock_holder(tmp_path) is None  # released (as by SIGKILL: the OS drops the lock with the process)


def test_a_process_refused_just_after_the_holder_locked_waits_for_it_to_say_who_it_is(tmp_path):
    # The holder takes the lock first and writes its pid just after: a refusal in between found the file empty and
    # said "another process" (seen in CI). Here the holder is slow to write; the refusal must still name it.
    held = open(tmp_path / LOCK_FILE, "a+")  # noqa: SIM115 - closed below
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write_late():
        held.write("pid 4242, robustal run --out x, since now")
        held.flush()

    timer = threading.Timer(0.3, write_late)
    timer.start()
    try:
        with pytest.raises(StoreError, match="in use by another robustal process \\(pid 4242, robustal run --out x"):
            with folder_lock(tmp_path, "robustal run --out y"):
                pass
        assert lock_holder(tmp_path) == "pid 4242, robustal run --out x, since now"
    finally:
        timer.join()
        held.close()
    assert lock_holder(tmp_path) is None


def test_status_says_running_only_while_a_process_holds_the_folder(tmp_path, capsys):
    store = Store(tmp_path)
    store.start_run("run", {"loop": {}}, 0)  # recorded as running, as a killed process leaves it
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "run 'run': interrupted (its process ended without finishing; run the same command again" in out
    with folder_lock(tmp_path, "robustal run --out x"):
        store.set_status("run", "running")  # taken up by the process that holds the folder, as a resumed run is
        assert main(["status", str(tmp_path)]) == 0
        out = capsys.readouterr().out
    pid = os.getpid()
    assert f"run 'run': running now (pid {pid}, since " in out
    assert f"running now: pid {pid}, since " in out and "(robustal run --out x)" in out
    assert store.status("run") == "running"  # status only reads


def test_a_stage_with_its_labels_in_is_training_now_while_a_process_holds_the_folder(tmp_path, capsys):
    """Issue 27.4: status said a stage of a running study "trains when the command runs again" while it trained."""
    import torch

    store = Store(tmp_path)
    with folder_lock(tmp_path, "robustal study s.toml --out x"):
        store.start_run("run", {"loop": {}}, 0)
        store.set_pending("run", 0, torch.arange(5), None)
        store.add_labels("run", 0, torch.arange(5), torch.zeros(5, dtype=torch.int64))
        assert main(["status", str(tmp_path)]) == 0
        out = capsys.readouterr().out
    assert "stage 0: its 5 labels are imported; training now (pid " in out and ", since 20" in out
    assert "runs again" not in out
    store.set_status("run", "waiting")  # stopped for labels that came afterwards: nobody trains it
    assert main(["status", str(tmp_path)]) == 0
    assert "stage 0: its 5 labels are imported; it waits for the command to run again" in capsys.readouterr().out


def test_a_run_left_running_by_a_killed_process_is_not_running_under_the_next_holder(tmp_path, capsys):
    """A study killed and started again: the runs the killed process had running stay recorded as running until the
    new one reaches them; status must not call them running now."""
    import time

    store = Store(tmp_path)
    store.start_run("stale", {"loop": {}}, 0)  # the killed process's run
    time.sleep(1.1)  # the holder's start is kept in whole seconds
    with folder_lock(tmp_path, "robustal study s.toml --out x"):
        store.start_run("live", {"loop": {}}, 1)  # taken up by the new holder
        assert main(["status", str(tmp_path)]) == 0
        out = capsys.readouterr().out
    assert "run 'live': running now (pid " in out
    assert "run 'stale': interrupted (its process ended without finishing, before the command now holding" in out
