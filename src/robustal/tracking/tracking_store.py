"""Opening an MLflow tracking store for :mod:`robustal.tracking.tracking`: quickly, or refused with the reason.

MLflow's client is patient by design (7 HTTP retries over about 4 minutes, 10 database connection attempts over
100 s) so that a busy server is ridden out; for the first contact robustal wants the opposite: a URI that cannot be
used is refused within seconds, naming where it came from (``--tracking-uri``, a study file's ``[tracking]`` table,
or ``MLFLOW_TRACKING_URI``) and what to do. It also keeps MLflow's logging changes away from everyone else's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from robustal.errors import ConfigError

#: Where MLflow tracking goes when neither the command line, the study file nor ``MLFLOW_TRACKING_URI`` says: a
#: SQLite file in the working directory (MLflow 3 refuses ``./mlruns``).
DEFAULT_URI = "sqlite:///mlflow.db"
#: MLflow's own variable for the tracking URI, honoured as MLflow users expect (it never turns tracking on).
URI_VARIABLE = "MLFLOW_TRACKING_URI"
#: Seconds the first request to an MLflow server may take before the URI is refused (MLflow's own default retries
#: for about 4 minutes); connection refused fails at once.
PROBE_TIMEOUT = 4

INSTALL_HINT = "Tracking with MLflow needs the optional package: pip install 'robustal[mlflow]'"


class _QuietBelowWarning(logging.Filter):
    """Drops MLflow's and alembic's info/debug records (database migrations) and their records that carry a
    traceback (MLflow logs SQLAlchemy's errors with theirs before raising them, and robustal reports the error
    raised, in one line), unless robustal logs at DEBUG; records of every other logger pass, so the filter is
    harmless on a handler that others share."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("mlflow", "alembic")) or logging.getLogger("robustal").isEnabledFor(
                logging.DEBUG):
            return True
        return record.levelno >= logging.WARNING and not record.exc_info


def _quiet_mlflow_logging() -> None:
    # MLflow gives its loggers their own handlers and no propagation, so the filter goes on those handlers, where it
    # also sees the records of child loggers (mlflow.store.db.utils announces each migration at INFO).
    for name in ("mlflow", "alembic"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _QuietBelowWarning) for f in handler.filters):
                handler.addFilter(_QuietBelowWarning())


@contextlib.contextmanager
def loggers_kept() -> Iterator[None]:
    """Undo what MLflow's database migrations do to logging: alembic's ``fileConfig`` disables every logger that
    exists at the time (robustal's, the user's), so their messages would silently stop."""
    loggers = [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    disabled = {lg: lg.disabled for lg in loggers}
    try:
        yield
    finally:
        for lg, was in disabled.items():
            lg.disabled = was


def import_mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    _quiet_mlflow_logging()
    return mlflow


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def sqlite_file(uri: str) -> Path | None:
    """The file of a SQLite tracking URI (``sqlite:///rel.db``, ``sqlite:////abs.db``); None for other URIs."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute, so that a worker in another folder opens the same file."""
    path = sqlite_file(uri)
    if path is None:
        return uri
    query = uri.split("?", 1)[1] if "?" in uri else None
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


def is_local_uri(uri: str) -> bool:
    """Whether ``uri`` names a file on this machine (another machine of a Ray cluster would open its own copy)."""
    return sqlite_file(uri) is not None or uri.startswith("file:") or "://" not in uri


def _check_sqlite(path: Path) -> None:
    """Raise ``OSError``/``sqlite3.Error`` saying why SQLite cannot use ``path``: MLflow retries for 100 s first."""
    import sqlite3

    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(f"{path} (or its folder) is not writable")
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=5)) as con:
            con.execute("PRAGMA schema_version").fetchone()  # "file is not a database"
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"{ancestor} is not writable")


@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """Bound MLflow's patience while a store is first opened: one HTTP try of :data:`PROBE_TIMEOUT` seconds (not
    7 retries over about 4 minutes) and one database connection attempt (not 10 over 100 s). Later calls keep
    MLflow's (or the user's) settings, which ride out a busy server."""
    names = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT),
             "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    db_utils = None
    with contextlib.suppress(ImportError):
        from mlflow.store.db import utils as db_utils
    retries = getattr(db_utils, "MAX_RETRY_COUNT", None)
    if retries is not None:
        db_utils.MAX_RETRY_COUNT = 1
    try:
        yield
    finally:
        if retries is not None:
            db_utils.MAX_RETRY_COUNT = retries
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def why(error: BaseException) -> str:
    """The reason in a store error, without MLflow's wrapping (the URL, urllib3's retry report)."""
    text = str(error)
    if "Connection refused" in text or "Failed to establish a new connection" in text:
        return "nothing answers there (connection refused)"
    if "timed out" in text.lower():
        return f"no answer within {PROBE_TIMEOUT} s"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host name"
    database = re.search(r"\((?:sqlite3|sqlalchemy\.exc)\.\w+\) ([^\n\[]+)", text)
    if database:  # SQLAlchemy's words after its wrapping ("(raised as a result of Query-invoked autoflush ...")
        reason = database[1].strip()
        if "readonly database" in reason or "unable to open database file" in reason:
            return f"the database file cannot be written ({reason}): check its and its folder's permissions"
        if "disk" in reason and ("full" in reason or "I/O" in reason):
            return f"the disk refuses the write ({reason})"
        return f"the database refuses it ({reason})"
    return first_line(error)


def _fix(uri: str, source: str) -> str:
    """What to do about a refused URI, by its kind and where it came from."""
    if uri.startswith(("http://", "https://")):
        what = ("Start the server (mlflow server --host 127.0.0.1 --port PORT) or give the address of one that "
                "runs")
    else:
        what = f"Give a SQLite file in a writable folder, such as {DEFAULT_URI}, or the http:// address of a server"
    where = {URI_VARIABLE: f"unset {URI_VARIABLE} or set --tracking-uri",
             "--tracking-uri": "with --tracking-uri"}.get(source, f"in {source}")
    return f"{what} ({where})."


def default_uri() -> tuple[str, str]:
    """The URI used when none is given, and where it came from: ``MLFLOW_TRACKING_URI``, else :data:`DEFAULT_URI`."""
    if os.environ.get(URI_VARIABLE):
        return os.environ[URI_VARIABLE], URI_VARIABLE
    return DEFAULT_URI, "the default"


def _check_file_store(uri: str, source: str) -> None:
    """A ``file:`` store is a folder: a file there is refused in robustal's words (MLflow's run on past the line)."""
    if not uri.startswith("file:"):
        return
    from urllib.parse import unquote, urlparse

    path = Path(unquote(urlparse(uri).path)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"Cannot use the MLflow tracking store {uri!r} (from {source}): {path} is a file, and a "
                          "file: store is a folder of runs. Give a folder, or better a SQLite file such as "
                          f"{DEFAULT_URI} (MLflow's file store is in maintenance mode).")


def open_store(uri: str, experiment: str, source: str):
    """An ``MlflowClient`` on ``uri`` and the id of ``experiment`` (created if new); ConfigError within seconds,
    with the reason and the fix, where the store cannot be used.

    With a SQLite store, a new experiment's artifacts go to ``mlartifacts/`` beside the database file (MLflow would
    otherwise put them in ``./mlruns`` of the working directory).
    """
    mlflow = import_mlflow()
    database = sqlite_file(uri)
    folder = database.parent if database is not None else None
    _check_file_store(uri, source)
    try:
        if database is not None:
            _check_sqlite(database)
        with _folder_lock(folder), warnings.catch_warnings(), loggers_kept(), _fail_fast():
            # MLflow's store trips SQLAlchemy's deprecation warnings (noload); they are not the user's to fix.
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow(\.|$)")
            client = mlflow.MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                location = (folder / "mlartifacts").as_uri() if folder is not None else None
                try:
                    return client, client.create_experiment(experiment, artifact_location=location)
                except mlflow.exceptions.MlflowException:
                    found = client.get_experiment_by_name(experiment)  # another process just created it
                    if found is None:
                        raise
    except Exception as e:
        code = re.search(r"error code (404|405)\b", str(e))
        if code:  # a web server, but not MLflow's API
            raise ConfigError(f"Cannot use the MLflow tracking store {uri!r} (from {source}): the server there "
                              f"answers, but not to MLflow's API (HTTP {code[1]}): it "
                              "is not an MLflow tracking server. Give the address of one (mlflow server --host "
                              "127.0.0.1 --port PORT prints it), or a SQLite file such as "
                              f"{DEFAULT_URI}.") from None
        raise ConfigError(f"Cannot use the MLflow tracking store {uri!r} (from {source}): {why(e)}. "
                          + _fix(uri, source)) from e
    if found.lifecycle_stage != "active":
        raise ConfigError(f"The MLflow experiment {experiment!r} in {uri!r} is deleted; restore it with "
                          f"`mlflow experiments restore --experiment-id {found.experiment_id}` or choose "
                          "another name with --tracking-experiment.")
    return client, found.experiment_id
