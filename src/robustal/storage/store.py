"""The results store: one SQLite file (``DIR/results.db``) plus per-run checkpoints under ``DIR/checkpoints``.

Tables: ``runs`` (name, configuration, seed, library versions and numeric environment, status), ``stages`` (labeled
count, clean and robust accuracy, times, chance-level flag), ``selections`` (the pool indices picked at each
stage, with scores), ``pending`` (a stage's picks while their labels are awaited) and ``labels`` (every label the
oracle gave, so that nothing is asked twice) and ``final_attacks`` (each run's final model under a final evaluation
attack, such as AutoAttack, with the machine that ran it). Every write is one transaction; WAL mode and a long
busy timeout let several processes share one store without losing rows. Checkpoints are written to a temporary file
and renamed into place, so a crash never leaves a half-written one. A database file that is not robustal's is never
modified: it is refused with what it is. What the tables hold, and when a stored run is the same run, is
:mod:`robustal.storage.schema`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import torch

from robustal.errors import CheckpointError, ReproducibilityWarning, StoreError
from robustal.storage import schema
from robustal.storage.outputs import atomic_torch_save, atomic_write_bytes, safe_torch_load
from robustal.storage.schema import FINAL_ATTACK_COLUMNS, STAGE_COLUMNS, StageRecord, config_diff, library_versions


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` while a store in it is created or upgraded.

    SQLite's busy timeout does not cover switching a new file to WAL mode: two processes opening a new store at
    once could fail with "database is locked". Where ``fcntl`` is missing (Windows), or the file system cannot
    lock a folder (some network file systems), there is no lock: the schema is still created in one transaction.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. NFS, where flock becomes a POSIX lock that needs write access
            pass
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Store:
    """Results of many runs in ``root/results.db``, checkpoints in ``root/checkpoints/<run>/``.

    Args:
        root: The output folder (created if needed).
    """

    def __init__(self, root: str | Path, *, create: bool = True):
        if str(root).strip() == "":
            raise StoreError("The results folder (--out) is empty; give a folder.")
        self.root = Path(root).expanduser()
        self.path = self.root / "results.db"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{str(self.root)!r} is a file, not a folder; give a results folder with --out.")
        for p, what in ((self.path, "the results database"), (self.root / "checkpoints", "the checkpoint folder")):
            if p.exists() and p.is_dir() != (what == "the checkpoint folder"):
                kind = "a directory" if p.is_dir() else "a file"
                raise StoreError(f"{p} is {kind}, but it should be {what}; move it away or use another --out.")
        if not create and not self.path.is_file():
            raise StoreError(f"{str(self.root)!r} holds no results.db; give the --out folder of a study or run.")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with _folder_lock(self.root):  # checked under the lock: another process may be creating it now
                self._check_is_ours()
                self._create_or_upgrade()
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"Cannot use {str(self.root)!r} as an output folder ({e}). "
                             "Choose a writable folder with --out.") from None

    def _create_or_upgrade(self) -> None:
        """Create the tables (or add those and the columns an older store lacks) in one transaction.

        One transaction, so that another process never sees half a schema (and takes the store for another
        program's); the caller holds the folder lock, so that two processes never switch it to WAL at once.
        """
        with self._transaction() as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone():
                con.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            for statement in schema.SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            have = {r[1] for r in con.execute("PRAGMA table_info(stages)")}
            for column, kind in schema.ADDED_STAGE_COLUMNS.items():
                if column not in have:
                    con.execute(f"ALTER TABLE stages ADD COLUMN {column} {kind}")

    def _check_is_ours(self) -> None:
        """Refuse, without changing it, a results.db that is not a SQLite file or holds another program's tables."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        try:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                app = con.execute("PRAGMA application_id").fetchone()[0]
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                con.close()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path} is not a robustal results database ({e}). Move it away, or write to "
                             "another --out folder.") from None
        if tables and (app not in (0, schema.APPLICATION_ID) or not set(schema.TABLES) <= tables):
            raise StoreError(f"{self.path} is a SQLite database of another program (tables: "
                             f"{', '.join(sorted(tables))}), not a robustal results store; it was left unchanged. "
                             "Move it away, or write to another --out folder.")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA busy_timeout=120000")
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # --- runs -----------------------------------------------------------------------------------------------------
    def start_run(self, name: str, config: dict, seed: int, device: str | torch.device | None = None) -> str:
        """Create run ``name`` or reopen it for resuming; returns its status.

        On resume under another numeric environment (device, torch threads, torch version) a
        :class:`~robustal.errors.ReproducibilityWarning` says that the rest will not be bit for bit an
        uninterrupted run's.

        Raises:
            StoreError: the store already has ``name`` with a different configuration.
        """
        now = time.time()
        text = json.dumps(config, sort_keys=True)
        config = json.loads(text)  # compare like with like: tuples became lists in the stored copy
        versions = library_versions(device)
        with self._transaction() as con:
            row = con.execute("SELECT config, status, versions FROM runs WHERE name = ?", (name,)).fetchone()
            if row is None:
                con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, 'running', ?, ?)",
                            (name, text, seed, json.dumps(versions), now, now))
                return "new"
            diff = config_diff(json.loads(row[0]), config)
            if diff:
                raise StoreError(
                    f"{self.path} already holds run {name!r} with a different configuration ("
                    + "; ".join(diff) + "). Resume with the same settings, or write to another --out folder "
                    "(or give the run another --name)." + schema.changed_defaults_hint(diff))
            if row[1] != "finished":  # the caller marks it running once it has read what it resumes from
                stored = json.loads(row[2])
                changed = [f"{k} {stored.get(k)} -> {versions.get(k)}" for k in schema.ENVIRONMENT_KEYS
                           if k in stored and k in versions and str(stored[k]) != str(versions[k])]
                if changed:
                    warnings.warn(f"Run {name!r} resumes under another numeric environment ({', '.join(changed)}): "
                                  "its remaining stages will not be bit for bit those of an uninterrupted run.",
                                  ReproducibilityWarning, stacklevel=2)
            return row[1]

    def run_config(self, name: str) -> dict | None:
        """The stored configuration of run ``name`` (None if the store has no such run)."""
        with self._connect() as con:
            row = con.execute("SELECT config FROM runs WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_status(self, name: str, status: str) -> None:
        with self._transaction() as con:
            con.execute("UPDATE runs SET status = ?, updated = ? WHERE name = ?", (status, time.time(), name))

    def runs(self) -> list[dict]:
        """Every run: name, config (dict), seed, versions (dict), status."""
        with self._connect() as con:
            rows = con.execute("SELECT name, config, seed, versions, status, created, updated FROM runs "
                               "ORDER BY created, name").fetchall()
        return [{"name": r[0], "config": json.loads(r[1]), "seed": r[2], "versions": json.loads(r[3]),
                 "status": r[4], "created": r[5], "updated": r[6]} for r in rows]

    def status(self, name: str) -> str | None:
        with self._connect() as con:
            row = con.execute("SELECT status FROM runs WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    # --- stages ---------------------------------------------------------------------------------------------------
    def add_stage(self, name: str, record: StageRecord, picks: torch.Tensor, scores: torch.Tensor | None) -> None:
        """Record a finished stage and the pool indices it labeled, in one transaction."""
        with self._transaction() as con:
            con.execute(f"INSERT OR REPLACE INTO stages (run, {_STAGE_COLS}) VALUES (?{', ?' * len(STAGE_COLUMNS)})",
                        (name, *record.row()))
            con.execute("DELETE FROM selections WHERE run = ? AND stage = ?", (name, record.stage))
            con.executemany("INSERT INTO selections VALUES (?, ?, ?, ?, ?)", _pick_rows(name, record.stage, picks,
                                                                                      scores))
            con.execute("DELETE FROM pending WHERE run = ? AND stage = ?", (name, record.stage))
            con.execute("UPDATE runs SET updated = ? WHERE name = ?", (time.time(), name))

    def stages(self, name: str) -> list[StageRecord]:
        """The finished stages of run ``name``, in order."""
        with self._connect() as con:
            rows = con.execute(f"SELECT {_STAGE_COLS} FROM stages WHERE run = ? ORDER BY stage", (name,)).fetchall()
        return [StageRecord.from_row(r) for r in rows]

    def progress(self) -> dict[str, tuple[str, int, float]]:
        """Every run's ``(status, finished stages, last update time)`` in one query: a study's progress bar."""
        with self._connect() as con:
            rows = con.execute("SELECT r.name, r.status, COUNT(s.stage), r.updated FROM runs r LEFT JOIN stages s "
                               "ON s.run = r.name GROUP BY r.name").fetchall()
        return {name: (status, count, updated) for name, status, count, updated in rows}

    def selections(self, name: str) -> dict[int, list[int]]:
        """Pool indices labeled at each stage of run ``name`` (stage 0: the initial random set)."""
        with self._connect() as con:
            rows = con.execute("SELECT stage, pool_index FROM selections WHERE run = ? ORDER BY stage, position",
                               (name,)).fetchall()
        out: dict[int, list[int]] = {}
        for stage, idx in rows:
            out.setdefault(stage, []).append(idx)
        return out

    # --- labels and pending picks ------------------------------------------------------------------------------
    def set_pending(self, name: str, stage: int, picks: torch.Tensor, scores: torch.Tensor | None) -> None:
        """Record stage ``stage``'s picks before their labels are known, so a resumed run asks for the same ones."""
        with self._transaction() as con:
            con.execute("DELETE FROM pending WHERE run = ? AND stage = ?", (name, stage))
            con.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?)", _pick_rows(name, stage, picks, scores))

    def pending(self, name: str, stage: int) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Stage ``stage``'s recorded picks and scores while its labels are awaited (None if none are recorded)."""
        with self._connect() as con:
            rows = con.execute("SELECT pool_index, score FROM pending WHERE run = ? AND stage = ? ORDER BY position",
                               (name, stage)).fetchall()
        if not rows:
            return None
        scores = None if any(s is None for _, s in rows) else torch.tensor([s for _, s in rows])
        return torch.tensor([i for i, _ in rows], dtype=torch.int64), scores

    def pending_stages(self, name: str) -> dict[int, int]:
        """Stages of run ``name`` whose picks are recorded but not finished: stage → number of picks."""
        with self._connect() as con:
            return dict(con.execute("SELECT stage, COUNT(*) FROM pending WHERE run = ? GROUP BY stage ORDER BY stage",
                                    (name,)).fetchall())

    def add_labels(self, name: str, stage: int, indices: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep the labels the oracle gave for ``indices`` at ``stage`` (one transaction)."""
        with self._transaction() as con:
            con.executemany("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)",
                            [(name, int(i), int(y), stage) for i, y in zip(indices.tolist(), labels.tolist(),
                                                                           strict=True)])

    def labels(self, name: str) -> dict[int, int]:
        """Every label given so far in run ``name``: pool index → class."""
        with self._connect() as con:
            return dict(con.execute("SELECT pool_index, label FROM labels WHERE run = ?", (name,)).fetchall())

    def selection_scores(self, name: str) -> dict[int, list[float | None]]:
        """The score of each pick, per stage, where the acquisition function has scores."""
        with self._connect() as con:
            rows = con.execute("SELECT stage, score FROM selections WHERE run = ? ORDER BY stage, position",
                               (name,)).fetchall()
        out: dict[int, list[float | None]] = {}
        for stage, score in rows:
            out.setdefault(stage, []).append(score)
        return out

    # --- final attacks --------------------------------------------------------------------------------------------
    def add_final_attack(self, row: dict) -> None:
        """Record (or replace) a run's final model under a final attack: a dict with :data:`FINAL_ATTACK_COLUMNS`
        (``provenance`` a dict), in one transaction."""
        values = {**row, "provenance": json.dumps(row["provenance"], sort_keys=True)}
        with self._transaction() as con:
            con.execute(f"INSERT OR REPLACE INTO final_attacks ({', '.join(FINAL_ATTACK_COLUMNS)}) VALUES "
                        f"(?{', ?' * (len(FINAL_ATTACK_COLUMNS) - 1)})", [values[c] for c in FINAL_ATTACK_COLUMNS])

    def final_attacks(self, name: str | None = None) -> list[dict]:
        """The final-attack rows (of run ``name``, or every run's) as dicts, ``provenance`` parsed."""
        where, args = ("WHERE run = ?", (name,)) if name is not None else ("", ())
        with self._connect() as con:
            rows = con.execute(f"SELECT {', '.join(FINAL_ATTACK_COLUMNS)} FROM final_attacks {where} "
                               "ORDER BY created, run, attack", args).fetchall()
        out = [dict(zip(FINAL_ATTACK_COLUMNS, r, strict=True)) for r in rows]
        for row in out:
            row["provenance"] = json.loads(row["provenance"])
        return out

    # --- moving runs between stores (the Ray executor) ------------------------------------------------------------
    def export_run(self, name: str, partial: bool = False, checkpoint: bool = True) -> dict | None:
        """Run ``name``'s rows and last checkpoint as a plain dict (None if absent; with ``partial``, None if finished).

        Keys: ``run`` (the runs row), ``stages`` (:data:`STAGE_COLUMNS` tuples) and ``selections`` (row tuples),
        ``checkpoint`` (the last stage's checkpoint file as bytes; None if it is missing, or not read when
        ``checkpoint`` is False). :meth:`import_run` writes it into another store.
        """
        with self._connect() as con:
            run = con.execute("SELECT name, config, seed, versions, status, created, updated FROM runs WHERE name = ?",
                              (name,)).fetchone()
            if run is None or (partial and run[4] == "finished"):
                return None
            stages = con.execute(f"SELECT {_STAGE_COLS} FROM stages WHERE run = ? ORDER BY stage",
                                 (name,)).fetchall()
            selections = con.execute("SELECT * FROM selections WHERE run = ? ORDER BY stage, position",
                                     (name,)).fetchall()
            labels = con.execute("SELECT * FROM labels WHERE run = ? ORDER BY pool_index", (name,)).fetchall()
            pending = con.execute("SELECT * FROM pending WHERE run = ? ORDER BY stage, position", (name,)).fetchall()
            attacked = con.execute(f"SELECT {', '.join(FINAL_ATTACK_COLUMNS)} FROM final_attacks WHERE run = ?",
                                   (name,)).fetchall()
        weights = None
        if stages and checkpoint:
            path = self.checkpoint_path(name, stages[-1][0])
            weights = path.read_bytes() if path.is_file() else None
        return {"run": tuple(run), "stages": [tuple(r) for r in stages], "selections": [tuple(r) for r in selections],
                "labels": [tuple(r) for r in labels], "pending": [tuple(r) for r in pending], "checkpoint": weights,
                "final_attacks": [tuple(r) for r in attacked]}

    def import_run(self, record: dict | None) -> None:
        """Write a run exported by :meth:`export_run`, replacing this store's rows of that run, in one transaction.

        The checkpoint is written first (atomically), so the store never lists a stage whose checkpoint is missing.
        """
        if record is None:
            return
        name = record["run"][0]
        if record["stages"] and record.get("checkpoint") is not None:
            last = record["stages"][-1][0]
            atomic_write_bytes(self.checkpoint_path(name, last), record["checkpoint"])
        with self._transaction() as con:
            for table in ("selections", "stages", "labels", "pending", "final_attacks"):
                con.execute(f"DELETE FROM {table} WHERE run = ?", (name,))
            con.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", record["run"])
            con.executemany(f"INSERT INTO stages (run, {_STAGE_COLS}) VALUES (?{', ?' * len(STAGE_COLUMNS)})",
                            [(name, *row) for row in record["stages"]])
            con.executemany("INSERT INTO selections VALUES (?, ?, ?, ?, ?)", record["selections"])
            con.executemany("INSERT INTO labels VALUES (?, ?, ?, ?)", record.get("labels", []))
            con.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?)", record.get("pending", []))
            con.executemany(f"INSERT INTO final_attacks ({', '.join(FINAL_ATTACK_COLUMNS)}) VALUES "
                            f"(?{', ?' * (len(FINAL_ATTACK_COLUMNS) - 1)})", record.get("final_attacks", []))
        if record["stages"]:
            self.prune_checkpoints(name, record["stages"][-1][0])

    def reopen_stage(self, name: str, stage: int) -> None:
        """Turn finished stage ``stage`` of run ``name`` back into a pending one, to be trained again: its row and
        checkpoint go, its picks become pending again, its labels stay (nothing is asked twice)."""
        with self._transaction() as con:
            rows = con.execute("SELECT run, stage, position, pool_index, score FROM selections WHERE run = ? AND "
                               "stage = ? ORDER BY position", (name, stage)).fetchall()
            con.execute("DELETE FROM pending WHERE run = ? AND stage = ?", (name, stage))
            con.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?)", rows)
            con.execute("DELETE FROM selections WHERE run = ? AND stage = ?", (name, stage))
            con.execute("DELETE FROM stages WHERE run = ? AND stage = ?", (name, stage))
        self.checkpoint_path(name, stage).unlink(missing_ok=True)

    # --- checkpoints ----------------------------------------------------------------------------------------------
    def checkpoint_path(self, name: str, stage: int) -> Path:
        """Stage ``stage``'s checkpoint of run ``name``: one folder per run name (distinct names, distinct folders)."""
        return self.root / "checkpoints" / folder_name(name) / f"stage-{stage:03d}.pt"

    def save_checkpoint(self, name: str, stage: int, state: dict) -> Path:
        """Write stage ``stage``'s checkpoint atomically (call before :meth:`add_stage`)."""
        path = self.checkpoint_path(name, stage)
        atomic_torch_save(state, path)
        return path

    def load_checkpoint(self, name: str, stage: int) -> dict:
        """Load stage ``stage``'s checkpoint with ``weights_only=True`` (no pickled code runs)."""
        path = self.checkpoint_path(name, stage)
        if not path.is_file():
            raise CheckpointError(name, stage, path, "is missing")
        try:
            state = safe_torch_load(path)
        except ValueError as e:
            raise CheckpointError(name, stage, path, f"cannot be read ({e})") from None
        if not isinstance(state, dict) or not {"model", "optimizer", "labeled"} <= set(state):
            raise CheckpointError(name, stage, path, "is not a robustal stage checkpoint (it lacks the model, "
                                  "optimizer and labeled set)")
        return state

    def prune_checkpoints(self, name: str, keep: int) -> None:
        """Delete run ``name``'s checkpoints other than stage ``keep`` (older ones and strays from a crash)."""
        folder = self.checkpoint_path(name, keep).parent
        for p in folder.glob("stage-*.pt"):
            if p.name != f"stage-{keep:03d}.pt":
                p.unlink(missing_ok=True)


_STAGE_COLS = ", ".join(STAGE_COLUMNS)


def _pick_rows(name: str, stage: int, picks: torch.Tensor, scores: torch.Tensor | None) -> list[tuple]:
    """Rows ``(run, stage, position, pool_index, score)`` of the selections and pending tables."""
    picks_list = [int(i) for i in picks.tolist()]
    score_list = [float(s) for s in scores.tolist()] if scores is not None else [None] * len(picks_list)
    return [(name, stage, pos, idx, s) for pos, (idx, s) in enumerate(zip(picks_list, score_list, strict=True))]


def folder_name(name: str) -> str:
    """A file-system-safe folder name for run ``name``, one-to-one (``a/b`` → ``a%2Fb``, ``a_b`` stays ``a_b``)."""
    safe = quote(name, safe="-_.")
    return safe if safe.strip(".") else safe.replace(".", "%2E")  # never "." or ".."
