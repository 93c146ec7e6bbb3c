"""Play the person: fill a robustal request CSV's label column from a file of true labels (id,label).

Usage: python scripts/answer.py REQUEST.csv TRUTH.csv
"""

import argparse
import csv
import sys
from pathlib import Path

from robustal.storage.outputs import atomic_write_bytes


def read_column(path: Path, columns: tuple[str, ...], what: str) -> list[dict[str, str]]:
    if not path.is_file():
        sys.exit(f"answer: {path} does not exist; give {what}")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            sys.exit(f"answer: {path} has no {' or '.join(missing)} column; give {what}")
        return list(reader)


ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("request", type=Path, metavar="REQUEST.csv", help="a request that `robustal label` wrote")
ap.add_argument("truth", type=Path, metavar="TRUTH.csv", help="the true labels, id,label (scripts/mnist_pngs.py)")
args = ap.parse_args()
truth = {row["id"]: row["label"] for row in read_column(args.truth, ("id", "label"), "a CSV of id,label")}
ids = [row["id"] for row in read_column(args.request, ("id",), "the request CSV that `robustal label` wrote")]
unknown = [i for i in ids if i not in truth]
if unknown:
    sys.exit(f"answer: {len(unknown)} id(s) of {args.request} have no label in {args.truth} (first: {unknown[0]!r}); "
             "give the truth file written beside the image folder the project labels")
atomic_write_bytes(args.request, ("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids)).encode())
print(f"answered {len(ids)} labels in {args.request}")
