"""The Ray executor: a two-run tiny digits study on a local Ray instance; only the driver writes the store."""

from __future__ import annotations

import sys

import pytest

from robustal.errors import ConfigError
from robustal.storage.store import Store
from robustal.studies.executors import run_local, run_ray
from robustal.studies.study import Study


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_runs_through_ray_match_local_runs(make_study, tmp_path, ray_local):
    tasks = Study.load(make_study(acquisitions=("random", "entropy"))).tasks()
    done = []
    results = run_ray(tasks, tmp_path / "ray", on_done=lambda name, stages: done.append(name))
    assert sorted(done) == sorted(t.name for t in tasks)
    store = Store(tmp_path / "ray")
    assert {r["name"]: r["status"] for r in store.runs()} == {t.name: "finished" for t in tasks}
    local = run_local(tasks, tmp_path / "local")
    for t in tasks:
        assert [s.labeled for s in results[t.name]] == [30, 60, 90]
        # the same seeds give the same picks and accuracies wherever a run executes
        assert store.selections(t.name) == Store(tmp_path / "local").selections(t.name)
        assert [(s.clean, s.robust) for s in store.stages(t.name)] == [(s.clean, s.robust) for s in local[t.name]]
        assert store.selection_scores(t.name) == Store(tmp_path / "local").selection_scores(t.name)
        state = store.load_checkpoint(t.name, 2)  # the final checkpoint came back to the driver
        assert state["labeled"].tolist() == [i for s in range(3) for i in store.selections(t.name)[s]]
    # finished runs are skipped: nothing is sent to Ray
    before = store.runs()
    run_ray(tasks, tmp_path / "ray")
    assert store.runs() == before


def test_ray_resumes_an_interrupted_run(make_study, tmp_path, digits, ray_local):
    from robustal.loop.experiment import run_experiment

    (task,) = Study.load(make_study(acquisitions=("dre",))).tasks()

    def stop(result):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(task.spec, tmp_path, name=task.name, dataset=digits, on_stage=stop)
    stage0 = Store(tmp_path).stages(task.name)[0]
    run_ray([task], tmp_path)
    store = Store(tmp_path)
    assert store.status(task.name) == "finished" and store.stages(task.name)[0] == stage0
    assert [s.labeled for s in store.stages(task.name)] == [30, 60, 90]


def test_a_ray_task_attacks_a_finished_run_without_retraining_it(make_study, tmp_path, ray_local):
    """A finished run whose final attack is due goes to Ray whole; its row comes back, its stages are untouched."""
    from dataclasses import replace

    from robustal.loop.final_eval import FinalAttackConfig

    (task,) = Study.load(make_study(acquisitions=("random",))).tasks()
    run_local([task], tmp_path)
    store = Store(tmp_path)
    stages = store.stages(task.name)
    run_ray([replace(task, final_attack=FinalAttackConfig("autoattack-fast", n=3))], tmp_path)
    (row,) = store.final_attacks(task.name)
    assert row["n"] == 3 and row["attack"] == "autoattack-fast" and store.stages(task.name) == stages


def test_missing_ray_is_a_config_error(make_study, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'robustal\[ray\]'"):
        run_ray(Study.load(make_study()).tasks(), tmp_path)


def test_ray_tasks_log_their_runs_live_nested_under_the_study(make_study, tmp_path, ray_local, mlflow_uri,
                                                              mlflow_client):
    from robustal.studies.study_run import run_study
    from robustal.tracking.tracking import PARENT_TAG, MLflowTracker

    study = Study.load(make_study(acquisitions=("random", "entropy")))
    tracker = MLflowTracker(mlflow_uri, "ray", log_model=False)
    run_study(study, tmp_path / "out", executor="ray", tracker=tracker)
    runs = {r.info.run_name: r for r in mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("ray").experiment_id])}
    assert set(runs) == {"tiny", *(t.name for t in study.tasks())}
    store = Store(tmp_path / "out")
    for task in study.tasks():
        run = runs[task.name]
        assert run.data.tags[PARENT_TAG] == runs["tiny"].info.run_id and run.info.status == "FINISHED"
        # tagged with the study's folder, not the task's temporary store on the worker
        assert run.data.tags["robustal.out"] == str((tmp_path / "out").resolve())
        history = sorted(mlflow_client.get_metric_history(run.info.run_id, "clean"), key=lambda m: m.step)
        stages = store.stages(task.name)
        assert [(m.step, m.value) for m in history] == [(s.labeled, s.clean) for s in stages]
        for before, after, stage in zip(history, history[1:], stages[1:], strict=False):  # logged as they finished
            assert after.timestamp - before.timestamp >= 1000 * stage.train_seconds - 5
        assert [a.path for a in mlflow_client.list_artifacts(run.info.run_id, "checkpoint")] == [
            "checkpoint/stage-002.pt"]
