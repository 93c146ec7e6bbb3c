"""Executors: a list of runs on local worker processes or as Ray tasks, skipping finished runs and resuming
interrupted ones (every run goes through :func:`~robustal.loop.experiment.run_experiment` and the store).

Under Ray, each run is stored on its worker in a temporary store and its rows and final checkpoint are sent back to
the driver, which alone writes the real store (:meth:`~robustal.storage.store.Store.import_run`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from robustal.errors import StoreError
from robustal.loop.experiment import RunSpec, run_experiment
from robustal.loop.final_eval import FinalAttackConfig, is_due, log_row
from robustal.storage.schema import StageRecord
from robustal.storage.store import Store

if TYPE_CHECKING:
    from robustal.studies.study_tracking import TrackingTarget


@dataclass(frozen=True)
class RunTask:
    """One run of a study: its unique ``name`` in the store and its ``spec``; ``final_attack``
    (:class:`~robustal.loop.final_eval.FinalAttackConfig`): attack the final model once the run is finished (not part of
    the spec, so adding it to a finished study only attacks)."""

    name: str
    spec: RunSpec
    final_attack: FinalAttackConfig | None = None


def _check_unique(tasks: Sequence[RunTask]) -> None:
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError("Run names in a study must be unique.")


def _run_task(task: RunTask, out: str, device: str, data_dir: str | None, threads: int | None,
              tracking: TrackingTarget | None = None) -> tuple[str, list]:
    """Worker entry point: one run, stored in ``out`` and logged live to ``tracking``; returns its stage records
    (``threads`` None: leave torch's)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    tracker = tracking.open() if tracking is not None else None
    result = run_experiment(task.spec, out, name=task.name, data_dir=data_dir, device=device, tracker=tracker,
                            final_attack=task.final_attack)
    return task.name, result.stages


def _worker_init(parent: int) -> None:
    """A local worker process: it ends with ``parent`` (:mod:`robustal.studies._lifeline`), shows robustal's
    warnings as the CLI does, one plain line each (not Python's file-and-line form with the source line), and takes
    SIGTERM (:func:`_stop_workers`) as an interrupt, so its run is marked interrupted and its tracker closed."""
    import signal

    from robustal.errors import raise_terminated, show_plain_warnings
    from robustal.studies._lifeline import die_with_parent

    die_with_parent(parent)
    show_plain_warnings("study")
    signal.signal(signal.SIGTERM, raise_terminated)


def check_stored_runs(tasks: Sequence[RunTask], out: str | Path, data_dir: str | Path | None = None) -> None:
    """Before anything runs or is written: every task's budget fits its pool, and runs already stored in ``out`` were
    made under the same settings and data.

    Every task whose name the store already holds must have been stored with the same spec (the study file's
    settings for that run) and the same data (fingerprint), so a finished run is never reported as the result of
    an edited study, and an interrupted one never continues under new settings. Each dataset is loaded once.
    """
    import json

    from robustal.loop.experiment import spec_for_store
    from robustal.storage.schema import changed_defaults_hint, config_diff

    store = Store(out, create=False) if (Path(out) / "results.db").is_file() else None
    data: dict[str, tuple[str, int]] = {}  # dataset -> (fingerprint, pool size)
    problems = []
    for task in tasks:
        if task.spec.dataset not in data:
            dataset = task.spec.load_data(data_dir)
            data[task.spec.dataset] = (dataset.fingerprint(), len(dataset.train))
        fingerprint, pool = data[task.spec.dataset]
        task.spec.loop.check_pool(pool)
        stored = store.run_config(task.name) if store is not None else None
        if stored is None:
            continue
        if "spec" not in stored:
            problems.append(f"{task.name}: stored by an earlier robustal without its settings, so it cannot be "
                            "checked")
            continue
        new = {"spec": json.loads(json.dumps(spec_for_store(task.spec))), "data_fingerprint": fingerprint}
        diff = config_diff({"spec": stored["spec"], "data_fingerprint": stored.get("data_fingerprint")}, new)
        if diff:
            problems.append(f"{task.name}: " + "; ".join(diff))
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise StoreError(f"{out} already holds {len(problems)} of these runs made under other settings or "
                         f"data:\n  {shown}\nNothing was run or changed. Undo the change, or write to another --out "
                         "folder." + changed_defaults_hint(problems))


def _prepare(tasks: Sequence[RunTask], out: str | Path, data_dir, checked: bool, on_done):
    """What both executors do first: unique names, the stored runs checked (unless the caller did), the store
    opened, finished runs reported at once. Returns ``(names, store, results so far, runs to do)``."""
    _check_unique(tasks)
    if not checked:
        check_stored_runs(tasks, out, data_dir)
    store = Store(out)
    results: dict[str, list[StageRecord]] = {}
    return [t.name for t in tasks], store, results, _split_finished(tasks, store, results, on_done)


def _split_finished(tasks: Sequence[RunTask], store: Store, results: dict, on_done) -> list[RunTask]:
    todo = []
    for t in tasks:  # a finished run whose final attack is due is a task: the attack, without retraining
        if store.status(t.name) == "finished" and not is_due(store, t.name, t.final_attack):
            results[t.name] = store.stages(t.name)
            if on_done is not None:
                on_done(t.name, results[t.name])
        else:
            todo.append(t)
    return todo


def run_local(tasks: Sequence[RunTask], out: str | Path, *, workers: int = 1, device: str = "auto",
              data_dir: str | Path | None = None, on_done: Callable[[str, list[StageRecord]], None] | None = None,
              checked: bool = False, tracking: TrackingTarget | None = None) -> dict[str, list[StageRecord]]:
    """Run ``tasks`` (skipping finished ones) on ``workers`` processes; each worker writes its run to the store.

    Torch threads are split evenly between worker processes (one worker: runs in this process, with its torch
    threads). ``on_done(name, stages)`` is called as each run finishes
    (at once for runs that were already finished). The tasks are checked first (:func:`check_stored_runs`)
    unless ``checked`` says the caller has done it. With ``tracking`` each worker logs its run live (MLflow).
    """
    names, store, results, todo = _prepare(tasks, out, data_dir, checked, on_done)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    data = str(data_dir) if data_dir else None
    final = {t.name: t.final_attack for t in todo}
    if workers <= 1 or len(todo) <= 1:
        for t in todo:
            name, stages = _run_task(t, str(out), device, data, None, tracking)  # in this process: its threads
            log_row(store, name, final[name])
            results[name] = stages
            if on_done is not None:
                on_done(name, stages)
        return {n: results[n] for n in names}
    import multiprocessing as mp

    # Workers end with this process (SIGKILL included): none goes on writing into a folder whose lock is free.
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(os.getpid(),)) as pool:
        pending = {pool.submit(_run_task, t, str(out), device, data, threads, tracking) for t in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    name, stages = fut.result()
                    log_row(store, name, final[name])
                    results[name] = stages
                    if on_done is not None:
                        on_done(name, stages)
        except BaseException as e:
            for fut in pending:
                fut.cancel()
            if isinstance(e, KeyboardInterrupt):
                _stop_workers(pool)
            raise
    return {n: results[n] for n in names}


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the workers' runs now, not when they finish: an interrupt sent to this process alone (``kill -INT``, a
    scheduler) would otherwise wait out every running run. Their finished stages are stored; a rerun resumes."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def _ray_task(task: RunTask, partial: dict | None, device: str, data_dir: str | None,
              tracking: TrackingTarget | None = None) -> dict:
    """Ray worker: one run into a temporary store (seeded with the driver's partial rows to resume), logged live to
    ``tracking`` under the study's real results folder; its records."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    tracker = tracking.open() if tracking is not None else None
    with tempfile.TemporaryDirectory(prefix="robustal-ray-") as tmp:
        store = Store(tmp)
        if partial is not None:
            store.import_run(partial)
        run_experiment(task.spec, tmp, name=task.name, data_dir=data_dir, device=device, tracker=tracker,
                       final_attack=task.final_attack)
        return store.export_run(task.name)


#: Default GPU shares of a Ray task by the model's parameter count: small nets cannot fill a GPU alone.
GPU_SHARES = ((1_000_000, 0.25), (20_000_000, 0.5))


def gpu_share(spec: RunSpec) -> float:
    """The share of one GPU a run asks Ray for by default: 0.25 under 1 M parameters (LeNet-5, the small CNN),
    0.5 under 20 M (VGG8, ResNet-18, PreAct-ResNet-18, VGG16), a whole GPU above (WideResNet-28-10) or for a user's
    model."""
    from robustal.data.registry import default_model_for
    from robustal.models import MODELS, create_model

    name = spec.model or default_model_for(spec.dataset)
    if name is None or name not in MODELS:
        return 1.0
    params = sum(p.numel() for p in create_model(name, num_classes=10, in_channels=3, image_size=32).parameters())
    return next((share for limit, share in GPU_SHARES if params < limit), 1.0)


def run_ray(tasks: Sequence[RunTask], out: str | Path, *, address: str | None = None, device: str = "auto",
            data_dir: str | Path | None = None, num_cpus: int | None = None,
            on_done: Callable[[str, list[StageRecord]], None] | None = None,
            checked: bool = False, gpus_per_run: float | None = None,
            tracking: TrackingTarget | None = None) -> dict[str, list[StageRecord]]:
    """Run ``tasks`` (skipping finished ones) as Ray tasks; only this process writes the store in ``out``.

    Args:
        address: A Ray cluster's address (``host:port`` of ``ray start --head``, ``auto``, ``ray://host:10001``...;
            default ``RAY_ADDRESS``), checked before connecting, token authentication included
            (:mod:`robustal.studies.ray_cluster`); None starts a local instance with ``num_cpus`` CPUs (default: this
            machine's count), no dashboard and no worker logs on the console.
        device: On ``cuda``/``cuda:N`` each task asks Ray for a share of a GPU, so that several small runs share
            one card: ``gpus_per_run``, or by default :func:`gpu_share` of the run's model.
        tracking: Each task logs its run live there (MLflow), nested under the study's run.

    An interrupted run resumes on a worker from the rows and checkpoint the driver sends it; a finished run comes
    back as its rows and final checkpoint, imported into the store in one transaction.
    """
    from robustal.studies.ray_cluster import import_ray, ray_session

    ray = import_ray()
    names, store, results, todo = _prepare(tasks, out, data_dir, checked, on_done)
    if not todo:
        return {n: results[n] for n in names}
    with ray_session(address, num_cpus):
        on_gpu = str(device).startswith("cuda")
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        data = str(data_dir) if data_dir else None
        refs = {}
        for t in todo:
            share = (gpus_per_run if gpus_per_run is not None else gpu_share(t.spec)) if on_gpu else 0
            # a finished run is a task only for its final attack: it goes whole (rows and final checkpoint)
            ref = remote.options(num_gpus=share).remote(t, store.export_run(t.name), device, data, tracking)
            refs[ref] = t.name
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    record = _ray_result(ray, ref, refs[ref])
                    store.import_run(record)
                    name = refs[ref]
                    log_row(store, name, next(t.final_attack for t in todo if t.name == name))
                    results[name] = store.stages(name)
                    if on_done is not None:
                        on_done(name, results[name])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    return {n: results[n] for n in names}


def _ray_result(ray, ref, name: str) -> dict:
    """A Ray task's result; a robustal error on the worker is raised here as itself, without the worker's traceback
    that Ray's ``RayTaskError`` carries in its text."""
    from robustal.errors import ConfigError, DataError, RobustalError

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, RobustalError):
            kind = next((k for k in (ConfigError, DataError, StoreError) if isinstance(cause, k)), RobustalError)
            raise kind(f"run {name} (on a Ray worker): {cause}") from None
        raise


EXECUTORS = ("local", "ray")


__all__ = ["EXECUTORS", "GPU_SHARES", "RunTask", "check_stored_runs", "gpu_share", "run_local", "run_ray"]
