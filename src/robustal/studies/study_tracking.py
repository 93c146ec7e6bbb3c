"""A study in MLflow: one parent run for the study, each robustal run nested under it and logged live by the process
(or Ray task) that executes it.

The driver opens the study's run before anything is dispatched and sends every worker a :class:`TrackingTarget`
(where to log, and under which parent); each worker logs its run's stages as they finish. When a run comes back the
driver mirrors it from the results store (:func:`~robustal.tracking.tracking.track_stored_run`), which fills in whatever
a worker could not log (a worker on another machine of a Ray cluster cannot write the driver's SQLite file) and leaves
a run that MLflow already holds as finished untouched. A study re-run with nothing left to do writes nothing.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robustal.errors import TrackingWarning
from robustal.tracking.tracking import FINISH_STATUS, OUT_TAG, MLflowTracker, Tracker, track_stored_run
from robustal.tracking.tracking_store import absolute_uri, is_local_uri, why

#: The tag naming the study of a parent run; with ``robustal.out`` it identifies the run to continue.
STUDY_TAG = "robustal.study"
#: The tag holding how many runs the study has.
RUNS_TAG = "robustal.runs"
#: The study's run is tagged with the versions its results depend on: ``robustal.version``, ``torch.version``...
VERSION_TAGS = ("robustal", "torch", "numpy", "python")


def study_params(study) -> dict:
    """A study's settings as nested params of its MLflow run: its grid(s), ``[loop]``, ``[train]`` and
    ``[acquisition.*]`` (see :func:`robustal.tracking.tracking.flatten_params`)."""
    grids = [{"datasets": list(g.datasets), "models": {d: [m or "default" for m in ms] for d, ms in g.models.items()},
              "training": list(g.training), "acquisitions": list(g.acquisitions), "seeds": list(g.seeds),
              "loop": dict(g.loop), "train": dict(g.train)} for g in study.grids]
    return {"grid": grids[0] if len(grids) == 1 else {str(i): g for i, g in enumerate(grids)},
            "loop": dict(study.loop), "train": dict(study.train), "acquisition": dict(study.acquisition_options)}


@dataclass(frozen=True)
class TrackingTarget:
    """Where a study's runs are tracked, sent to each worker so that it logs its run live, nested under the study.

    Attributes:
        uri: The tracking URI, a SQLite path made absolute (workers may run in another folder).
        experiment: The MLflow experiment.
        source: Where the URI came from, for messages.
        out: The study's results folder (absolute): the ``robustal.out`` tag of its runs, also for runs that execute
            in a temporary store on a Ray worker.
        parent_run_id: The study's MLflow run.
        host: The driver's host name: a worker elsewhere does not log to a local file (the driver mirrors its run).
        log_model: Log each final model in MLflow's PyTorch flavour.
    """

    uri: str
    experiment: str
    source: str
    out: str
    parent_run_id: str | None
    host: str
    log_model: bool = True

    def open(self) -> Tracker:
        """The worker's tracker: an :class:`~robustal.tracking.tracking.MLflowTracker` that warns rather than stops the
        run on failure, or the inert :class:`~robustal.tracking.tracking.Tracker` where the store cannot be reached from
        here."""
        if is_local_uri(self.uri) and socket.gethostname() != self.host:
            return Tracker()  # another machine: its own copy of the file would be a different store
        try:
            return MLflowTracker(self.uri, self.experiment, source=self.source, tags={OUT_TAG: self.out},
                                 parent_run_id=self.parent_run_id, log_model=self.log_model, strict=False)
        except Exception as e:
            warnings.warn(TrackingWarning(f"MLflow tracking at {self.uri} cannot be opened on this worker "
                                          f"({why(e)}); the study mirrors the run when it returns."), stacklevel=2)
            return Tracker()


class StudyTracking:
    """The study's MLflow run, as a context manager around executing the study's runs.

    On entry the study's run is found (by its ``robustal.study`` and ``robustal.out`` tags) or created, named
    after the study, with the study file attached; it is marked running only when some run is left to do.
    :meth:`run_done` mirrors each returned run nested under it; :meth:`attach` adds the report; on exit the study's run
    ends as finished, interrupted (Ctrl-C) or failed. With nothing left to do, nothing is written.

    Args:
        tracker: An open MLflow tracker (its store, experiment and model setting are used).
        name: The study's name.
        out: The study's results folder.
        runs: How many runs the study has.
        todo: How many of them are not finished yet.
        study_file: Attached to the study's run.
        params: The study's settings (:func:`study_params`), logged as the study's run's params (each once: a
            continued study's run keeps those it has), with the versions as tags.
    """

    def __init__(self, tracker: MLflowTracker, name: str, out: str | Path, runs: int, todo: int,
                 study_file: str | Path | None = None, params: dict | None = None):
        self.tracker, self.name, self.out = tracker, name, str(Path(out).resolve())
        self.runs, self.todo, self.study_file, self.params = runs, todo, study_file, params or {}
        self.run_id: str | None = None
        self.active = False  # whether this invocation writes to the study's run

    def __enter__(self) -> StudyTracking:
        client, tags = self.tracker.client, {STUDY_TAG: self.name, OUT_TAG: self.out}
        found = self.tracker.find_run(tags)
        if found is None:
            self.run_id = client.create_run(self.tracker.experiment_id, tags={**tags, RUNS_TAG: str(self.runs)},
                                            run_name=self.name).info.run_id
            self.active = True
        else:
            self.run_id = found.info.run_id
            self.active = self.todo > 0 or found.info.status != "FINISHED"
            if self.active:
                client.update_run(self.run_id, status="RUNNING")
                client.set_tag(self.run_id, RUNS_TAG, str(self.runs))
        if self.active and self.study_file is not None:
            client.log_artifact(self.run_id, str(self.study_file))
        if self.active:
            self._describe(found.data.params if found is not None else {})
        return self

    def _describe(self, have: dict) -> None:
        """The study's settings as params (those the run lacks) and the versions as tags."""
        from mlflow.entities import Param, RunTag

        from robustal.storage.schema import library_versions
        from robustal.tracking.tracking import flatten_params

        params = [Param(k, v) for k, v in flatten_params(self.params).items() if k not in have]
        versions = library_versions()
        tags = [RunTag(f"{k}.version", str(versions[k])) for k in VERSION_TAGS if k in versions]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.tracker.client.log_batch(self.run_id, params=params[start:start + 100])
        self.tracker.client.log_batch(self.run_id, tags=tags)

    def summarize(self, out: str | Path, names: Sequence[str]) -> None:
        """Log the study's summary as metrics of its run: per grid cell, the final clean and robust accuracy (mean
        over the finished seeds; ``final_robust.DATASET.MODEL.TRAINING.ACQUISITION``), and how many runs finished."""
        if not self.active:
            return
        import time

        from mlflow.entities import Metric

        from robustal.reports.results import collect, summarize
        from robustal.tracking.tracking import mlflow_key

        try:
            runs = collect(out, list(names))
            now, metrics = int(time.time() * 1000), []
            for s in summarize(runs):
                cell = (s.dataset, s.model, s.training, f"{s.acquisition}{' (reference)' if s.reference else ''}")
                for what, value in (("final_clean", s.clean), ("final_robust", s.robust)):
                    if value is not None:
                        metrics.append(Metric(mlflow_key(what, *cell), float(value[0]), now, 0))
            metrics.append(Metric("runs_finished", float(sum(r.status == "finished" for r in runs)), now, 0))
            for start in range(0, len(metrics), 1000):
                self.tracker.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])
        except Exception as e:
            warnings.warn(TrackingWarning(f"cannot log the study's summary to its MLflow run ({why(e)})"),
                          stacklevel=2)

    @property
    def target(self) -> TrackingTarget:
        """What workers need to log their runs live under this study's run."""
        t = self.tracker
        return TrackingTarget(absolute_uri(t.uri), t.experiment, t.source, self.out, self.run_id,
                              socket.gethostname(), t.log_model)

    def run_done(self, store, name: str) -> None:
        """Mirror returned run ``name`` from ``store`` under the study's run (warns rather than raises)."""
        track_stored_run(self.tracker.nested(self.run_id, strict=False), store, name)

    def attach(self, path: str | Path) -> None:
        """Attach a file or folder (the report) to the study's run, if this invocation ran anything."""
        if not self.active:
            return
        path = Path(path)
        try:
            if path.is_dir():
                self.tracker.client.log_artifacts(self.run_id, str(path), artifact_path=path.resolve().name)
            else:
                self.tracker.client.log_artifact(self.run_id, str(path))
        except Exception as e:
            warnings.warn(TrackingWarning(f"cannot attach {path.name} to the study's MLflow run ({why(e)})"),
                          stacklevel=2)

    def __exit__(self, kind, error, traceback) -> None:
        if not self.active:
            return
        status = "finished" if kind is None else "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed"
        try:
            self.tracker.client.set_terminated(self.run_id, status=FINISH_STATUS[status])
        except Exception as e:
            if kind is None:
                raise
            warnings.warn(TrackingWarning(f"cannot end the study's MLflow run ({why(e)})"), stacklevel=2)


def pending(tasks: Sequence, store) -> int:
    """How many of ``tasks`` the results ``store`` does not hold as finished."""
    return sum(1 for t in tasks if store.status(t.name) != "finished")


__all__ = ["STUDY_TAG", "VERSION_TAGS", "StudyTracking", "TrackingTarget", "pending", "study_params"]
