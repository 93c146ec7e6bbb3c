"""Play the person: fill a robustal request CSV's label column from a file of true labels (id,label).

Usage: python scripts/answer.py REQUEST.csv TRUTH.csv
"""

import argparse
from pathlib import Path

from _truth import read_rows, read_truth

from robustal.storage.outputs import atomic_write_bytes

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("request", type=Path, metavar="REQUEST.csv", help="a request that `robustal label` wrote")
ap.add_argument("truth", type=Path, metavar="TRUTH.csv", help="the true labels, id,label (scripts/mnist_pngs.py)")
args = ap.parse_args()
truth = read_truth(args.truth, "answer")
ids = [row["id"] for row in read_rows(args.request, ("id",), "the request CSV that `robustal label` wrote", "answer")]
unknown = [i for i in ids if i not in truth]
if unknown:
    raise SystemExit(f"answer: {len(unknown)} id(s) of {args.request} have no label in {args.truth} "
                     f"(first: {unknown[0]!r}); give the truth file written beside the image folder the project labels")
atomic_write_bytes(args.request, ("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids)).encode())
print(f"answered {len(ids)} labels in {args.request}")
