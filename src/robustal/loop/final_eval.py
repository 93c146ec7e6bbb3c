"""Final attacks: each finished run's final model under a stronger evaluation attack than its per-stage PGD, stored in
the results store's ``final_attacks`` table.

PGD alone is not a robustness claim (RobustBench evaluates with AutoAttack), but AutoAttack at every stage would
cost more than the training. So a run (``robustal run --final-attack``), a study (``[final_attack]``) or an existing
results folder (``robustal attack DIR``) attacks only the final model, on the first ``n`` test images: clean
accuracy, robust accuracy under the run's own evaluation attack (``pgd``, as stored with the run) and under the final
attack (``robust``), with the seconds it took and the machine it ran on (:mod:`robustal.storage.provenance`).

The setting is not part of a run's configuration: adding it to a finished study attacks its final models without
retraining them, and a run whose row exists with the same attack, ``n`` and seed is skipped. A row made with another
``n`` or seed is replaced, never silently reused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from robustal._validation import check_choice, check_int
from robustal.errors import ConfigError, StoreError
from robustal.storage.store import Store

logger = logging.getLogger(__name__)

#: The final attacks: name (a registered attack, :data:`robustal.engine.attacks.ATTACKS`) → its version in words.
FINAL_ATTACKS = {"autoattack": "standard (APGD-CE, APGD-T, FAB-T, Square)",
                 "autoattack-fast": "fast (APGD-CE, APGD-T)"}
#: The test images attacked by default: the first 200, as paper-mnist's final-attacks.csv.
DEFAULT_N = 200


@dataclass(frozen=True)
class FinalAttackConfig:
    """A final evaluation attack: ``attack`` (:data:`FINAL_ATTACKS`) on the first ``n`` test images, its random
    choices seeded by ``seed``."""

    attack: str = "autoattack"
    n: int = DEFAULT_N
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.attack, "attack", "the final attack", tuple(FINAL_ATTACKS))
        check_int(self.n, "n", "the final attack", min_value=1)
        check_int(self.seed, "seed", "the final attack", min_value=0)

    @property
    def version(self) -> str:
        return FINAL_ATTACKS[self.attack]

    def done(self, row: dict | None) -> bool:
        """Whether a stored row was made with this setting (same attack, ``n`` and seed)."""
        return row is not None and (row["attack"], row["n"], row["seed"]) == (self.attack, self.n, self.seed)

    def describe(self) -> str:
        return f"{self.attack} on the first {self.n} test images"


def stored_row(store: Store, name: str, attack: str) -> dict | None:
    """Run ``name``'s row under ``attack`` (None if absent)."""
    return next((r for r in store.final_attacks(name) if r["attack"] == attack), None)


def is_due(store: Store, name: str, config: FinalAttackConfig | None) -> bool:
    """Whether finished run ``name`` still needs ``config``'s attack (no row, or a row with another ``n`` or seed)."""
    return config is not None and not config.done(stored_row(store, name, config.attack))


def attack_run(store: Store, name: str, config: FinalAttackConfig, *, device: str | torch.device = "cpu",
               data_dir: str | Path | None = None, factory: str | None = None, dataset=None) -> dict:
    """Attack finished run ``name``'s final model (its last stored checkpoint) and store the row; returns it.

    ``factory``: the user's model factory to rebuild a run of a user's model (never imported because a store names
    it); ``dataset``: the run's data when the caller has it loaded.
    """
    from robustal._runtime import resolve_device
    from robustal.data import load_dataset
    from robustal.engine.attacks import AttackConfig
    from robustal.engine.evaluation import evaluate
    from robustal.loop.checkpoint import trusted_model_name
    from robustal.loop.experiment import model_factory
    from robustal.models.memory_format import apply_memory_format
    from robustal.storage.provenance import provenance

    config = FinalAttackConfig(config.attack, config.n, config.seed)  # validated again: it may come from a pickled task
    stored = {r["name"]: r for r in store.runs()}.get(name)
    stages = store.stages(name)
    if stored is None or stored["status"] != "finished" or not stages:
        raise StoreError(f"Run {name!r} in {store.root} is not finished; only a finished run's final model is "
                         "attacked. Finish it first (run the same command again).")
    started = time.perf_counter()
    device = resolve_device(device)
    cfg = stored["config"]
    spec = cfg.get("spec") or {}
    if dataset is None:
        dataset = load_dataset(cfg["dataset"], data_dir, image_size=spec.get("image_size"),
                               channels=spec.get("channels"),
                               epsilon=(spec.get("loop") or {}).get("train", {}).get("epsilon"))
    model_name = trusted_model_name(str(cfg.get("model_name", cfg.get("model"))), factory, f"Run {name!r}")
    model = model_factory(model_name, dataset)()
    model.load_state_dict(store.load_checkpoint(name, stages[-1].stage)["model"])
    model.to(device)
    apply_memory_format(model, device, cfg["loop"]["train"].get("memory_format", "contiguous"))
    test = dataset.splits().test
    if config.n > len(test):
        raise ConfigError(f"The final attack's n = {config.n} is more than the {len(test)} test images of run "
                          f"{name!r}; give a smaller n.")
    test = test.subset(torch.arange(config.n))
    own = cfg["loop"].get("eval_attack")
    pgd = None
    if own:
        rule = own.get("rule") or ("any-iterate" if "validate_last" in cfg["loop"]["train"] else "last-iterate")
        pgd = evaluate(model, test, replace(AttackConfig(**own), rule=rule), device=device, seed=config.seed).robust
    epsilon = own["epsilon"] if own else dataset.epsilon
    result = evaluate(model, test, AttackConfig(config.attack, epsilon=epsilon), device=device, seed=config.seed)
    row = {"run": name, "attack": config.attack, "version": config.version, "n": config.n, "seed": config.seed,
           "clean": result.clean, "pgd": pgd, "robust": result.robust,
           "seconds": round(time.perf_counter() - started, 1), "provenance": provenance(device),
           "created": time.time()}
    store.add_final_attack(row)
    return row


def row_line(row: dict) -> str:
    """A stored row in a log line: run, attack, accuracies, seconds."""
    pgd = "-" if row["pgd"] is None else f"{row['pgd']:.3f}"
    return (f"{row['run']}: {row['attack']} on {row['n']} test images: clean {row['clean']:.3f}, PGD {pgd}, "
            f"{row['attack']} {row['robust']:.3f} ({row['seconds']:.1f} s)")


def log_row(store: Store, name: str, config: FinalAttackConfig | None) -> None:
    """Log run ``name``'s row under ``config`` (the executors call it as each run's task ends)."""
    if config is not None:
        row = stored_row(store, name, config.attack)
        if row is not None:
            logger.info("final attack: %s", row_line(row))


def _attack_task(out: str, name: str, config: FinalAttackConfig, device: str, data_dir: str | None, factory: str | None,
                 threads: int | None) -> dict:
    if threads is not None:
        torch.set_num_threads(threads)
    return attack_run(Store(out, create=False), name, config, device=device, data_dir=data_dir, factory=factory)


def attack_runs(out: str | Path, names: Sequence[str], config: FinalAttackConfig, *, workers: int = 1,
                device: str = "auto", data_dir: str | Path | None = None, factory: str | None = None,
                on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Attack the final models of the finished runs ``names`` of ``out`` that ``config`` has not attacked yet, on
    ``workers`` processes (torch threads split between them); ``on_done(row)`` as each is stored. Returns the new
    rows."""
    import os

    store = Store(out, create=False)
    todo = [n for n in names if is_due(store, n, config)]
    data = str(data_dir) if data_dir else None
    rows = []
    if workers <= 1 or len(todo) <= 1:
        for name in todo:
            rows.append(attack_run(store, name, config, device=device, data_dir=data, factory=factory))
            if on_done is not None:
                on_done(rows[-1])
        return rows
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        pending = {pool.submit(_attack_task, str(out), n, config, device, data, factory, threads) for n in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    rows.append(fut.result())
                    if on_done is not None:
                        on_done(rows[-1])
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return rows


__all__ = ["DEFAULT_N", "FINAL_ATTACKS", "FinalAttackConfig", "attack_run", "attack_runs", "is_due", "log_row",
           "row_line", "stored_row"]
