"""SIGKILL of a study's main process leaves no worker running (issue 28.3): the workers die with their parent, so
none writes into the results folder once its lock is free, and `status` tells a live holder from a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustal.studies.study_run import stored_stages
from study_files import TINY_LOOP, TINY_TRAIN, grid_toml, settings_toml, study_toml

#: Two runs of nine stages (a study that is still running when its main process is killed).
STUDY = study_toml(grid_toml(("random", "entropy")), name="orphans",
                   settings=settings_toml({**TINY_LOOP, "budget": 300}, {**TINY_TRAIN, "epochs": 2}))


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def start_study(tmp_path: Path, text: str) -> tuple[subprocess.Popen, Path, dict]:
    """``robustal study`` with 2 workers on the study ``text``, in a session of its own: (process, results, env)."""
    study, out = tmp_path / "study.toml", tmp_path / "out"
    study.write_text(text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "robustal.cli", "study", str(study), "--out", str(out),
                             "--workers", "2", "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    return proc, out, env


def stop_session(proc: subprocess.Popen) -> None:
    """Kill whatever is left of the study's session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.stderr.close()


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")
def test_sigkill_of_the_main_process_leaves_no_worker_running(tmp_path):
    proc, out, env = start_study(tmp_path, STUDY)
    try:
        wait_for(lambda: stored_stages(out) >= 1 or proc.poll() is not None, 120, "the first stored stage")
        assert proc.poll() is None, f"the study ended early: {proc.stderr.read().decode()[-2000:]}"
        workers = [p for p in children(proc.pid) if alive(p)]
        assert len(workers) >= 2, f"expected 2 workers under pid {proc.pid}, found {workers}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not any(alive(p) for p in workers), 10, f"the workers {workers} to end with their parent")
        stages = stored_stages(out)
        time.sleep(1.5)
        assert stored_stages(out) == stages, "stages were stored after the main process was killed"
        status = subprocess.run([sys.executable, "-m", "robustal.cli", "status", str(out)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0 and "interrupted" in status.stdout and "running now" not in status.stdout
    finally:
        stop_session(proc)


FORKED_CHILD = """\
import os, sys, time
import robustal.studies._lifeline as lifeline

parent = os.getpid()
pid = os.fork()
if pid == 0:
    if sys.argv[1] == "watch-only":
        lifeline._parent_death_signal = lambda: False  # as where prctl does not exist: the watcher alone
    lifeline.die_with_parent(parent)
    time.sleep(60)
    os._exit(0)
print(pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/stat").is_file(), reason="forks; reads /proc")
@pytest.mark.parametrize("how", ["parent-death signal", "watch-only"])
def test_a_worker_ends_when_its_parent_is_killed(tmp_path, how):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", FORKED_CHILD, how], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        child = int(proc.stdout.readline())
        assert alive(child)
        time.sleep(0.3)  # the child has asked for its lifeline
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not alive(child), 5, f"the child {child} to end with its parent")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stdout.close()


#: A quick run (it stores its stages, so the folder is kept when the study is stopped), and a run whose first stage
#: would outlast any test (a million optimizer steps).
ENDLESS = study_toml(grid_toml(("random",), several=True),
                     grid_toml(("entropy",), several=True, train={"min_steps": 1_000_000}), name="endless")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")
def test_an_interrupt_of_the_main_process_alone_stops_the_running_runs(tmp_path):
    """``kill -INT`` of the study's process (not its whole process group, as Ctrl-C in a terminal is) ends it at once,
    workers included, instead of waiting for the running runs to finish."""
    from robustal.storage.store import Store

    proc, out, _ = start_study(tmp_path, ENDLESS)
    try:
        def endless_running() -> bool:
            return (out / "results.db").is_file() and {(r["name"][:-3], r["status"]) for r in
                                                       Store(out, create=False).runs()} == {
                ("digits-small-cnn-standard-random", "finished"), ("digits-small-cnn-standard-entropy", "running")}
        wait_for(lambda: endless_running() or proc.poll() is not None, 120, "the quick run to finish")
        assert proc.poll() is None, f"the study ended early: {proc.stderr.read().decode()[-2000:]}"
        workers = [p for p in children(proc.pid) if alive(p)]
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the study went on for 60 s after SIGINT: it waits for its running runs to finish")
        assert code == 130 and "interrupted" in proc.stderr.read().decode()
        wait_for(lambda: not any(alive(p) for p in workers), 10, f"the workers {workers} to end")
        # its worker took the SIGTERM as an interrupt: the run is marked interrupted, not left "running"
        assert {r["status"] for r in Store(out, create=False).runs()} == {"finished", "interrupted"}
    finally:
        stop_session(proc)
