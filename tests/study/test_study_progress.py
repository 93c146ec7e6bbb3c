"""A study's progress tells the truth (issue 27.4): it counts stages, not runs, names the runs training now (not a
run left 'running' by an earlier, killed command), and writes no escape codes where stderr is not a terminal."""

from __future__ import annotations

import time

import torch

from robustal.cli import study_progress
from robustal.cli.common import progress_bar
from robustal.cli.study_progress import StudyProgress
from robustal.loop import LoopConfig
from robustal.loop.experiment import RunSpec
from robustal.storage.schema import StageRecord
from robustal.storage.store import Store
from robustal.studies.executors import RunTask


def _task(name: str, budget: int) -> RunTask:
    return RunTask(name, RunSpec("digits", LoopConfig(initial=20, per_stage=20, budget=budget)))


def _stage(store: Store, name: str, stage: int) -> None:
    store.add_stage(name, StageRecord(stage=stage, labeled=20 * (stage + 1), clean=0.5, robust=0.1),
                    torch.arange(20 * stage, 20 * stage + 20), None)


def test_the_bar_counts_stages_and_names_only_the_runs_training_now(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study_progress, "LINE_SECONDS", 0.0)
    store = Store(tmp_path)
    store.start_run("killed-earlier", {}, 0)  # left 'running' by a command that was killed: not training now
    _stage(store, "killed-earlier", 0)
    time.sleep(0.01)
    tasks = [_task("killed-earlier", 60), _task("now", 40), _task("later", 40)]
    progress = StudyProgress(tmp_path, tasks, poll=3600)  # capsys: stderr is no terminal
    assert (progress.total, progress.done, progress.running) == (3 + 2 + 2, 1, [])
    store.start_run("now", {}, 0)
    _stage(store, "now", 0)
    progress.refresh()
    assert (progress.done, progress.running) == (2, ["now"])
    progress.close()
    err = capsys.readouterr().err
    assert "2/7 stages; now: now" in err  # a plain line instead of the bar
    assert "\x1b[" not in err and "\r" not in err


def test_no_bar_and_no_escape_codes_when_stderr_is_not_a_terminal(capsys):
    bar = progress_bar(3, "stages")
    bar.update(2)
    bar.close()
    assert bar.disable and capsys.readouterr().err == ""
