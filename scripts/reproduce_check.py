"""Runs of a results folder against the same runs in a committed report's stages.csv: were they reproduced?

For every run present in both (same name), each stage's clean and robust accuracy is compared; a run is *identical*
when every stage it has in both agrees exactly, otherwise the first stage that differs and the final difference are
printed. The machine each side ran on is printed where the folder records it (robustal 0.4's provenance). Used to
measure how far results move between machines and code versions (docs/reproducibility.md).

    python scripts/reproduce_check.py runs/pool-mnist docs/results/paper-mnist/stages.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def committed(path: Path) -> dict[str, list[tuple[int, float, float]]]:
    """run -> [(labeled, clean, robust) per stage] of a report's stages.csv (robust NaN where the report has none)."""
    if not path.is_file():
        raise SystemExit(f"reproduce_check: {path} does not exist; give a committed report's stages.csv "
                         "(e.g. docs/results/paper-mnist/stages.csv)")
    out: dict[str, list[tuple[int, float, float]]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"run", "labeled", "clean", "robust"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"reproduce_check: {path} has no column {', '.join(sorted(missing))}; give the "
                             "stages.csv that `robustal report` writes")
        for row in reader:
            robust = float(row["robust"]) if row["robust"] else float("nan")
            out.setdefault(row["run"], []).append((int(row["labeled"]), float(row["clean"]), robust))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="a results folder (results.db)")
    ap.add_argument("stages", type=Path, help="a committed stages.csv")
    args = ap.parse_args(argv)
    from robustal.reports.results import collect
    from robustal.storage.provenance import machine_label

    if not (args.folder / "results.db").is_file():
        raise SystemExit(f"reproduce_check: {args.folder} holds no results.db; give a study's or run's --out folder")
    reference = committed(args.stages)
    rows = []
    for run in collect(args.folder):
        if run.name not in reference or not run.stages:
            continue
        theirs = reference[run.name]
        ours = [(s.labeled, s.clean, s.robust) for s in run.stages]
        n = min(len(ours), len(theirs))
        differ = [i for i in range(n) if ours[i] != theirs[i]]
        last = n - 1
        rows.append((run.name, n, "identical" if not differ else f"from stage {differ[0]}",
                     ours[last][2] - theirs[last][2], ours[last][1] - theirs[last][1], machine_label(run.versions)))
    if not rows:
        print("no run of the folder is in the stages file", file=sys.stderr)
        return 1
    print("| run | stages compared | result | robust diff at the last | clean diff at the last | machine |")
    print("|---|---|---|---|---|---|")
    for name, n, what, dr, dc, machine in rows:
        print(f"| {name} | {n} | {what} | {dr:+.3f} | {dc:+.3f} | {machine} |")
    same = sum(r[2] == "identical" for r in rows)
    print(f"\n{same} of {len(rows)} runs identical at every stage compared")
    return 0


if __name__ == "__main__":
    sys.exit(main())
