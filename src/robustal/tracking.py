"""Optional experiment tracking: each robustal run mirrored as one MLflow run (settings, per-stage curves, report).

The results store stays the source of truth; a tracker only copies what the loop stores, so that runs can be browsed
and compared in MLflow's UI (``mlflow ui --backend-store-uri sqlite:///mlflow.db``). A resumed robustal run continues
its MLflow run: it is found again by its ``robustal.run`` tag and the caller's tags (e.g. ``robustal.out``), params are
never logged twice, and metric steps already there are skipped, so the curves of a resumed run equal those of an
uninterrupted one. ``mlflow`` is imported only when an :class:`MLflowTracker` is made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from robustal.errors import ConfigError, UnknownNameError

#: Tracker kinds accepted by :func:`create_tracker` (``--tracking``).
TRACKERS = ("none", "mlflow")
#: Where MLflow tracking goes by default: a SQLite file in the working directory (MLflow 3 refuses ``./mlruns``).
DEFAULT_URI = "sqlite:///mlflow.db"
#: The tag that names the robustal run; with the caller's tags it identifies the MLflow run to resume.
RUN_TAG = "robustal.run"
#: ``StageRecord`` fields logged as metrics, each with step = the number of labels.
STAGE_METRICS = ("clean", "robust", "val_score", "at_chance", "train_seconds", "select_seconds", "eval_seconds")
#: robustal's run status → MLflow's terminal run status.
FINISH_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}

INSTALL_HINT = "Tracking with MLflow needs the optional package: pip install 'robustal[mlflow]'"

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
        """Record one finished stage (a :class:`robustal.store.StageRecord`)."""

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file (e.g. ``report.md``) or a folder to the run."""

    def finish(self, status: str) -> None:
        """End the run: ``"finished"``, ``"interrupted"`` or ``"failed"``."""


class _QuietBelowWarning(logging.Filter):
    """Drops MLflow's and alembic's info/debug records (database migrations) unless robustal logs at DEBUG; records
    of every other logger pass, so the filter is harmless on a handler that others share."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("mlflow", "alembic")):
            return True
        return record.levelno >= logging.WARNING or logging.getLogger("robustal").isEnabledFor(logging.DEBUG)


def _quiet_mlflow_logging() -> None:
    # MLflow gives its loggers their own handlers and no propagation, so the filter goes on those handlers, where it
    # also sees the records of child loggers (mlflow.store.db.utils announces each migration at INFO).
    for name in ("mlflow", "alembic"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _QuietBelowWarning) for f in handler.filters):
                handler.addFilter(_QuietBelowWarning())


@contextlib.contextmanager
def _loggers_kept() -> Iterator[None]:
    """Undo what MLflow's database migrations do to logging: alembic's ``fileConfig`` disables every logger that
    exists at the time (robustal's, the user's), so their messages would silently stop."""
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = {lg: lg.disabled for lg in loggers}
    try:
        yield
    finally:
        for lg, was in disabled.items():
            lg.disabled = was


def _import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    _quiet_mlflow_logging()
    return mlflow


def _param_value(value: object) -> str:
    if isinstance(value, list | tuple):
        return json.dumps(list(value), default=str)
    if isinstance(value, dict):  # only an empty one gets here: it is recorded rather than lost
        return json.dumps(value, default=str)
    return str(value)


def _flatten(params: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """``(path, value)`` pairs of a nested dict: ``(("loop", "train", "epochs"), "10")``."""
    for key, value in params.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from _flatten(value, path)
        else:
            yield path, _param_value(value)


def _key(path: tuple[str, ...]) -> str:
    """A dotted MLflow key; characters MLflow refuses (anything but letters, digits, ``_-. /``) become ``_``."""
    key = ".".join(path)
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)[:_MAX_KEY]


def flatten_params(params: dict) -> dict[str, str]:
    """robustal's nested settings as MLflow params: dotted keys, string values (None → ``"None"``, lists as JSON)."""
    return {_key(path): value[:_MAX_PARAM_VALUE] for path, value in _flatten(params)}


def _non_semantic_keys(params: dict) -> set[str]:
    """Keys that may change when a run resumes (device, workers...), as the results store allows."""
    from robustal.store import NON_SEMANTIC_KEYS

    return {_key(path) for path, _ in _flatten(params) if NON_SEMANTIC_KEYS.intersection(path)}


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _sqlite_folder(uri: str) -> Path | None:
    """The folder of a SQLite tracking file (``sqlite:///rel.db``, ``sqlite:////abs.db``); None for other URIs."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve().parent


@contextlib.contextmanager
def _folder_lock(folder: Path | None) -> Iterator[None]:
    """Holds an exclusive lock on ``folder`` (created if needed): MLflow migrates a new SQLite file on first open,
    and parallel runs of a study opening the same new file at once would run the migration twice and fail."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the first open of a new file should then not be concurrent
        fcntl = None
    if folder is None or fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _filter_value(value: str) -> str | None:
    """``value`` quoted for an MLflow search filter; None when it holds both quote characters."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    return None


class MLflowTracker(Tracker):
    """One MLflow run per robustal run, in experiment ``experiment`` of the tracking store ``uri``.

    The store is opened (and its experiment created) here, so a bad ``--tracking-uri`` fails before any training.
    With a SQLite store, artifacts go to ``mlartifacts/`` beside the database file (MLflow would otherwise put them
    in ``./mlruns`` of the working directory).

    Args:
        uri: An MLflow tracking URI: ``sqlite:///FILE.db`` (the first use creates it, its folder and tables, which
            takes several seconds), another database URL, or an MLflow server's ``http(s)://`` address.
        experiment: The MLflow experiment's name.
    """

    enabled = True

    def __init__(self, uri: str = DEFAULT_URI, experiment: str = "robustal"):
        mlflow = _import_mlflow()
        self.uri, self.experiment = uri, experiment
        self.run_id: str | None = None
        self._steps: dict[str, set[int]] = {}  # metric key → steps already logged in this MLflow run
        folder = _sqlite_folder(uri)
        try:
            with _folder_lock(folder), warnings.catch_warnings(), _loggers_kept():
                # MLflow's store trips SQLAlchemy's deprecation warnings (noload); they are not the user's to fix.
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow(\.|$)")
                self.client = mlflow.MlflowClient(tracking_uri=uri)
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    location = (folder / "mlartifacts").as_uri() if folder is not None else None
                    try:
                        self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
                    except mlflow.exceptions.MlflowException:
                        found = self.client.get_experiment_by_name(experiment)  # another process just created it
                        if found is None:
                            raise
        except Exception as e:
            raise ConfigError(f"Cannot use the MLflow tracking store {uri!r} (--tracking-uri): {_first_line(e)}. "
                              f"Give a SQLite file in a writable folder, such as {DEFAULT_URI}, or the http:// "
                              "address of an MLflow server.") from e
        if found is not None:
            if found.lifecycle_stage != "active":
                raise ConfigError(f"The MLflow experiment {experiment!r} in {uri!r} is deleted; restore it with "
                                  f"`mlflow experiments restore --experiment-id {found.experiment_id}` or choose "
                                  "another name with --tracking-experiment.")
            self.experiment_id = found.experiment_id

    def _find_run(self, tags: dict[str, str]):
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
        from mlflow.entities import Param

        tags = {RUN_TAG: run, **{str(k): str(v)[:_MAX_TAG_VALUE] for k, v in (tags or {}).items()}}
        wanted = flatten_params(params)
        existing = self._find_run(tags)
        if existing is None:
            created = self.client.create_run(self.experiment_id, tags=tags, run_name=run)
            self.run_id, stored, self._steps = created.info.run_id, {}, {}
        else:
            self.run_id, stored = existing.info.run_id, existing.data.params
            loose = _non_semantic_keys(params)
            # MLflow refuses to change a param; keys not stored yet (a start cut short) are logged below.
            changed = [f"{key}: stored {stored[key]!r}, now {wanted[key]!r}" if key in wanted
                       else f"{key}: stored {stored[key]!r}, now absent"
                       for key in sorted(stored) if key not in loose and stored[key] != wanted.get(key)]
            if changed:
                raise ConfigError(f"The MLflow run {self.run_id} for robustal run {run!r} (experiment "
                                  f"{self.experiment!r} in {self.uri}) holds other settings: {'; '.join(changed)}. "
                                  "Track this run under another --tracking-experiment, or delete that MLflow run.")
            self._steps = {key: {m.step for m in self.client.get_metric_history(self.run_id, key)}
                           for key in existing.data.metrics}
            self.client.update_run(self.run_id, status="RUNNING")
        missing = [Param(key, value) for key, value in wanted.items() if key not in stored]
        for i in range(0, len(missing), _PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=missing[i:i + _PARAMS_PER_BATCH])

    def _require_run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("MLflowTracker: call start() before logging or finishing a run.")
        return self.run_id

    def log_stage(self, record) -> None:
        from mlflow.entities import Metric

        run_id = self._require_run()
        step, now = int(record.labeled), int(time.time() * 1000)
        metrics = []
        for key in STAGE_METRICS:
            value = getattr(record, key, False if key == "at_chance" else None)
            if value is None or step in self._steps.get(key, ()):
                continue
            metrics.append(Metric(key, float(value), now, step))
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
            for m in metrics:
                self._steps.setdefault(m.key, set()).add(step)

    def log_artifact(self, path: str | Path) -> None:
        run_id = self._require_run()
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path=path.resolve().name)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path))
        else:
            raise ConfigError(f"Cannot attach {str(path)!r} to the MLflow run: no such file or folder.")

    def finish(self, status: str) -> None:
        if status not in FINISH_STATUS:
            raise ConfigError(f"Unknown run status {status!r} for finish(); valid: {', '.join(FINISH_STATUS)}.")
        self.client.set_terminated(self._require_run(), status=FINISH_STATUS[status])


def track_stored_run(tracker: Tracker, store, name: str) -> None:
    """Mirror run ``name`` of a results store (settings, every stage, status) into ``tracker``; idempotent, so a
    study can mirror each run as it finishes, from the one process that owns the store."""
    tracker.start(name, store.run_config(name) or {}, {"robustal.out": str(store.root.resolve())})
    for record in store.stages(name):
        tracker.log_stage(record)
    tracker.finish("finished" if store.status(name) == "finished" else "interrupted")


def create_tracker(kind: str = "none", uri: str | None = None, experiment: str = "robustal") -> Tracker:
    """The tracker for ``--tracking KIND``: :class:`Tracker` (does nothing) or :class:`MLflowTracker` at ``uri``
    (default :data:`DEFAULT_URI`); ``uri`` and ``experiment`` are ignored for ``none``."""
    if kind == "none":
        return Tracker()
    if kind == "mlflow":
        return MLflowTracker(DEFAULT_URI if uri is None else uri, experiment)
    raise UnknownNameError("tracker", kind, list(TRACKERS))
