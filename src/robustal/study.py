"""Running many runs: sequentially in this process, or on local worker processes.

Each run is a :class:`RunTask` (a name and a :class:`~robustal.experiment.RunSpec`). Finished runs are skipped and
interrupted ones resume, because every run goes through :func:`~robustal.experiment.run_experiment` and the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from robustal.experiment import RunSpec, run_experiment
from robustal.store import StageRecord, Store


@dataclass(frozen=True)
class RunTask:
    """One run of a study: its unique ``name`` in the store and its ``spec``."""

    name: str
    spec: RunSpec


def _run_task(task: RunTask, out: str, device: str, data_dir: str | None, threads: int) -> tuple[str, list]:
    """Worker entry point: one run, stored in ``out``; returns its stage records."""
    import torch

    torch.set_num_threads(threads)
    result = run_experiment(task.spec, out, name=task.name, data_dir=data_dir, device=device)
    return task.name, result.stages


def run_local(tasks: Sequence[RunTask], out: str | Path, *, workers: int = 1, device: str = "auto",
              data_dir: str | Path | None = None,
              on_done: Callable[[str, list[StageRecord]], None] | None = None) -> dict[str, list[StageRecord]]:
    """Run ``tasks`` (skipping finished ones) on ``workers`` processes; each worker writes its run to the store.

    Torch threads are split evenly between workers. ``on_done(name, stages)`` is called as each run finishes.
    """
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError("Run names in a study must be unique.")
    store = Store(out)
    results: dict[str, list[StageRecord]] = {}
    todo = []
    for t in tasks:
        if store.status(t.name) == "finished":
            results[t.name] = store.stages(t.name)
            if on_done is not None:
                on_done(t.name, results[t.name])
        else:
            todo.append(t)
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    data = str(data_dir) if data_dir else None
    if workers <= 1 or len(todo) <= 1:
        for t in todo:
            name, stages = _run_task(t, str(out), device, data, threads)
            results[name] = stages
            if on_done is not None:
                on_done(name, stages)
        return results
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        pending = {pool.submit(_run_task, t, str(out), device, data, threads) for t in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    name, stages = fut.result()
                    results[name] = stages
                    if on_done is not None:
                        on_done(name, stages)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return {n: results[n] for n in names}
