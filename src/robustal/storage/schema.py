"""What a results store holds, apart from how it is read and written (:mod:`robustal.storage.store`).

Its tables (:data:`SCHEMA`, and the columns added since the first release, so that older stores are upgraded on
open), a finished stage's row (:class:`StageRecord`), and which configuration keys make a stored run the same run as
the one that resumes it (:func:`config_diff`). Kept apart from :class:`~robustal.storage.store.Store` so that the
rules of what a store records can be read, and tested, without its SQL plumbing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

#: The columns of the ``selections`` table (a finished stage's picks) and the ``pending`` one (picks whose labels
#: are awaited): the same rows, moved from one to the other when the stage finishes.
_PICKS = """(
    run TEXT NOT NULL REFERENCES runs(name),
    stage INTEGER NOT NULL,
    position INTEGER NOT NULL,
    pool_index INTEGER NOT NULL,
    score REAL,
    PRIMARY KEY (run, stage, position)
)"""

#: The tables of a results store (see :mod:`robustal.storage.store`), created where missing when a store is opened.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    versions TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS stages (
    run TEXT NOT NULL REFERENCES runs(name),
    stage INTEGER NOT NULL,
    labeled INTEGER NOT NULL,
    clean REAL,
    robust REAL,
    train_seconds REAL,
    select_seconds REAL,
    eval_seconds REAL,
    best_epoch INTEGER,
    val_score REAL,
    val_clean REAL,
    at_chance INTEGER NOT NULL DEFAULT 0,
    recovery TEXT NOT NULL DEFAULT '',
    pool_images INTEGER,
    pseudo_accuracy REAL,
    teacher_clean REAL,
    PRIMARY KEY (run, stage)
);
CREATE TABLE IF NOT EXISTS selections {_PICKS};
CREATE TABLE IF NOT EXISTS pending {_PICKS};
CREATE TABLE IF NOT EXISTS labels (
    run TEXT NOT NULL REFERENCES runs(name),
    pool_index INTEGER NOT NULL,
    label INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    PRIMARY KEY (run, pool_index)
);
CREATE TABLE IF NOT EXISTS final_attacks (
    run TEXT NOT NULL REFERENCES runs(name),
    attack TEXT NOT NULL,
    version TEXT NOT NULL,
    n INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    clean REAL NOT NULL,
    pgd REAL,
    robust REAL NOT NULL,
    seconds REAL NOT NULL,
    provenance TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run, attack)
);
"""

#: Configuration keys that may differ between the run that started and the one that resumes it.
NON_SEMANTIC_KEYS = frozenset({"device", "progress", "workers", "data_dir", "batch_size_eval",
                               "project",  # a labeling project's folder name (robustal 0.2): renaming it is fine
                               "stop"})  # the stopping rule decides where a run ends, not what its stages are
#: Configuration keys added since the first release whose absence in a stored run means a known value: a run stored
#: before them compares as if it had recorded that value (a run without the pool is never resumed with it).
ADDED_KEY_DEFAULTS = {"loop.pool": {"mode": "none"}, "loop.pool.steps": 0, "loop.train.ema": 0.0}
#: SQLite's application id of a robustal results store ("RBAL"), set when the store is created.
APPLICATION_ID = 0x5242414C
#: The tables every robustal store has.
TABLES = ("runs", "stages", "selections")  # (pending and labels came later: older stores gain them on open)
#: Numeric-environment keys recorded with each run: a different value on resume means results that are not bit
#: for bit those of an uninterrupted run.
ENVIRONMENT_KEYS = ("device", "threads", "torch", "robustal", "isa", "gpu")
#: The columns of ``final_attacks``: a run's final model under a final evaluation attack
#: (:mod:`robustal.loop.final_eval`).
FINAL_ATTACK_COLUMNS = ("run", "attack", "version", "n", "seed", "clean", "pgd", "robust", "seconds", "provenance",
                        "created")


#: The columns of ``stages``, in :class:`StageRecord`'s field order after ``run``.
STAGE_COLUMNS = ("stage", "labeled", "clean", "robust", "train_seconds", "select_seconds", "eval_seconds",
                 "best_epoch", "val_score", "val_clean", "at_chance", "recovery", "pool_images", "pseudo_accuracy",
                 "teacher_clean")
#: Columns added to ``stages`` since the first release, with their SQL type (older stores get them on open).
ADDED_STAGE_COLUMNS = {"val_clean": "REAL", "at_chance": "INTEGER NOT NULL DEFAULT 0",
                       "recovery": "TEXT NOT NULL DEFAULT ''", "pool_images": "INTEGER", "pseudo_accuracy": "REAL",
                       "teacher_clean": "REAL"}


@dataclass(frozen=True)
class StageRecord:
    """One finished stage of a run.

    ``val_score`` is the kept epoch's validation score (robust accuracy under adversarial training), ``val_clean``
    its validation clean accuracy; ``at_chance``: that model was no better than a constant prediction;
    ``recovery``: what the loop did about a model at chance in this stage (``""``, ``"warmup"`` or ``"reinit"``).
    With training on the unlabeled pool (:mod:`robustal.engine.pool_training`): ``pool_images``, the pool images trained
    on (None: the pool was not used); ``teacher_clean``, the self-training teacher's validation clean accuracy;
    ``pseudo_accuracy``, its pseudo-labels' accuracy against the true labels, where known.
    """

    stage: int
    labeled: int
    clean: float
    robust: float | None
    train_seconds: float = 0.0
    select_seconds: float = 0.0
    eval_seconds: float = 0.0
    best_epoch: int | None = None
    val_score: float | None = None
    val_clean: float | None = None
    at_chance: bool = False
    recovery: str = ""
    pool_images: int | None = None
    pseudo_accuracy: float | None = None
    teacher_clean: float | None = None

    def row(self) -> tuple:
        """Values in :data:`STAGE_COLUMNS` order, as stored."""
        return tuple(int(v) if isinstance(v, bool) else v for v in (getattr(self, c) for c in STAGE_COLUMNS))

    @classmethod
    def from_row(cls, row: tuple) -> StageRecord:
        """The record of a stored row (values in :data:`STAGE_COLUMNS` order)."""
        values = dict(zip(STAGE_COLUMNS, row, strict=True))
        values["at_chance"] = bool(values["at_chance"])
        return cls(**values)


def library_versions(device: str | torch.device | None = None) -> dict[str, object]:
    """Versions and the numeric environment (device and GPU, torch threads, CPU model and instruction set) that a
    result depends on, recorded per run (:func:`robustal.storage.provenance.provenance`)."""
    from robustal.storage.provenance import provenance

    return provenance(device)


def config_diff(old: dict, new: dict, prefix: str = "", *, same_data: bool | None = None) -> list[str]:
    """Human-readable differences between two configuration dicts, ignoring :data:`NON_SEMANTIC_KEYS`.

    Where both sides record the data's fingerprint, the data are identified by it, not by the path they were read
    from (the same file given by a relative and an absolute path is the same data; changed contents are not).
    Keys the stored side lacks were added by a later robustal and are not compared (a run stored before them can
    be resumed; resuming under another robustal version warns, see :data:`ENVIRONMENT_KEYS`), except those of
    :data:`ADDED_KEY_DEFAULTS`, compared with the value they stand for.
    """
    if same_data is None:
        same_data = bool(old.get("data_fingerprint")) and old.get("data_fingerprint") == new.get("data_fingerprint")
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old and f"{prefix}{key}" in ADDED_KEY_DEFAULTS:
            old = {**old, key: ADDED_KEY_DEFAULTS[f"{prefix}{key}"]}
        if key in NON_SEMANTIC_KEYS or (same_data and key == "dataset") or key not in old:
            continue
        a, b = old.get(key), new.get(key)
        if key == "data_fingerprint" and a != b:
            out.append(f"the data: their contents differ from those the run was made with (fingerprint stored "
                       f"{str(a)[:12]}, now {str(b)[:12]})")
        elif isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, f"{prefix}{key}.", same_data=same_data)
        elif a != b:
            out.append(_difference(f"{prefix}{key}", a, b))
    return out


def _difference(path: str, stored: object, now: object) -> str:
    """One line of :func:`config_diff` (and what :func:`changed_defaults_hint` looks for in them)."""
    return f"{path}: stored {stored!r}, now {now!r}"


#: Training defaults that robustal 0.4 changed (docs/recipe.md: 15 epochs of >= 150 steps gained 6.5 AutoAttack
#: points at 1 000 labels): setting -> (0.3's default, 0.4's default, the command-line flag).
CHANGED_TRAIN_DEFAULTS = {"epochs": (10, 15, "--epochs"), "min_steps": (100, 150, "--min-steps")}


def changed_defaults_hint(diff: list[str]) -> str:
    """A sentence for a refusal whose differences are the training defaults robustal 0.4 changed (empty otherwise):
    the stored results were most likely made under the old defaults, and naming them resumes them."""
    text = "\n".join(diff)  # a study's refusal joins several runs' lines with "; "
    old = {key: values for key, values in CHANGED_TRAIN_DEFAULTS.items()
           if re.search(rf"\b{re.escape(_difference(f'train.{key}', values[0], values[1]))}(;|$)", text, re.MULTILINE)}
    if not old:
        return ""
    flags = " ".join(f"{flag} {was}" for was, _, flag in old.values())
    toml = ", ".join(f"{key} = {was}" for key, (was, _, _) in old.items())
    return (f" These look like robustal 0.3's training defaults, changed in 0.4 (docs/recipe.md): to resume under "
            f"them, give {flags} (in a study file, [train] {toml}).")
