"""Tiny digits studies shared by the study and report tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from study_files import TINY_LOOP, TINY_TRAIN, grid_toml, settings_toml, study_toml

#: The loop and training settings of every tiny study: three stages of 30 digits, one cheap epoch each.
TINY_SETTINGS = settings_toml({**TINY_LOOP, "budget": 90, "eval_steps": 2},
                              {**TINY_TRAIN, "attack_steps": 2, "epsilon_warmup": 0})


def write_tiny(folder: Path, training=("standard",), acquisitions=("random", "dre"), seeds=(0,)) -> Path:
    """A tiny digits study file in ``folder``."""
    dre = "[acquisition.dre]\nbins = 10\n" if "dre" in acquisitions else ""
    path = folder / "tiny.toml"
    path.write_text(study_toml(grid_toml(acquisitions, training, seeds), settings=TINY_SETTINGS, extra=dre))
    return path


@pytest.fixture(scope="session")
def load_script():
    """``load_script(name)``: the module ``scripts/NAME.py`` (scripts are files, not a package), loaded once."""
    folder = Path(__file__).resolve().parents[2] / "scripts"
    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
            loaded[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded[name])
        return loaded[name]

    return load


@pytest.fixture(scope="session")
def tiny_settings() -> str:
    """The ``[loop]`` and ``[train]`` sections of the tiny studies, for test files that write their own grids."""
    return TINY_SETTINGS


@pytest.fixture
def tiny_study(tmp_path) -> Path:
    return write_tiny(tmp_path)


@pytest.fixture
def make_study(tmp_path):
    """``make_study(training=..., acquisitions=..., seeds=...)`` → the path of a tiny digits study file."""
    return lambda **kw: write_tiny(tmp_path, **kw)


@pytest.fixture(scope="session")
def tiny_writer():
    """:func:`write_tiny` for fixtures of wider scope."""
    return write_tiny


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """A migrated, empty MLflow SQLite file (MLflow's migrations take several seconds: made once, then copied)."""
    pytest.importorskip("mlflow", reason="the MLflow tests need the extra: pip install 'robustal[mlflow]'")
    from robustal.tracking.tracking import MLflowTracker

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MLflowTracker(uri=f"sqlite:///{path}", experiment="template")
    return path


@pytest.fixture
def mlflow_uri(mlflow_template, tmp_path) -> str:
    """A SQLite tracking URI of this test's own copy of :func:`mlflow_template`."""
    import shutil

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def mlflow_client(mlflow_uri):
    """A plain MLflow client on :func:`mlflow_uri` (alembic's logging changes undone)."""
    import mlflow

    from robustal.tracking.tracking_store import loggers_kept

    with loggers_kept():
        client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
        client.search_experiments()
    return client
