"""Play the person: fill a robustal request CSV's label column from a file of true labels (id,label).

Usage: python scripts/answer.py REQUEST.csv TRUTH.csv
"""

import csv
import sys

request, truth_file = sys.argv[1], sys.argv[2]
with open(truth_file, newline="") as f:
    truth = {row["id"]: row["label"] for row in csv.DictReader(f)}
with open(request, newline="") as f:
    ids = [row["id"] for row in csv.DictReader(f)]
with open(request, "w", newline="") as f:
    f.write("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in ids))
print(f"answered {len(ids)} labels in {request}")
