"""Running a study into its results folder: the checks before anything is written, the study file's copy beside
the results (read back by ``robustal report`` and ``robustal attack``), and the hand-over of its runs to an executor
(:mod:`robustal.studies.executors`, local processes or Ray), with its MLflow run.

Kept apart from :mod:`robustal.studies.study`, which reads and validates the study file (what a study is), as this
is what running one does to its folder: a study that fails before it stores a stage leaves the folder as it was
(:func:`~robustal.storage.outputs.undone_on_failure`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robustal.errors import ConfigError
from robustal.storage.outputs import atomic_write_bytes, undone_on_failure
from robustal.storage.schema import StageRecord
from robustal.storage.store import Store
from robustal.studies.executors import EXECUTORS, RunTask, check_stored_runs, run_local, run_ray
from robustal.studies.study import Study

#: The file name of the study's copy in its output folder, read by ``robustal report``.
STUDY_COPY = "study.toml"
#: The original study file's folder, against which the copy's relative dataset paths resolve.
STUDY_SOURCE = "study-source.txt"


def stored_stages(out: str | Path) -> int:
    """How many stages ``out/results.db`` holds (0 without one), read without changing anything."""
    import sqlite3

    path = Path(out) / "results.db"
    if not path.is_file():
        return 0
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return int(con.execute("SELECT COUNT(*) FROM stages").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return -1


#: What a study writes into its folder before its first stage; put back as it was when it fails before one.
STUDY_FILES = (STUDY_COPY, STUDY_SOURCE, "results.db", "results.db-wal", "results.db-shm", "results.db-journal",
               "checkpoints")


def save_study_copy(study_file: str | Path, out: str | Path) -> Path:
    """Copy the study file to ``out/study.toml`` (and record its folder), so ``robustal report`` knows the grid."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(study_file).resolve()
    dest = out / STUDY_COPY
    if src != dest.resolve():
        atomic_write_bytes(dest, src.read_bytes())
        atomic_write_bytes(out / STUDY_SOURCE, (str(src.parent) + "\n").encode())
    return dest


def load_study_copy(out: str | Path) -> Study | None:
    """The study stored in ``out`` by :func:`save_study_copy` (None if there is none)."""
    out = Path(out)
    if not (out / STUDY_COPY).is_file():
        return None
    source = out / STUDY_SOURCE
    base = source.read_text().strip() if source.is_file() else out
    return Study.load(out / STUDY_COPY, base=base)


def run_study(study: Study, out: str | Path, *, executor: str = "local", workers: int = 1, device: str = "auto",
              data_dir: str | Path | None = None, address: str | None = None,
              on_done: Callable[[str, list[StageRecord]], None] | None = None,
              study_file: str | Path | None = None, tracker=None,
              gpus_per_run: float | None = None,
              report: Callable[[], Path] | None = None) -> dict[str, list[StageRecord]]:
    """Run every unfinished run of ``study`` into ``out`` with the ``local`` or ``ray`` executor.

    ``study_file`` is copied to ``out/study.toml`` for ``robustal report`` only once every check has passed (the
    data, each grid model built on its data, the stored runs (:func:`check_stored_runs`), Ray importable), so a
    refused study never replaces the copy of the one that made the results.

    With an MLflow ``tracker`` (:mod:`robustal.tracking.tracking`) the study gets one MLflow run, and each of its runs
    is nested under it and logged live by the process or Ray task that executes it; ``report`` (called once the runs
    are done, if any ran now) returns a file or folder to attach to the study's run. Another tracker mirrors each
    run as it finishes, from this process.
    """
    from robustal._validation import check_choice, check_int

    check_choice(executor, "executor", "run_study", EXECUTORS)
    check_int(workers, "workers", "run_study", min_value=1)
    study.check_data()
    study.check_models(data_dir)
    tasks = study.tasks()
    try:
        check_stored_runs(tasks, out, data_dir)
    except ConfigError as e:  # a budget beyond a pool: the study file's [loop] says so
        raise ConfigError(f"{study.source}: {e} (budget in [loop])") from None
    if executor == "ray":
        try:
            import ray  # noqa: F401 - refused here, before the study's copy is written
        except ImportError:
            raise ConfigError("The Ray executor needs Ray: pip install 'robustal[ray]' (or use --executor local).") \
                from None
    # A study that fails before storing a stage leaves its folder as it was: its study copy (and a store it made).
    kept = STUDY_FILES if not (Path(out) / "results.db").is_file() else (STUDY_COPY, STUDY_SOURCE)
    with undone_on_failure(out, kept, lambda: stored_stages(out)):
        if study_file is not None:
            save_study_copy(study_file, out)
        return _execute(study, tasks, out, executor=executor, workers=workers, device=device, data_dir=data_dir,
                        address=address, on_done=on_done, study_file=study_file, tracker=tracker,
                        gpus_per_run=gpus_per_run, report=report)


def _execute(study: Study, tasks: list[RunTask], out: str | Path, *, executor, workers, device, data_dir, address,
             on_done, study_file, tracker, gpus_per_run, report) -> dict[str, list[StageRecord]]:
    """The runs of :func:`run_study`, once every check has passed."""
    from robustal.tracking.tracking import MLflowTracker

    def execute(done, tracking=None):
        if executor == "ray":
            return run_ray(tasks, out, address=address, device=device, data_dir=data_dir,
                           num_cpus=workers if address is None else None, on_done=done, checked=True,
                           gpus_per_run=gpus_per_run, tracking=tracking)
        return run_local(tasks, out, workers=workers, device=device, data_dir=data_dir, on_done=done, checked=True,
                         tracking=tracking)

    if isinstance(tracker, MLflowTracker):
        from robustal.studies.study_tracking import StudyTracking, pending, study_params

        store = Store(out)
        with StudyTracking(tracker, study.name, out, len(tasks), pending(tasks, store), study_file=study_file,
                           params=study_params(study)) as tracking:

            def mirrored(name: str, stages: list[StageRecord]) -> None:
                tracking.run_done(store, name)
                if on_done is not None:
                    on_done(name, stages)

            results = execute(mirrored, tracking.target)
            tracking.summarize(out, [t.name for t in tasks])
            if report is not None and tracking.active:
                tracking.attach(report())
        return results
    if tracker is not None and tracker.enabled:
        from robustal.tracking.tracking import track_stored_run

        store, inner = Store(out), on_done

        def on_done(name: str, stages: list[StageRecord]) -> None:
            track_stored_run(tracker, store, name)
            if inner is not None:
                inner(name, stages)

    return execute(on_done)


__all__ = ["STUDY_COPY", "STUDY_FILES", "STUDY_SOURCE", "load_study_copy", "run_study", "save_study_copy",
           "stored_stages"]
