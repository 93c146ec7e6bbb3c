"""Optional experiment tracking: each robustal run mirrored live as one MLflow run (settings, per-stage curves, final
checkpoint and model); a study's runs nested under one MLflow run of the study (:mod:`robustal.studies.study_tracking`).

The results store stays the source of truth; a tracker only copies what the loop stores, so that runs can be browsed
and compared in MLflow's UI (``mlflow ui --backend-store-uri sqlite:///mlflow.db``). A resumed robustal run continues
its MLflow run: it is found again by its ``robustal.run`` and ``robustal.out`` tags (never by its display name),
params are never logged twice, and metric steps already there are skipped, so the curves of a resumed run equal those
of an uninterrupted one. A run that MLflow already holds as finished is left exactly as it is. ``mlflow`` is imported
only when an :class:`MLflowTracker` is made.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from robustal.errors import ConfigError, TrackingWarning, UnknownNameError
from robustal.tracking.tracking_store import (
    DEFAULT_URI,
    INSTALL_HINT,
    URI_VARIABLE,
    default_uri,
    loggers_kept,
    open_store,
    why,
)

#: Tracker kinds accepted by :func:`create_tracker` (``--track``).
TRACKERS = ("none", "mlflow")
#: The tag that names the robustal run; with :data:`OUT_TAG` it identifies the MLflow run to resume.
RUN_TAG = "robustal.run"
#: The tag holding the absolute results folder of the run (or of the study).
OUT_TAG = "robustal.out"
#: MLflow's tag for a nested run's parent (its UI draws the tree from it).
PARENT_TAG = "mlflow.parentRunId"
#: robustal's default run names (``robustal run`` without ``--name``, ``robustal label``): MLflow shows a
#: descriptive name instead (dataset-model-training-acquisition-seed).
GENERIC_RUN_NAMES = ("run", "label")
#: ``StageRecord`` fields logged as metrics, each with step = the number of labels.
STAGE_METRICS = ("clean", "robust", "val_score", "at_chance", "train_seconds", "select_seconds", "eval_seconds")
#: robustal's run status → MLflow's terminal run status.
FINISH_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
#: Artifact folders of a finished run: the results store's final stage checkpoint, and the model in MLflow's
#: PyTorch flavour (``mlflow.pytorch.load_model("runs:/<id>/model")``).
CHECKPOINT_ARTIFACT, MODEL_ARTIFACT = "checkpoint", "model"

# MLflow's limits (mlflow.utils.validation); longer values are cut here, deterministically, rather than by MLflow
# with a warning, so that a resumed run compares equal values.
_MAX_KEY = 250
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000
_PARAMS_PER_BATCH = 100  # MLflow's log_batch takes at most 100 params

class Tracker:
    """Does nothing: the ``none`` tracker, and the interface of the others."""

    #: Whether anything is recorded (False for this ``none`` tracker).
    enabled = False

    def start(self, run: str, params: dict, tags: dict | None = None) -> None:
        """Begin (or, after an interruption, continue) tracking robustal run ``run`` with its nested settings."""

    def log_stage(self, record) -> None:
        """Record one finished stage (a :class:`robustal.storage.store.StageRecord`)."""

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (e.g. ``report.md``) or a folder to the run."""

    def log_result(self, model=None, checkpoint: str | Path | None = None, example=None) -> None:
        """Attach a finished run's final ``checkpoint`` file and ``model`` (``example``: a few input images)."""

    def finish(self, status: str) -> None:
        """End the run: ``"finished"``, ``"interrupted"`` or ``"failed"``."""


# --- params and names -------------------------------------------------------------------------------------------
def _param_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return json.dumps(list(value), default=str)
    return str(value)


def _unset(value: object) -> bool:
    return value is None or (isinstance(value, list | tuple | dict) and not value)


def _flatten(params: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(path, value)`` pairs of a nested dict, unset values (None, empty) left out: ``(("loop", "train",
    "epochs"), "10")``."""
    for key, value in params.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from _flatten(value, path)
        elif not _unset(value):
            yield path, _param_value(value)


def _key(path: tuple[str, ...]) -> str:
    """A dotted MLflow key; characters MLflow refuses (anything but letters, digits, ``_-. /``) become ``_``."""
    key = ".".join(path)
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)[:_MAX_KEY]


def mlflow_key(*parts: str) -> str:
    """A dotted MLflow key of ``parts`` (a metric's or param's), with the characters MLflow refuses replaced."""
    return _key(tuple(parts))


def flatten_params(params: dict) -> dict[str, str]:
    """Nested settings as MLflow params: dotted keys, string values (lists as JSON), unset values left out."""
    return {_key(path): value[:_MAX_PARAM_VALUE] for path, value in _flatten(params)}


def run_params(config: dict) -> dict[str, str]:
    """A stored run's configuration as MLflow params, each setting once with the value the run used.

    The store keeps both the request (``spec``: ε None for "the dataset's") and the resolved loop settings
    (``loop``: ε 0.3, the evaluation attack filled in); MLflow gets the resolved ones, the model by its robustal
    name, and from the request only what the loop settings lack (an image folder's size and channels).
    """
    config = dict(config)
    spec = config.pop("spec", None) or {}
    model_name = config.pop("model_name", None)
    if model_name is not None:  # the robustal name (small-cnn, mynets.py:make), not the class name
        config["model"] = model_name
    for key in ("image_size", "channels"):
        if spec.get(key) is not None:
            config[key] = spec[key]
    return flatten_params(config)


def run_title(run: str, config: dict) -> str:
    """The MLflow run name: robustal's run name, or for a default one (``run``, ``label``) the run's
    dataset-model-training-acquisition-seed."""
    if run not in GENERIC_RUN_NAMES:
        return run
    loop = config.get("loop") or {}
    train = loop.get("train") or {}
    source = config.get("project") or Path(str(config.get("dataset") or run)).stem
    model = config.get("model_name") or config.get("model") or "model"
    acquisition = config.get("acquisition_label") or loop.get("acquisition") or "run"
    return f"{source}-{model}-{train.get('mode', 'standard')}-{acquisition}-s{loop.get('seed', 0)}"


def _non_semantic_keys(params: dict) -> set[str]:
    """Keys that may change when a run resumes (device, workers...), as the results store allows."""
    from robustal.storage.schema import NON_SEMANTIC_KEYS

    return {_key(path) for path, _ in _flatten(params) if NON_SEMANTIC_KEYS.intersection(path)}


def _filter_value(value: str) -> str | None:
    """``value`` quoted for an MLflow search filter; None when it holds both quote characters."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    return None


class MLflowTracker(Tracker):
    """One MLflow run per robustal run, in experiment ``experiment`` of the tracking store ``uri``.

    The store is opened (and its experiment created) here, so a bad URI fails before any training, within seconds:
    a SQLite file that cannot be written, or a server that does not answer, is refused with the reason and where
    the URI came from (``source``). With a SQLite store, artifacts go to ``mlartifacts/`` beside the database file
    (MLflow would otherwise put them in ``./mlruns`` of the working directory).

    After :meth:`start`, a failure to log (a server gone away) does not stop the run: it is reported once as a
    :class:`~robustal.errors.TrackingWarning` and the tracker stops logging; the results store keeps everything and
    running the same command again mirrors what is missing.

    Args:
        uri: An MLflow tracking URI: ``sqlite:///FILE.db`` (the first use creates it, its folder and tables, which
            takes several seconds), another database URL, or an MLflow server's ``http(s)://`` address. Default:
            ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_URI`.
        experiment: The MLflow experiment's name.
        source: Where ``uri`` came from, for messages (``--tracking-uri``, a study file's ``[tracking]`` table...).
        tags: Tags every run of this tracker gets, over those the loop gives (a study's real results folder when
            the run executes in a temporary store on a Ray worker).
        parent_run_id: Nest every run under this MLflow run (a study's).
        log_model: Also log the final model in MLflow's PyTorch flavour (``torch.export``: under a second for small
            nets, seconds for ResNet-18).
        strict: False: a failing :meth:`start` warns instead of raising, for runs on workers (the study's driver
            mirrors them when they return).
    """

    enabled = True

    def __init__(self, uri: str | None = None, experiment: str = "robustal", *, source: str | None = None,
                 tags: dict | None = None, parent_run_id: str | None = None, log_model: bool = True,
                 strict: bool = True):
        if uri is None:
            uri, source = default_uri()
        self.uri, self.experiment, self.source = uri, experiment, source or "--tracking-uri"
        self.fixed_tags = {str(k): str(v)[:_MAX_TAG_VALUE] for k, v in (tags or {}).items()}
        self.parent_run_id, self.log_model, self.strict = parent_run_id, log_model, strict
        self._reset()
        self.client, self.experiment_id = open_store(uri, experiment, self.source)

    def _reset(self) -> None:
        self.run_id: str | None = None
        self._steps: dict[str, set[int]] = {}  # metric key → steps already logged in this MLflow run
        self._params: dict[str, str] = {}  # params still to log when the run is reopened
        self._frozen = False  # a run MLflow holds as finished: left untouched unless new stages come
        self._broken = False  # a logging call failed: log nothing more for this run

    def nested(self, parent_run_id: str | None, tags: dict | None = None, strict: bool | None = None) -> MLflowTracker:
        """A tracker on the same store whose runs are nested under ``parent_run_id`` (no new connection)."""
        child = copy.copy(self)
        child.parent_run_id = parent_run_id
        child.fixed_tags = {**self.fixed_tags, **{str(k): str(v) for k, v in (tags or {}).items()}}
        child.strict = self.strict if strict is None else strict
        child._reset()
        return child

    def find_run(self, tags: dict[str, str]):
        """The active MLflow run of this experiment carrying all of ``tags`` (the oldest, should there be several)."""
        clauses = [(key, _filter_value(value)) for key, value in tags.items()]
        filter_string = " and ".join(f"tags.`{key}` = {value}" for key, value in clauses
                                     if value is not None and "`" not in key)  # the rest is checked below
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            for run in page:
                if all(run.data.tags.get(key) == value for key, value in tags.items()):
                    return run
            token = page.token
            if not token:
                return None

    def start(self, run: str, params: dict, tags: dict | None = None) -> None:
        self._reset()
        try:
            self._start(run, params, tags)
        except Exception as e:
            if self.strict:
                raise
            self._give_up(f"cannot start the MLflow run of {run!r}", e)

    def _start(self, run: str, params: dict, tags: dict | None) -> None:
        identity = {RUN_TAG: run, **{str(k): str(v)[:_MAX_TAG_VALUE] for k, v in (tags or {}).items()},
                    **self.fixed_tags}
        wanted = run_params(params)
        # A run without a results folder cannot be resumed: each start is a new MLflow run.
        existing = self.find_run(identity) if OUT_TAG in identity else None
        if existing is None:
            tags = {**identity, PARENT_TAG: self.parent_run_id} if self.parent_run_id else identity
            created = self.client.create_run(self.experiment_id, tags=tags, run_name=run_title(run, params))
            self.run_id, stored = created.info.run_id, {}
        else:
            self.run_id, stored = existing.info.run_id, existing.data.params
            loose = _non_semantic_keys(params)
            # MLflow refuses to change a param. Keys only one side has are not a conflict (a start cut short, or a
            # run mirrored by an earlier robustal that logged other keys).
            changed = [f"{key}: stored {stored[key]!r}, now {wanted[key]!r}" for key in sorted(stored)
                       if key in wanted and key not in loose and stored[key] != wanted[key]]
            if changed:
                raise ConfigError(f"The MLflow run {self.run_id} for robustal run {run!r} (experiment "
                                  f"{self.experiment!r} in {self.uri}) holds other settings: {'; '.join(changed)}. "
                                  "Track this run under another --tracking-experiment, or delete that MLflow run.")
            self._steps = {key: {m.step for m in self.client.get_metric_history(self.run_id, key)}
                           for key in existing.data.metrics}
        self._params = {key: value for key, value in wanted.items() if key not in stored}
        if existing is not None and existing.info.status == "FINISHED":
            self._frozen = True  # a finished run is left as it is (end time included) unless new stages come
            return
        self._open(existing)

    def _open(self, existing=None) -> None:
        """Mark the run running, nest it, and log the params it lacks."""
        from mlflow.entities import Param

        if existing is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            if self.parent_run_id and existing.data.tags.get(PARENT_TAG) != self.parent_run_id:
                self.client.set_tag(self.run_id, PARENT_TAG, self.parent_run_id)
        missing = [Param(key, value) for key, value in self._params.items()]
        for i in range(0, len(missing), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=missing[i:i + _PARAMS_PER_BATCH])
        self._params, self._frozen = {}, False

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MLflowTracker: call start() before logging or finishing a run.")
        return self.run_id

    def _give_up(self, what: str, error: BaseException) -> None:
        self._broken = True
        warnings.warn(TrackingWarning(
            f"MLflow tracking at {self.uri}: {what} ({why(error)}); the run goes on without it. The results store "
            "keeps everything: running the same command again mirrors what is missing."), stacklevel=3)

    @contextlib.contextmanager
    def _logging(self, what: str, optional: bool = False) -> Iterator[bool]:
        """Yields whether to log; a failure inside is reported once, and nothing more is logged for this run --
        unless ``optional`` (an extra the run can do without, the model): then the failure is warned about and the
        rest (the run's status) is still logged."""
        self._require_run()
        if self._broken:
            yield False
            return
        try:
            yield True
        except Exception as e:
            if not optional:
                self._give_up(what, e)
                return
            warnings.warn(TrackingWarning(f"MLflow tracking at {self.uri}: {what} ({why(e)}); the final checkpoint "
                                          "is attached all the same."), stacklevel=3)

    def log_stage(self, record) -> None:
        from mlflow.entities import Metric

        with self._logging(f"cannot log stage {getattr(record, 'stage', '?')}") as live:
            if not live:
                return
            step, now = int(record.labeled), int(time.time() * 1000)
            metrics = []
            for key in STAGE_METRICS:
                value = getattr(record, key, False if key == "at_chance" else None)
                if value is None or step in self._steps.get(key, ()):
                    continue
                metrics.append(Metric(key, float(value), now, step))
            if not metrics:
                return
            if self._frozen:  # new stages for a run MLflow holds as finished: it runs again
                self._open(self.client.get_run(self.run_id))
            self.client.log_batch(self.run_id, metrics=metrics)
            for m in metrics:
                self._steps.setdefault(m.key, set()).add(step)

    def log_artifact(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"Cannot attach {str(path)!r} to the MLflow run: no such file or folder.")
        with self._logging(f"cannot attach {path.name}") as live:
            if live:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), artifact_path=path.resolve().name)
                else:
                    self.client.log_artifact(self.run_id, str(path))

    def log_result(self, model=None, checkpoint: str | Path | None = None, example=None) -> None:
        """The final stage ``checkpoint`` under ``checkpoint/``, and (``log_model``) ``model`` in MLflow's PyTorch
        flavour under ``model/``, exported with ``torch.export`` on ``example`` images (no pickled code; a model
        that cannot be exported is warned about). Nothing for a run MLflow already holds as finished."""
        if self._frozen:
            return
        if checkpoint is not None and Path(checkpoint).is_file():
            with self._logging("cannot attach the final checkpoint") as live:
                if live:
                    self.client.log_artifact(self.run_id, str(checkpoint), artifact_path=CHECKPOINT_ARTIFACT)
        if self.log_model and model is not None and example is not None:
            with self._logging("cannot log the model in MLflow's PyTorch flavour", optional=True) as live:
                if live:
                    self._log_model(model, example)

    def _log_model(self, model, example) -> None:
        import mlflow.pytorch
        import torch

        from robustal.data.dataset import to_float

        net = copy.deepcopy(model).cpu().eval()
        x = to_float(example[:2]).cpu().numpy()  # two images: the batch dimension stays dynamic
        with tempfile.TemporaryDirectory(prefix="robustal-mlflow-") as tmp, warnings.catch_warnings(), \
                loggers_kept():
            warnings.simplefilter("ignore")  # torch.export's and MLflow's notes on the export are not the user's
            folder = Path(tmp) / MODEL_ARTIFACT
            mlflow.pytorch.save_model(net, str(folder), serialization_format="pt2", input_example=x,
                                      pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            self.client.log_artifacts(self.run_id, str(folder), artifact_path=MODEL_ARTIFACT)

    def finish(self, status: str) -> None:
        if status not in FINISH_STATUS:
            raise ConfigError(f"Unknown run status {status!r} for finish(); valid: {', '.join(FINISH_STATUS)}.")
        if self._frozen:
            return
        with self._logging("cannot set the run's status") as live:
            if live:
                self.client.set_terminated(self.run_id, status=FINISH_STATUS[status])


def track_stored_run(tracker: Tracker, store, name: str) -> None:
    """Mirror run ``name`` of a results store (settings, every stage, final checkpoint, status) into ``tracker``;
    idempotent, and a run the tracker already holds as finished is left untouched."""
    tracker.start(name, store.run_config(name) or {}, {OUT_TAG: str(store.root.resolve())})
    stages = store.stages(name)
    for record in stages:
        tracker.log_stage(record)
    if store.status(name) == "finished":
        if stages:
            tracker.log_result(checkpoint=store.checkpoint_path(name, stages[-1].stage))
        tracker.finish("finished")
    else:
        tracker.finish("interrupted")


def create_tracker(kind: str = "none", uri: str | None = None, experiment: str = "robustal", *,
                   source: str | None = None, log_model: bool = True) -> Tracker:
    """The tracker for ``--track KIND``: :class:`Tracker` (does nothing) or :class:`MLflowTracker` at ``uri``
    (default ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_URI`); the other arguments are ignored for ``none``."""
    if kind == "none":
        return Tracker()
    if kind == "mlflow":
        return MLflowTracker(uri, experiment, source=source, log_model=log_model)
    raise UnknownNameError("tracker", kind, list(TRACKERS))


__all__ = ["DEFAULT_URI", "INSTALL_HINT", "OUT_TAG", "PARENT_TAG", "RUN_TAG", "TRACKERS", "URI_VARIABLE",
           "MLflowTracker", "Tracker", "create_tracker", "flatten_params", "run_params", "run_title",
           "track_stored_run"]
