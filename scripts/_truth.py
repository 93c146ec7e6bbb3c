"""Reading the CSV files the person-playing scripts (answer.py, label_studio_answer.py) take: a truth file of
id,label and a request, with a message naming the file and the fix instead of a traceback."""

import csv
import sys
from pathlib import Path


def read_rows(path: Path, columns: tuple[str, ...], what: str, prog: str) -> list[dict[str, str]]:
    """The rows of the CSV ``path``, which must hold ``columns``; ``what`` says what the file should be."""
    if not path.is_file():
        sys.exit(f"{prog}: {path} does not exist; give {what}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            sys.exit(f"{prog}: {path} has no {' or '.join(missing)} column; give {what}")
        return list(reader)


def read_truth(path: Path, prog: str) -> dict[str, str]:
    """id -> true label, from a CSV of id,label (scripts/mnist_pngs.py writes one beside its images)."""
    return {row["id"]: row["label"] for row in read_rows(path, ("id", "label"), "a CSV of id,label", prog)}
