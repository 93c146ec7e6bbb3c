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

from robustal.errors import ConfigError, TrackingWarning
from robustal.storage.schema import StageRecord
from robustal.tracking.tracking import (
    DEFAULT_URI,
    INSTALL_HINT,
    PARENT_TAG,
    TRACKERS,
    MLflowTracker,
    Tracker,
    create_tracker,
    flatten_params,
    run_params,
    run_title,
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
        tracker.log_result(checkpoint=tmp_path / "absent.pt")
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
    code = "import sys, robustal.tracking.tracking; print('mlflow' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_params_are_flattened_with_dotted_keys_and_string_values():
    flat = flatten_params({**PARAMS, "odd key/é:x": 1, "long": "x" * 7000, "pair": (1, "a")})
    assert flat["loop.train.epochs"] == "10" and flat["loop.train.epsilon"] == "0.3"
    assert flat["sizes"] == "[100, 100, 100]" and flat["pair"] == '[1, "a"]'
    assert "loop.train.lr" not in flat and "loop.acquisition_options" not in flat  # unset: left out, never 'None'
    assert flat["odd key/é_x"] == "1"  # characters MLflow refuses become _
    assert len(flat["long"]) == 6000  # MLflow's param value limit
    assert "loop" not in flat and "loop.train" not in flat


#: What the loop stores for a run (ActiveLearningLoop._store_config): the resolved loop settings, and the request
#: ("spec") with ε None meaning "the dataset's".
STORED = {"loop": {"acquisition": "dre", "acquisition_options": {"bins": 10}, "budget": 90, "initial": 30,
                   "seed": 3, "train": {"mode": "pgd", "epochs": 1, "epsilon": 0.2, "step_size": None,
                                        "augment": []},
                   "eval_attack": {"name": "pgd", "epsilon": 0.2, "steps": 2}},
          "model": "SmallCNN", "model_name": "small-cnn", "pool": 1297, "oracle": "dataset",
          "dataset": "/data/pets", "data_fingerprint": "4f82",
          "spec": {"dataset": "/data/pets", "model": "small-cnn", "eval_steps": 2, "eval_attack": "pgd",
                   "acquisition_label": None, "image_size": 32, "channels": 3,
                   "loop": {"acquisition": "dre", "train": {"mode": "pgd", "epochs": 1, "epsilon": None}}}}


def test_run_params_give_each_setting_once_with_the_value_the_run_used():
    params = run_params(STORED)
    assert not [k for k in params if k.startswith("spec")]  # the request duplicated the loop settings
    assert "None" not in params.values() and "[]" not in params.values()
    assert params["loop.train.epsilon"] == "0.2"  # resolved: the request said None (the dataset's)
    assert params["loop.acquisition_options.bins"] == "10" and params["loop.eval_attack.steps"] == "2"
    assert params["model"] == "small-cnn" and "model_name" not in params  # robustal's name, once
    assert params["image_size"] == "32" and params["channels"] == "3"  # only the request has them
    values = [k.rsplit(".", 1)[-1] for k in params]
    assert len(params) == len(set(params)) and values.count("epochs") == 1


def test_run_title_replaces_robustal_default_names():
    assert run_title("digits-small-cnn-pgd-dre-s3", STORED) == "digits-small-cnn-pgd-dre-s3"
    assert run_title("run", STORED) == "pets-small-cnn-pgd-dre-s3"
    assert run_title("label", {**STORED, "project": "birds"}) == "birds-small-cnn-pgd-dre-s3"
    variant = {**STORED, "acquisition_label": "dre-proportional"}
    assert run_title("run", variant) == "pets-small-cnn-pgd-dre-proportional-s3"


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

    from robustal.tracking.tracking_store import loggers_kept

    with loggers_kept():
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
    assert run.data.params == run_params(many) and len(run.data.params) > 150
    assert run.data.params["loop.train.epochs"] == "10" and "loop.train.lr" not in run.data.params
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


def test_a_run_without_a_results_folder_is_a_new_mlflow_run_each_time(uri):
    first = create_tracker("mlflow", uri=uri)
    first.start("run", PARAMS)  # robustal run without --out: nothing to resume from
    first.log_stage(_stage(0, 0.5))
    first.finish("finished")
    again = create_tracker("mlflow", uri=uri)
    again.start("run", PARAMS)
    again.log_stage(_stage(0, 0.25))
    assert again.run_id != first.run_id and _history(uri, again.run_id, "clean") == [(100, 0.25)]


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


def test_a_nested_run_names_its_parent_and_keeps_it_on_resume(uri):
    parent = create_tracker("mlflow", uri=uri)
    parent.start("the study", {}, {"robustal.out": "/abs/study"})
    child = parent.nested(parent.run_id)
    child.start("r", PARAMS, TAGS)
    assert _client(uri).get_run(child.run_id).data.tags[PARENT_TAG] == parent.run_id
    child.finish("interrupted")
    again = parent.nested(parent.run_id)
    again.start("r", PARAMS, TAGS)  # found by robustal's tags, not by its name
    assert again.run_id == child.run_id and len(_runs(uri)) == 2


def test_a_finished_run_is_left_untouched(uri, tmp_path):
    first = create_tracker("mlflow", uri=uri)
    first.start("r", PARAMS, TAGS)
    for s in range(2):
        first.log_stage(_stage(s, 0.5))
    first.finish("finished")
    before = _client(uri).get_run(first.run_id)
    (tmp_path / "stage-001.pt").write_bytes(b"checkpoint")
    again = create_tracker("mlflow", uri=uri)
    again.start("r", PARAMS, TAGS)
    for s in range(2):  # a re-run reports the stored stages again
        again.log_stage(_stage(s, 0.5))
    again.log_result(checkpoint=tmp_path / "stage-001.pt")
    again.finish("finished")
    after = _client(uri).get_run(first.run_id)
    assert (after.info.status, after.info.end_time) == (before.info.status, before.info.end_time)
    assert after.data.params == before.data.params and _client(uri).list_artifacts(first.run_id) == []


def test_new_stages_reopen_a_finished_run(uri):
    first = create_tracker("mlflow", uri=uri)
    first.start("r", PARAMS, TAGS)
    first.log_stage(_stage(0, 0.5))
    first.finish("finished")
    again = create_tracker("mlflow", uri=uri)
    again.start("r", PARAMS, TAGS)
    again.log_stage(_stage(1, 0.75))
    assert _client(uri).get_run(first.run_id).info.status == "RUNNING"
    again.finish("finished")
    assert _history(uri, first.run_id, "clean") == [(100, 0.5), (200, 0.75)]


def test_the_result_is_the_final_checkpoint_and_a_loadable_model(uri, tmp_path, monkeypatch):
    import mlflow.pytorch
    import torch

    from robustal.models import create_model

    model = create_model("small-cnn", num_classes=10, in_channels=1, image_size=8).eval()
    checkpoint = tmp_path / "stage-002.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    tracker.log_result(model=model, checkpoint=checkpoint, example=images)
    client = _client(uri)
    assert [a.path for a in client.list_artifacts(tracker.run_id, "checkpoint")] == ["checkpoint/stage-002.pt"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # where MLflow's loader looks for runs:/
    loaded = mlflow.pytorch.load_model(f"runs:/{tracker.run_id}/model")
    x = images.float() / 255
    assert torch.allclose(loaded(x), model(x), atol=1e-5)  # any batch size, not only the example's

    plain = create_tracker("mlflow", uri=uri, log_model=False)
    plain.start("r2", PARAMS, TAGS)
    plain.log_result(model=model, checkpoint=checkpoint, example=images)
    assert [a.path for a in client.list_artifacts(plain.run_id)] == ["checkpoint"]


def test_a_model_that_cannot_be_exported_is_warned_about_and_the_run_still_finishes(uri, tmp_path):
    import torch
    from torch import nn

    class DataDependent(nn.Module):  # torch.export cannot trace a branch on the data
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            return out if out.sum() > 0 else -out

    checkpoint = tmp_path / "stage-000.pt"
    checkpoint.write_bytes(b"checkpoint")
    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    with pytest.warns(TrackingWarning, match="cannot log the model .*checkpoint is attached all the same"):
        tracker.log_result(model=DataDependent(), checkpoint=checkpoint,
                           example=torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    tracker.finish("finished")
    assert _client(uri).get_run(tracker.run_id).info.status == "FINISHED"
    assert [a.path for a in _client(uri).list_artifacts(tracker.run_id)] == ["checkpoint"]


def test_a_logging_failure_warns_once_and_the_run_goes_on(uri):
    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    tracker.log_stage(_stage(0, 0.5))
    _client(uri).delete_run(tracker.run_id)  # MLflow now refuses anything logged to it
    with pytest.warns(TrackingWarning, match="cannot log stage 1 .*running the same command again") as caught:
        tracker.log_stage(_stage(1, 0.75))
        tracker.log_stage(_stage(2, 0.875))
        tracker.finish("finished")
    assert len(caught) == 1


def test_a_worker_tracker_warns_where_a_strict_one_refuses(uri):
    create_tracker("mlflow", uri=uri).start("r", PARAMS, TAGS)
    changed = {**PARAMS, "model": "VGG8"}
    with pytest.raises(ConfigError, match="holds other settings"):
        MLflowTracker(uri).start("r", changed, TAGS)
    worker = MLflowTracker(uri, strict=False)
    with pytest.warns(TrackingWarning, match="holds other settings"):
        worker.start("r", changed, TAGS)
    worker.log_stage(_stage(0, 0.5))  # nothing more is tried
    worker.finish("finished")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused_in(seconds: float, match: str, **kw) -> str:
    import time

    started = time.perf_counter()
    with pytest.raises(ConfigError, match=match) as err:
        MLflowTracker(**kw)
    assert time.perf_counter() - started < seconds
    return str(err.value)


def test_an_unreachable_server_is_refused_at_once():
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    message = _refused_in(10, "connection refused", uri=uri, source="--tracking-uri")
    assert repr(uri) in message and "(from --tracking-uri)" in message and "mlflow server" in message


def test_a_server_that_never_answers_is_refused_within_seconds():
    import socket

    pytest.importorskip("mlflow")
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        _refused_in(10, "no answer within 4 s", uri=uri, source="uri in the [tracking] table of s.toml")


def test_an_unusable_sqlite_file_is_refused_at_once(tmp_path, template_db):
    folder = tmp_path / "runs.db"
    folder.mkdir()
    message = _refused_in(10, "is a folder", uri=f"sqlite:///{folder}")  # MLflow alone: 100 s of retries
    assert DEFAULT_URI in message


def test_the_uri_defaults_to_mlflow_tracking_uri(monkeypatch, uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = create_tracker("mlflow")
    assert tracker.uri == uri and tracker.source == "MLFLOW_TRACKING_URI"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_free_port()}")
    message = _refused_in(10, "connection refused")
    assert "(from MLFLOW_TRACKING_URI)" in message and "unset MLFLOW_TRACKING_URI" in message


# --- through the command line -----------------------------------------------------------------------------------

def test_run_command_mirrors_its_stages_into_mlflow(uri, tmp_path, capsys):
    from robustal.cli import main
    from robustal.storage.store import Store

    argv = ["run", "--dataset", "digits", "--model", "small-cnn", "--acquisition", "entropy", "--initial", "30",
            "--per-stage", "30", "--budget", "90", "--epochs", "1", "--eval-steps", "2", "--attack-steps", "1",
            "--no-progress", "--out", str(tmp_path / "out"), "--tracking-uri", uri]  # implies --track mlflow
    assert main(argv) == 0
    assert "--tracking-uri implies --track mlflow" in capsys.readouterr().err
    (run,) = _runs(uri)
    assert main(argv) == 0  # finished: nothing runs, nothing is logged, the MLflow run is left as it was
    (again,) = _runs(uri)
    assert (again.info.status, again.info.end_time) == ("FINISHED", run.info.end_time)
    name = "digits-small-cnn-pgd-entropy-s0"  # the run's name in the store too, not 'run' (issue 27.7)
    assert run.data.tags["robustal.run"] == name and run.info.run_name == name
    assert run.data.params["loop.acquisition"] == "entropy" and run.data.params["loop.train.epochs"] == "1"
    assert run.data.params["loop.train.epsilon"] == "0.2" and "None" not in run.data.params.values()
    stages = Store(tmp_path / "out").stages(name)
    assert _history(uri, run.info.run_id, "clean") == [(s.labeled, s.clean) for s in stages]
    client = _client(uri)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")] == ["checkpoint/stage-002.pt"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/MLmodel"}
    # the checkpoint MLflow keeps is evaluable where it is downloaded, and reproduces the stored accuracy (27.1)
    import json

    ckpt = client.download_artifacts(run.info.run_id, "checkpoint/stage-002.pt", str(tmp_path / "download"))
    capsys.readouterr()
    assert main(["evaluate", "--model", ckpt, "--json", "--device", "cpu"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["clean"], got["robust"]) == (stages[-1].clean, stages[-1].robust)


def test_tracking_options_that_contradict_are_refused(tmp_path, capsys):
    from robustal.cli import main

    argv = ["run", "--dataset", "digits", "--budget", "60", "--initial", "30", "--per-stage", "30",
            "--out", str(tmp_path / "out"), "--track", "none", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    assert main(argv) == 2
    assert "--tracking-uri has no effect with --track none" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_mlflow_tracking_uri_alone_does_not_turn_tracking_on(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from robustal.cli.common import tracker_from

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    args = SimpleNamespace(track=None, tracking_uri=None, tracking_experiment=None, log_model=None)
    assert type(tracker_from(args)) is Tracker and list(tmp_path.iterdir()) == []


def test_a_database_error_mid_run_prints_no_traceback_and_names_the_cause(uri, capfd):
    """MLflow logs SQLAlchemy's errors with their traceback before raising them (issue 28.4): the terminal gets
    robustal's one-line warning, which names the database's own reason."""
    import sqlite3

    tracker = create_tracker("mlflow", uri=uri)
    tracker.start("r", PARAMS, TAGS)
    tracker.log_stage(_stage(0, 0.5))
    con = sqlite3.connect(uri.removeprefix("sqlite:///"))
    con.execute("DROP TABLE latest_metrics")  # the store breaks under the run, as an unwritable file would
    con.execute("DROP TABLE metrics")
    con.commit()
    con.close()
    capfd.readouterr()
    with pytest.warns(TrackingWarning, match=r"cannot log stage 1 \(the database refuses it \(no such table"):
        tracker.log_stage(_stage(1, 0.75))
    err = capfd.readouterr().err
    assert "Traceback" not in err and "SQLAlchemy" not in err, err
