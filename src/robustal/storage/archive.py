"""A store's finished runs as one portable file, and that file merged into another store.

Why: a results folder lives on one machine. A study longer than one machine's loan (or a cluster job's time limit)
goes on elsewhere only if its finished runs travel: ``robustal export-runs DIR`` writes every finished run's rows
(its configuration, provenance, stages, picks, labels and final attacks) into one gzip-compressed JSON file, small
enough to commit beside a report; ``robustal import-runs FILE --out DIR`` puts them into a store, where a study
resumed with the same file skips them and ``robustal report`` shows them beside the runs made there (with the
machine each came from). Checkpoints do not travel: an imported run is finished, so it never resumes from one; what
needs its model (the entropy section of a report, ``robustal attack``) says that the checkpoint is missing.

Nothing is mixed: a run the store already holds is imported only if its rows are the very same; a run stored there
with other rows (another configuration, other results) refuses the whole import before anything is written.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

from robustal.errors import StoreError
from robustal.storage.outputs import atomic_write_bytes
from robustal.storage.store import Store

#: The ``format`` field of an export file, and the version of its layout.
FORMAT = "robustal-runs"
VERSION = 1
#: The rows an export holds per run, besides the ``runs`` row: the store's tables keyed by run.
TABLES = ("stages", "selections", "labels", "final_attacks")
#: Those whose rows start with the run's name, which the file leaves out (it is the run's): a study's all-label run
#: has 8 000 picks, and its name 8 000 times would be most of the file.
NAMED = ("selections", "labels", "final_attacks")


def export_runs(store: Store, path: str | Path, patterns: Sequence[str] = ()) -> list[str]:
    """Write every finished run of ``store`` (rows only, no checkpoints) to ``path`` (gzip JSON), atomically.

    ``patterns``: only the runs whose name matches one of these shell patterns (``*-all-labels-*``), so that a large
    store travels in several files (empty: every finished run). Returns the names of the runs written; a store
    without a finished run, or with none that matches, is refused. The study file does not travel (its relative data
    paths name this machine's folders): resume with ``robustal study FILE --out DIR``.
    """
    from robustal import __version__

    names = [r["name"] for r in store.runs() if r["status"] == "finished"]
    if not names:
        raise StoreError(f"{store.root} holds no finished run to export (unfinished runs need their checkpoints: "
                         "let them finish, or copy the whole folder).")
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not names:
            raise StoreError(f"No finished run of {store.root} matches --runs {' '.join(patterns)}; "
                             "`robustal status` lists the runs' names.")
    runs = [_portable(store.export_run(name, checkpoint=False)) for name in names]
    document = {"format": FORMAT, "version": VERSION, "robustal": __version__, "exported": time.time(),
                "source": str(store.root), "runs": runs}
    data = gzip.compress(json.dumps(document, separators=(",", ":")).encode(), mtime=0)
    atomic_write_bytes(Path(path), data)
    return names


def read_export(path: str | Path) -> dict:
    """The document of an export file, checked: the format, its version, and each run's rows."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{str(path)!r} is not a file; give a file written by `robustal export-runs`.")
    try:
        document = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise StoreError(f"{path} is not a robustal export (not gzip-compressed JSON: {e}); give a file written by "
                         "`robustal export-runs`.") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StoreError(f"{path} is not a robustal export (its format is not {FORMAT!r}); give a file written by "
                         "`robustal export-runs`.")
    if document.get("version") != VERSION:
        raise StoreError(f"{path} is a version {document.get('version')!r} export, which this robustal (version "
                         f"{VERSION} exports) cannot read; import it with the robustal that wrote it "
                         f"({document.get('robustal', 'unknown')}) or a later one.")
    runs = document.get("runs")
    if not isinstance(runs, list) or not runs:
        raise StoreError(f"{path} holds no runs.")
    for i, run in enumerate(runs):
        if not (isinstance(run, dict) and isinstance(run.get("run"), list) and len(run["run"]) == 7
                and run["run"][4] == "finished" and all(isinstance(run.get(t), list) for t in TABLES)):
            raise StoreError(f"{path}: run {i + 1} is damaged (it lacks its rows, or is not finished); export the "
                             "store again.")
    return document


def import_runs(path: str | Path, store: Store) -> tuple[list[str], list[str]]:
    """Write the runs of export file ``path`` into ``store``; returns ``(imported, already_there)``.

    A run the store holds with the very same rows is left as it is (importing twice changes nothing). A run the
    store holds with other rows is refused, for every run, before anything is written: results made under other
    settings or on other data are never mixed or overwritten.
    """
    document = read_export(path)
    imported, same = [], []
    conflicts = []
    for run in document["runs"]:
        name = run["run"][0]
        held = store.export_run(name, checkpoint=False)
        if held is None:
            imported.append(run)
            continue
        if _rows(_portable(held)) == _rows(run):
            same.append(name)
            continue
        why = "it is not finished there" if held["run"][4] != "finished" else "with other rows"
        conflicts.append(f"{name} ({why})")
    if conflicts:
        raise StoreError(f"{store.root} already holds {len(conflicts)} of the runs in {path} with other results: "
                         + ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "")
                         + ". Nothing was imported; import into another --out folder (or remove those runs there).")
    for run in imported:
        name = run["run"][0]
        store.import_run({"run": tuple(run["run"]), "pending": [], "checkpoint": None,
                          **{t: [(name, *r) if t in NAMED else tuple(r) for r in run[t]] for t in TABLES}})
    return [run["run"][0] for run in imported], same


def _portable(record: dict) -> dict:
    """A run as :meth:`Store.export_run` gives it, as the file holds it: lists, no checkpoint, no run-name column."""
    return {"run": list(record["run"]),
            **{t: [list(r)[1:] if t in NAMED else list(r) for r in record[t]] for t in TABLES}}


def _rows(run: dict) -> str:
    """A run's rows compared by :func:`import_runs` (its ``updated`` time left out), as JSON sees them."""
    return json.dumps([run["run"][:6], *[run[t] for t in TABLES]], sort_keys=True)
