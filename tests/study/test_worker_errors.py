"""A robustal error raised on a Ray worker reaches the terminal as robustal's one-line message, not as Ray's text
with the worker's traceback (issue 28.4)."""

from __future__ import annotations

import types

import pytest

from robustal.errors import ConfigError, DataError, UnknownNameError
from robustal.studies.executors import _ray_result


class FakeTaskError(Exception):
    """Ray's RayTaskError: its text is the worker's traceback; ``cause`` the exception raised there."""

    def __init__(self, cause):
        super().__init__("ray::_ray_task() (pid=1, ip=127.0.0.1)\nTraceback (most recent call last):\n  File ...")
        self.cause = cause


def fake_ray(error: Exception):
    def get(ref):
        raise error

    return types.SimpleNamespace(get=get, exceptions=types.SimpleNamespace(RayTaskError=FakeTaskError))


@pytest.mark.parametrize("cause, kind", [(DataError("digits.npz: x_train holds no images."), DataError),
                                         (UnknownNameError("attack", "pgdd", ["pgd", "fgsm"]), ConfigError)])
def test_a_robustal_error_on_a_worker_is_raised_as_robustals_message(cause, kind):
    with pytest.raises(kind) as e:
        _ray_result(fake_ray(FakeTaskError(cause)), object(), "digits-small-cnn-standard-random-s0")
    assert str(e.value) == f"run digits-small-cnn-standard-random-s0 (on a Ray worker): {cause}"
    assert "Traceback" not in str(e.value)


def test_another_error_on_a_worker_is_left_as_ray_raised_it():
    error = FakeTaskError(ZeroDivisionError("a bug"))
    with pytest.raises(FakeTaskError) as e:
        _ray_result(fake_ray(error), object(), "run")
    assert e.value is error


def test_a_local_workers_warnings_are_one_plain_line():
    """A study's worker process shows robustal's warnings as the CLI does, not in Python's file:line form."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os, warnings\nfrom robustal.studies.executors import _worker_init\n"
            "from robustal.errors import ChanceLevelWarning\n_worker_init(os.getppid())\n"
            "warnings.warn(ChanceLevelWarning('stage 1 is at chance level'))\nwarnings.warn('a library note')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    err = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stderr
    lines = err.splitlines()
    assert lines[0] == "robustal study: warning: stage 1 is at chance level"
    assert "UserWarning: a library note" in err  # other warnings as Python shows them
