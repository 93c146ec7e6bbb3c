"""Experiment tracking with MLflow, against a real local SQLite tracking store (no mocks).

A new MLflow SQLite file takes several seconds to create (MLflow runs its schema migrations), so one is made per
module and each test works on a copy of it in its own ``tmp_path``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from robustal.errors import ConfigError
from robustal.store import StageRecord
from robustal.tracking import (
    DEFAULT_URI,
    INSTALL_HINT,
    TRACKERS,
    MLflowTracker,
    Tracker,
    create_tracker,
    flatten_params,
)

PARAMS = {"loop": {"acquisition": "dre", "acquisition_options": {}, "budget": 300,
                   "train": {"mode": "pgd", "epochs": 10, "epsilon": 0.3, "lr": None},
                   "eval_attack": {"name": "pgd", "steps": 50}},
          "dataset": "mnist", "model": "LeNet5", "sizes": [100, 100, 100], "device": "cpu"}
TAGS = {"robustal.out": "/abs/results/folder"}


def _stage(stage: int, clean: float, robust: float | None = 0.25, at_chance: bool = False) -> StageRecord:
    return StageRecord(stage=stage, labeled=100 * (stage + 1), clean=clean, robust=robust, train_seconds=1.5,
                       select_seconds=0.25, eval_seconds=0.5, best_epoch=3, val_score=0.75, val_clean=0.8,
                       at_chance=at_chance)


# --- without MLflow ---------------------------------------------------------------------------------------------

def test_none_tracker_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for tracker in (create_tracker(), create_tracker("none", uri="sqlite:///ignored.db")):
        assert type(tracker) is Tracker
        tracker.start("run", PARAMS, TAGS)
        tracker.log_stage(_stage(0, 0.5))
        tracker.log_artifact(tmp_path / "absent.md")
        tracker.finish("finished")
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind_lists_the_trackers():
    with pytest.raises(ConfigError, match="Did you mean 'mlflow'") as err:
        create_tracker("mlfow")
    assert ", ".join(TRACKERS) in str(err.value)


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError) as err:
        create_tracker("mlflow", uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert str(err.value) == INSTALL_HINT
    assert INSTALL_HINT == "Tracking with MLflow needs the optional package: pip install 'robustal[mlflow]'"
    assert not (tmp_path / "mlflow.db").exists()


def test_importing_the_module_does_not_import_mlflow():
    code = "import sys, robustal.tracking; print('mlflow' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_params_are_flattened_with_dotted_keys_and_string_values():
    flat = flatten_params({**PARAMS, "odd key/é:x": 1, "long": "x" * 7000, "pair": (1, "a")})
    assert flat["loop.train.epochs"] == "10" and flat["loop.train.epsilon"] == "0.3"
    assert flat["loop.train.lr"] == "None" and flat["sizes"] == "[100, 100, 100]" and flat["pair"] == '[1, "a"]'
    assert flat["loop.acquisition_options"] == "{}"  # an empty dict is kept, not dropped
    assert flat["odd key/é_x"] == "1"  # characters MLflow refuses become _
    assert len(flat["long"]) == 6000  # MLflow's param value limit
    assert "loop" not in flat and "loop.train" not in flat


# --- with a real MLflow store ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template_db(tmp_path_factory):
    """A migrated, empty MLflow SQLite file (created once: MLflow's migrations take several seconds)."""
    mlflow = pytest.importorskip("mlflow", reason="the MLflow tests need the extra: pip install 'robustal[mlflow]'")
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    probe = logging.getLogger("robustal.tests.probe")
    MLflowTracker(uri=f"sqlite:///{path}", experiment="template")  # migrates the new file
    assert not probe.disabled and not logging.getLogger("robustal").disabled  # alembic's fileConfig undone
    del mlflow
    return path


@pytest.fixture
def uri(template_db, tmp_path):
    shutil.copy(template_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path}/mlflow.db"


def _client(uri):
    """A plain MLflow client on ``uri``, opened the way the tracker opens one (alembic's logging changes undone)."""
    import mlflow

    from robustal.tracking import _loggers_kept

    with _loggers_kept():
        client = mlflow.MlflowClient(tracking_uri=uri)
        client.search_experiments()  # the store (and its migrations check) opens on first use
    return client


def _runs(uri, experiment="robustal"):
    client = _client(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _history(uri, run_id, key):
    return sorted((m.step, m.value) for m in _client(uri).get_metric_history(run_id, key))


def test_start_logs_flattened_params_tags_and_a_running_run(uri):
    many = {**PARAMS, "extra": {f"k{i:03d}": i for i in range(150)}}  # more params than one MLflow batch holds
    tracker = create_tracker("mlflow", uri=uri)
    assert isinstance(tracker, MLflowTracker)
    tracker.start("mnist-dre", many, TAGS)
    (run,) = _runs(uri)
    assert run.info.run_id == tracker.run_id and run.info.run_name == "mnist-dre" and run.info.status == "RUNNING"
    assert run.data.params == flatten_params(many) and len(run.data.params) > 150
    assert run.data.params["loop.train.epochs"] == "10" and run.data.params["loop.train.lr"] == "None"
    assert run.data.tags["robustal.run"] == "mnist-dre" and run.data.tags["robustal.out"] == TAGS["robustal.out"]


def test_stage_metrics_use_the_label_count_as_step(uri):
    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    tracker.log_stage(_stage(0, 0.5, robust=None, at_chance=True))
    tracker.log_stage(_stage(1, 0.75))
    old = SimpleNamespace(stage=2, labeled=300, clean=0.875, robust=0.5, train_seconds=2.0, select_seconds=1.0,
                          eval_seconds=0.5, val_score=0.625)  # a record from before at_chance existed
    tracker.log_stage(old)
    rid = tracker.run_id
    assert _history(uri, rid, "clean") == [(100, 0.5), (200, 0.75), (300, 0.875)]
    assert _history(uri, rid, "robust") == [(200, 0.25), (300, 0.5)]  # None is not logged
    assert _history(uri, rid, "at_chance") == [(100, 1.0), (200, 0.0), (300, 0.0)]
    assert _history(uri, rid, "val_score") == [(100, 0.75), (200, 0.75), (300, 0.625)]
    assert _history(uri, rid, "train_seconds")[0] == (100, 1.5)
    assert [s for s, _ in _history(uri, rid, "select_seconds")] == [100, 200, 300]
    assert [s for s, _ in _history(uri, rid, "eval_seconds")] == [100, 200, 300]


def test_resume_continues_the_same_run_without_duplicates(uri):
    first = create_tracker("mlflow", uri=uri)
    first.start("r", PARAMS, TAGS)
    for s in range(2):
        first.log_stage(_stage(s, 0.5 + s / 10))
    first.finish("interrupted")
    assert _client(uri).get_run(first.run_id).info.status == "KILLED"

    again = create_tracker("mlflow", uri=uri)  # a new process: a new tracker object
    again.start("r", {**PARAMS, "device": "cuda"}, TAGS)  # the device may change on resume, as in the store
    assert again.run_id == first.run_id
    assert _client(uri).get_run(again.run_id).info.status == "RUNNING"
    for s in range(3):  # the loop reports the finished stages again, then a new one
        again.log_stage(_stage(s, 0.5 + s / 10))
    again.finish("finished")

    (run,) = _runs(uri)
    assert run.info.status == "FINISHED" and run.data.params["device"] == "cpu"
    for key in ("clean", "robust", "at_chance", "val_score", "train_seconds", "select_seconds", "eval_seconds"):
        assert [s for s, _ in _history(uri, run.info.run_id, key)] == [100, 200, 300], key

    other = create_tracker("mlflow", uri=uri)  # the same run name in another results folder is another run
    other.start("r", PARAMS, {"robustal.out": "/elsewhere"})
    assert other.run_id != first.run_id and len(_runs(uri)) == 2


def test_resume_finds_a_run_whose_tags_hold_both_quote_characters(uri):
    tags = {"robustal.out": """/runs/it's "here\""""}
    first = create_tracker("mlflow", uri=uri)
    first.start("r", PARAMS, tags)
    again = create_tracker("mlflow", uri=uri)
    again.start("r", PARAMS, tags)
    assert again.run_id == first.run_id and len(_runs(uri)) == 1


def test_resume_with_other_settings_is_refused(uri):
    create_tracker("mlflow", uri=uri).start("r", PARAMS, TAGS)
    changed = {**PARAMS, "loop": {**PARAMS["loop"], "train": {**PARAMS["loop"]["train"], "epochs": 5}}}
    with pytest.raises(ConfigError, match="holds other settings: loop.train.epochs: stored '10', now '5'"):
        create_tracker("mlflow", uri=uri).start("r", changed, TAGS)
    (run,) = _runs(uri)
    assert run.data.params["loop.train.epochs"] == "10"


def test_artifacts_file_and_folder(uri, tmp_path):
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "curve.svg").write_text("<svg/>")
    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    tracker.log_artifact(report)
    tracker.log_artifact(figures)
    client = _client(uri)
    assert {f.path for f in client.list_artifacts(tracker.run_id)} == {"report.md", "figures"}
    assert [f.path for f in client.list_artifacts(tracker.run_id, "figures")] == ["figures/curve.svg"]
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the working directory
    with pytest.raises(ConfigError, match="no such file or folder"):
        tracker.log_artifact(tmp_path / "absent.md")


@pytest.mark.parametrize(("status", "mlflow_status"), [("finished", "FINISHED"), ("interrupted", "KILLED"),
                                                      ("failed", "FAILED")])
def test_finish_sets_the_status(uri, status, mlflow_status):
    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    tracker.finish(status)
    info = _client(uri).get_run(tracker.run_id).info
    assert info.status == mlflow_status and info.end_time is not None


def test_misuse_is_reported(uri):
    tracker = create_tracker("mlflow", uri=uri)
    with pytest.raises(RuntimeError, match="call start"):
        tracker.log_stage(_stage(0, 0.5))
    tracker.start("r", PARAMS, TAGS)
    with pytest.raises(ConfigError, match="valid: finished, interrupted, failed"):
        tracker.finish("done")


def test_bad_uri_names_the_option(tmp_path, template_db):
    (tmp_path / "file.txt").write_text("not a folder, not a database")
    for bad in (f"sqlite:///{tmp_path}/file.txt/x.db", f"sqlite:///{tmp_path}/file.txt", str(tmp_path / "mlruns")):
        with pytest.raises(ConfigError, match="--tracking-uri") as err:
            create_tracker("mlflow", uri=bad)
        assert repr(bad) in str(err.value) and DEFAULT_URI in str(err.value)


def test_deleted_experiment_is_reported(uri):
    tracker = create_tracker("mlflow", uri=uri, experiment="old")
    _client(uri).delete_experiment(tracker.experiment_id)
    with pytest.raises(ConfigError, match="experiment 'old' .* is deleted"):
        create_tracker("mlflow", uri=uri, experiment="old")


def test_mlflow_info_logs_are_quiet_unless_robustal_debugs(uri):
    create_tracker("mlflow", uri=uri)
    (handler, *_) = logging.getLogger("mlflow").handlers
    info = logging.LogRecord("mlflow.store.db.utils", logging.INFO, __file__, 1, "Updating database tables", (), None)
    warning = logging.LogRecord("mlflow", logging.WARNING, __file__, 1, "something", (), None)
    assert not handler.filter(info) and handler.filter(warning)
    robustal_logger = logging.getLogger("robustal")
    level = robustal_logger.level
    robustal_logger.setLevel(logging.DEBUG)
    try:
        assert handler.filter(info)
    finally:
        robustal_logger.setLevel(level)


# --- through the command line -----------------------------------------------------------------------------------

def test_run_command_mirrors_its_stages_into_mlflow(uri, tmp_path, capsys):
    from robustal.cli import main

    argv = ["run", "--dataset", "digits", "--model", "small-cnn", "--acquisition", "entropy", "--initial", "30",
            "--per-stage", "30", "--budget", "90", "--epochs", "1", "--eval-steps", "2", "--attack-steps", "1",
            "--no-progress", "--out", str(tmp_path / "out"), "--track", "mlflow", "--tracking-uri", uri]
    assert main(argv) == 0
    assert main(argv) == 0  # finished: nothing runs, nothing is logged twice
    (run,) = _runs(uri)
    assert run.data.tags["robustal.run"] == "run" and run.info.status == "FINISHED"
    assert run.data.params["loop.acquisition"] == "entropy" and run.data.params["loop.train.epochs"] == "1"
    history = _client(uri).get_metric_history(run.info.run_id, "clean")
    from robustal.store import Store

    stages = Store(tmp_path / "out").stages("run")
    assert [(m.step, m.value) for m in history] == [(s.labeled, s.clean) for s in stages]


def test_a_study_mirrors_each_run_and_attaches_its_report(uri, tmp_path, capsys):
    from robustal.cli import main

    study = tmp_path / "s.toml"
    study.write_text(f"""
[study]
name = "tracked"
[grid]
datasets = ["digits"]
models = ["small-cnn"]
training = ["standard"]
acquisitions = ["random", "entropy"]
seeds = [0]
[loop]
initial = 30
per_stage = 30
budget = 60
eval_steps = 0
[train]
epochs = 1
[tracking]
kind = "mlflow"
uri = "{uri}"
experiment = "studies"
""")
    assert main(["study", str(study), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    runs = {r.data.tags["robustal.run"]: r for r in _runs(uri, "studies")}
    assert set(runs) == {"digits-small-cnn-standard-random-s0", "digits-small-cnn-standard-entropy-s0",
                         "study tracked"}
    client = _client(uri)
    report = runs["study tracked"]
    names = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert "report/report.md" in names
    steps = [m.step for m in client.get_metric_history(runs["digits-small-cnn-standard-random-s0"].info.run_id,
                                                       "clean")]
    assert steps == [30, 60]
