"""A study in MLflow, against a real SQLite tracking store: one run for the study, its runs nested under it, named,
logged live by the worker processes that execute them, with their final checkpoint and model; a resumed run
continues its MLflow run; a re-run of a finished study writes nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustal.cli import main
from robustal.storage.store import Store
from robustal.tracking.tracking import OUT_TAG, PARENT_TAG, RUN_TAG, MLflowTracker

pytestmark = pytest.mark.filterwarnings("ignore::robustal.errors.ChanceLevelWarning")

RUNS = ("digits-small-cnn-standard-random-s0", "digits-small-cnn-standard-entropy-s0")


def _by_name(client, experiment="studies"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {r.info.run_name: r for r in runs}


def test_a_study_nests_named_runs_logged_live_and_a_rerun_changes_nothing(make_study, tmp_path, mlflow_uri,
                                                                          mlflow_client, capsys):
    from robustal.loop.experiment import run_experiment
    from robustal.studies.study import Study

    path = make_study(acquisitions=("random", "entropy"))
    path.write_text(path.read_text() + f'\n[tracking]\nuri = "{mlflow_uri}"\nexperiment = "studies"\n')
    out = tmp_path / "out"
    random_task = Study.load(path).tasks()[0]

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # one run is interrupted after its first stage, tracked on its own
        run_experiment(random_task.spec, out, name=random_task.name, on_stage=stop,
                       tracker=MLflowTracker(mlflow_uri, "studies"))
    (interrupted,) = _by_name(mlflow_client).values()
    assert interrupted.info.status == "KILLED"

    assert main(["study", str(path), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    runs = _by_name(mlflow_client)
    assert set(runs) == {"tiny", *RUNS}
    study = runs["tiny"]
    assert study.info.status == "FINISHED" and study.data.tags["robustal.study"] == "tiny"
    assert runs[random_task.name].info.run_id == interrupted.info.run_id  # the resumed run continues its MLflow run
    store = Store(out)
    for name in RUNS:
        run = runs[name]
        assert run.info.status == "FINISHED" and run.data.tags[PARENT_TAG] == study.info.run_id
        assert run.data.tags[RUN_TAG] == name and run.data.tags[OUT_TAG] == str(out.resolve())
        history = sorted(mlflow_client.get_metric_history(run.info.run_id, "clean"), key=lambda m: m.step)
        stages = store.stages(name)
        assert [(m.step, m.value) for m in history] == [(s.labeled, s.clean) for s in stages]  # each step once
        # live: each stage was logged when it finished, before the next one trained (not all at the end)
        for before, after, stage in zip(history, history[1:], stages[1:], strict=False):
            assert after.timestamp - before.timestamp >= 1000 * stage.train_seconds - 5
        artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
        assert artifacts == {"checkpoint", "model"}
        assert [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "checkpoint")] == [
            f"checkpoint/stage-{stages[-1].stage:03d}.pt"]
    assert {a.path for a in mlflow_client.list_artifacts(study.info.run_id)} == {"tiny.toml", "report"}
    # the study's own run: its settings as params, its summary as metrics, the versions as tags (issue 27.7)
    import robustal

    assert study.data.params["grid.acquisitions"] == '["random", "entropy"]'
    assert study.data.params["loop.budget"] == "90" and study.data.params["train.epochs"] == "1"
    assert study.data.tags["robustal.version"] == robustal.__version__ and "torch.version" in study.data.tags
    for name in RUNS:
        cell = "digits.small-cnn.standard." + name.split("-")[-2]
        assert study.data.metrics[f"final_robust.{cell}"] == store.stages(name)[-1].robust
        assert study.data.metrics[f"final_clean.{cell}"] == store.stages(name)[-1].clean
    assert study.data.metrics["runs_finished"] == 2
    assert "report/report.md" in {a.path for a in mlflow_client.list_artifacts(study.info.run_id, "report")}

    capsys.readouterr()
    assert main(["study", str(path), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    again = _by_name(mlflow_client)
    for name, run in runs.items():  # end times, params and artifacts as they were
        assert (again[name].info.status, again[name].info.end_time) == (run.info.status, run.info.end_time)
        assert again[name].data.params == run.data.params
    assert "attached" not in capsys.readouterr().err


def test_the_study_file_uri_is_named_when_it_cannot_be_used(make_study, tmp_path, capsys):
    pytest.importorskip("mlflow")
    folder = tmp_path / "runs.db"
    folder.mkdir()
    path = make_study()
    path.write_text(path.read_text() + f'\n[tracking]\nuri = "sqlite:///{folder}"\n')  # kind implied
    assert main(["study", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"(from uri in the [tracking] table of {path})" in err and "is a folder" in err
    assert not (tmp_path / "out").exists()


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """``mlflow server`` on a free localhost port, in its own process group (stopped by signalling that group)."""
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder}/server.db", "--artifacts-destination", str(folder / "artifacts"),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runner: starts faster
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(folder / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        log.close()


@pytest.mark.slow  # the server takes 15-30 s to start here
def test_a_study_on_a_real_mlflow_server_through_its_rest_api(make_study, tmp_path):
    """What a person browsing the server sees: the study's run, its runs nested, named, with live curves and the
    checkpoint artifact, read through MLflow's REST API."""
    pytest.importorskip("mlflow")
    import requests

    folder = tmp_path / "server"
    folder.mkdir()
    path = make_study(acquisitions=("random", "entropy"))
    with mlflow_server(folder) as url:
        argv = ["study", str(path), "--out", str(tmp_path / "out"), "--workers", "2", "--no-progress",
                "--tracking-uri", url, "--tracking-experiment", "served"]
        assert main(argv) == 0
        api = f"{url}/api/2.0/mlflow"
        experiment = requests.get(f"{api}/experiments/get-by-name", params={"experiment_name": "served"},
                                  timeout=10).json()["experiment"]["experiment_id"]
        found = requests.post(f"{api}/runs/search", json={"experiment_ids": [experiment]}, timeout=10).json()["runs"]
        runs = {r["info"]["run_name"]: r for r in found}
        assert set(runs) == {"tiny", *RUNS}
        parent = runs["tiny"]["info"]["run_id"]
        store = Store(tmp_path / "out")
        for name in RUNS:
            info, tags = runs[name]["info"], {t["key"]: t["value"] for t in runs[name]["data"]["tags"]}
            assert info["status"] == "FINISHED" and tags[PARENT_TAG] == parent and tags[RUN_TAG] == name
            history = requests.get(f"{api}/metrics/get-history", params={"run_id": info["run_id"],
                                                                          "metric_key": "clean"}, timeout=10).json()
            history = sorted(history["metrics"], key=lambda m: m["step"])
            stages = store.stages(name)
            assert [(m["step"], m["value"]) for m in history] == [(s.labeled, s.clean) for s in stages]
            for before, after, stage in zip(history, history[1:], stages[1:], strict=False):  # logged live
                assert after["timestamp"] - before["timestamp"] >= 1000 * stage.train_seconds - 5
            files = requests.get(f"{api}/artifacts/list", params={"run_id": info["run_id"], "path": "checkpoint"},
                                 timeout=10).json()["files"]
            assert [f["path"] for f in files] == ["checkpoint/stage-002.pt"] and files[0]["file_size"] > 0
        report = requests.get(f"{api}/artifacts/list", params={"run_id": parent, "path": "report"},
                              timeout=10).json()["files"]
        assert "report/report.md" in {f["path"] for f in report}
