"""A person's labels out of a labeling project, as one CSV row per image they labeled (``robustal labels``).

The store keeps a label as a pool index of the loop's pool (the project's pool less a requested held-out sample) and
the stage whose request asked for it; the held-out sample's labels are kept in ``heldout-labels.csv``. This module
joins them back to the pool's files and the class names. Only labels a person gave are written: the labels table
and the held-out labels, never anything a model predicted.

Columns: ``file`` (the image's path in the pool folder, or its index in the pool's npz: robustal's id), ``class``
(the class name), ``round`` (the stage whose request asked for it, or ``heldout``), ``split`` (``train`` for the
labels the loop trains on; ``validation`` or ``test`` for the held-out sample, split as the project splits it) and
``source`` (``csv``: a filled request CSV; ``label-studio``: a Label Studio export given with ``--answers``;
``answers``: a file given with ``--answers`` before robustal recorded which kind; ``oracle``: neither).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from robustal.data.dataset import validation_size
from robustal.errors import DataError
from robustal.labeling.label_answers import answers_sources, filled_in, read_answers
from robustal.labeling.labeling import HELDOUT_LABELS, PROJECT_FILE, RUN_NAME, Project, read_project
from robustal.storage.outputs import atomic_write_bytes

#: The columns of the labels CSV.
COLUMNS = ("file", "class", "round", "split", "source")


def project_labels(out: str | Path) -> list[dict[str, str]]:
    """Every label a person gave in the project ``out``: held-out sample first, then by round, each in pool order.

    Raises:
        DataError: ``out`` is not a labeling project, or its pool changed since it started.
    """
    from robustal.storage.store import Store

    out = Path(out).expanduser()
    if not (out / PROJECT_FILE).is_file():
        raise DataError(f"{out} is not a labeling project (it has no {PROJECT_FILE}); give the --out folder of "
                        "robustal label.")
    settings, pool = read_project(out, "its labels cannot be matched to the pool's files")
    classes, requests = settings.classes, out / "requests"
    recorded = answers_sources(requests)

    def source(request: str) -> str:
        csv_file = requests / f"{request}.csv"
        if csv_file.is_file() and filled_in(csv_file):
            return "csv"
        return recorded.get(request, "answers" if csv_file.is_file() else "oracle")

    rows: list[dict[str, str]] = []
    keep = list(range(len(pool.ids)))
    if settings.heldout is None:
        held = Project(out, settings, pool).heldout_indices().tolist()
        held_set = set(held)
        keep = [i for i in keep if i not in held_set]
        if (out / HELDOUT_LABELS).is_file():
            ids = [pool.ids[i] for i in held]
            given = read_answers(out / HELDOUT_LABELS, ids, classes)
            k, how = validation_size(len(ids)), source("heldout")
            rows += [{"file": i, "class": classes[given[i]], "round": "heldout",
                      "split": "validation" if n < k else "test", "source": how} for n, i in enumerate(ids)]
    if (out / "results.db").is_file():
        store = Store(out, create=False)
        labels = store.labels(RUN_NAME)
        stage_of = {i: stage for stage, picks in store.selections(RUN_NAME).items() for i in picks}
        for stage in store.pending_stages(RUN_NAME):
            picks = store.pending(RUN_NAME, stage)
            stage_of.update((i, stage) for i in (picks[0].tolist() if picks is not None else []))
        for i in sorted(labels, key=lambda i: (stage_of.get(i, 0), i)):
            if not 0 <= i < len(keep):
                raise DataError(f"{out}: the store holds a label for pool index {i}, but the pool has {len(keep)} "
                                "images to label: the project's results do not belong to this pool.")
            stage = stage_of.get(i, 0)
            rows.append({"file": pool.ids[keep[i]], "class": classes[labels[i]], "round": str(stage),
                         "split": "train", "source": source(f"stage-{stage:03d}")})
    return rows


def write_labels(rows: list[dict[str, str]], path: str | Path) -> Path:
    """Write ``rows`` (:func:`project_labels`) as CSV with :data:`COLUMNS`, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


__all__ = ["COLUMNS", "project_labels", "write_labels"]
