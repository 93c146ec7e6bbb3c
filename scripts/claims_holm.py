"""The p-values docs/claims.md quotes, unrounded, with Holm's adjustment over each family it uses.

A development helper: it reads only the committed result files, pairs runs by seed as the study report does
(:mod:`robustal.reports.comparisons`: finals are a run's last stage, the area under the curve is
:func:`robustal.reports.stats.normalized_auc` over its stages) and tests with the exact two-sided Wilcoxon signed-rank
test (:func:`robustal.reports.stats.compare_paired`), then adjusts each family with
:func:`robustal.reports.stats.holm`. The families:

* ``pgd-vs-random``: each of the 15 functions minus random under PGD training (paper-mnist), on final robust
  accuracy and, separately, on its area under the curve (claims b and c; the report's Holm sentence);
* ``dre-vs-paper``: DRE minus random and minus each of the paper's 10 other functions under PGD, final robust
  accuracy (claim c: 11 comparisons);
* ``retrain-N``: DRE minus each of the 11 other metrics after retraining on N more labels, robust accuracy
  (retrain-paper, claim d: 11 comparisons per N);
* ``aa-vs-random`` and ``aa-dre-vs-paper``: the first two families again, final robust accuracy under AutoAttack
  (standard) on the first 200 test images instead of PGD-50, from the final-attack files: paper-mnist's
  ``final-attacks.csv`` (random, DRE and the four functions beyond the paper) and paper-mnist-autoattack's
  ``attacks.csv`` (the ten other paper functions, re-run identically); each family over the functions attacked.

First it prints claim (c)'s planned comparison on its own (no family): DRE minus random under PGD training, final
robust accuracy at 1 000 labels, in paper-mnist (robustal 0.3) and robust-al-mnist (robustal 0.2, the same data,
schedule and seeds).

Every figure is printed unrounded (6 decimals); round once, where the text quotes it.

    PYTHONPATH=src python scripts/claims_holm.py
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "docs" / "results" / "paper-mnist" / "stages.csv"
RETRAIN = ROOT / "docs" / "results" / "retrain-paper" / "results.csv"
EARLIER = ROOT / "docs" / "results" / "robust-al-mnist" / "stages.csv"
ATTACKS = (ROOT / "docs" / "results" / "paper-mnist" / "final-attacks.csv",
           ROOT / "docs" / "results" / "paper-mnist-autoattack" / "attacks.csv")
#: A PGD-trained active-learning run's name: ``{dataset}-{model}-pgd-{function}-s{seed}``.
PGD_RUN = re.compile(r"-pgd-(?P<acq>[a-z0-9-]+)-s(?P<seed>\d+)$")

#: The paper's twelve functions (random and DRE included); the other active-learning functions are beyond it.
PAPER = ("random", "dre", "entropy", "margin", "least-confidence", "gini", "entropy-dropout", "bald", "k-center",
         "egl", "dfal", "mcp")


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        sys.exit(f"error: {path} not found; run from a checkout that has the committed results (docs/results/).")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def run_measures(rows: Sequence[dict], training: str) -> dict[str, dict[int, tuple[float, float]]]:
    """Per acquisition function and seed of ``training``'s finished active-learning runs: (final robust accuracy,
    area under the robust curve). All-label references (one stage) are left out, as the report does."""
    from robustal.reports.stats import normalized_auc

    stages: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        if r["training"] == training and r["status"] == "finished":
            stages.setdefault((r["acquisition"], int(r["seed"])), []).append(r)
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for (acq, seed), rs in stages.items():
        if len(rs) < 2:
            continue
        rs.sort(key=lambda r: int(r["stage"]))
        robust = [float(r["robust"]) for r in rs]
        out.setdefault(acq, {})[seed] = (robust[-1], normalized_auc([int(r["labeled"]) for r in rs], robust))
    return out


def autoattack_finals(paths: Sequence[Path]) -> dict[str, dict[int, float]]:
    """Per function and seed of the PGD-trained runs: final robust accuracy under AutoAttack (standard), read from
    robustal 0.3's ``final-attacks.csv`` (column ``autoattack``) and the report's ``attacks.csv`` (rows of attack
    ``autoattack``, column ``robust``). Rows with an empty cell are left out; a run given twice with different
    figures is refused (the files would not describe the same models)."""
    from robustal.errors import DataError
    from robustal.reports.final_attacks import read_final_attacks

    out: dict[str, dict[int, float]] = {}
    where: dict[str, Path] = {}
    for path in paths:
        rows = read_csv(path)
        if rows and "autoattack" in rows[0]:  # robustal 0.3's file: the report's own reader checks it
            try:
                legacy = read_final_attacks(path)[0]
            except DataError as e:
                sys.exit(f"error: {e}")
            rows = [{"run": run, "attack": "autoattack", "robust": str(a.autoattack)} for run, a in legacy.items()]
        for row in rows:
            value = row.get("robust") if row.get("attack") == "autoattack" else None
            match = PGD_RUN.search(row.get("run", ""))
            if not value or match is None:
                continue
            acq, seed = match["acq"], int(match["seed"])
            if seed in out.get(acq, {}) and out[acq][seed] != float(value):
                sys.exit(f"error: {row['run']} has AutoAttack {out[acq][seed]} in {where[row['run']]} and {value} in "
                         f"{path}; give files that attacked the same models.")
            out.setdefault(acq, {})[seed] = float(value)
            where[row["run"]] = path
    return out


def paired_family(pairs: Sequence[tuple[str, Mapping[int, float], Mapping[int, float]]]) -> list[tuple]:
    """For each ``(name, x by seed, y by seed)``: x − y on the seeds both have, tested and Holm-adjusted over the
    family. Rows: (name, pairs, mean difference, higher, lower, p, Holm-adjusted p)."""
    from robustal.reports.stats import compare_paired, holm

    tests = []
    for name, x, y in pairs:
        seeds = sorted(set(x) & set(y))
        tests.append((name, compare_paired([x[s] for s in seeds], [y[s] for s in seeds])))
    adjusted = holm([c.p for _, c in tests])
    return [(name, c.pairs, c.mean_diff, c.higher, c.lower, c.p, a) for (name, c), a in zip(tests, adjusted,
                                                                                             strict=True)]


def print_family(title: str, rows: Sequence[tuple]) -> None:
    print(f"\n## {title} ({len(rows)} comparisons)\n")
    print("| comparison | pairs | mean diff | higher / lower | p | Holm-adjusted p |")
    print("|---|---|---|---|---|---|")
    for name, pairs, diff, higher, lower, p, adj in sorted(rows, key=lambda r: (r[5], r[0])):
        print(f"| {name} | {pairs} | {diff:+.6f} | {higher} / {lower} | {p:.6f} | {adj:.6f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=Path, default=STAGES, help=f"paper-mnist's per-stage CSV (default: {STAGES})")
    parser.add_argument("--retrain", type=Path, default=RETRAIN,
                        help=f"retrain-paper's trial CSV (default: {RETRAIN})")
    parser.add_argument("--earlier", type=Path, default=EARLIER,
                        help=f"robust-al-mnist's per-stage CSV, robustal 0.2 (default: {EARLIER})")
    parser.add_argument("--attacks", type=Path, nargs="+", default=list(ATTACKS),
                        help="final-attack files (final-attacks.csv or a report's attacks.csv) of paper-mnist's runs "
                             f"(default: {' '.join(str(p) for p in ATTACKS)})")
    args = parser.parse_args(argv)

    pgd = run_measures(read_csv(args.stages), "pgd")
    earlier = run_measures(read_csv(args.earlier), "pgd")
    for path, runs in ((args.stages, pgd), (args.earlier, earlier)):
        if "random" not in runs or "dre" not in runs:
            sys.exit(f"error: {path} has no finished PGD runs of random and dre to compare.")
    planned = []
    for study, runs in (("paper-mnist", pgd), ("robust-al-mnist", earlier)):
        final_of = {a: {s: v[0] for s, v in seeds.items()} for a, seeds in runs.items()}
        (row,) = paired_family([(f"{study}: dre − random", final_of["dre"], final_of["random"])])
        planned.append(row)
    print("## planned: dre − random under PGD, final robust at 1 000 labels, each on its own (no adjustment)\n")
    print("| comparison | pairs | mean diff | higher / lower | p |")
    print("|---|---|---|---|---|")
    for name, pairs, diff, higher, lower, p, _ in planned:
        print(f"| {name} | {pairs} | {diff:+.6f} | {higher} / {lower} | {p:.6f} |")
    others = [a for a in pgd if a != "random"]
    final = {a: {s: v[0] for s, v in seeds.items()} for a, seeds in pgd.items()}
    auc = {a: {s: v[1] for s, v in seeds.items()} for a, seeds in pgd.items()}
    print_family("pgd-vs-random, final robust: function − random under PGD, Holm over the "
                 f"{len(others)} functions", paired_family([(a, final[a], final["random"]) for a in others]))
    print_family("pgd-vs-random, AUC robust: function − random under PGD, Holm over the "
                 f"{len(others)} functions", paired_family([(a, auc[a], auc["random"]) for a in others]))
    versus = [a for a in PAPER if a != "dre" and a in pgd]
    print_family(f"dre-vs-paper, final robust: dre − function under PGD, Holm over the {len(versus)} comparisons",
                 paired_family([(a, final["dre"], final[a]) for a in versus]))

    aa = autoattack_finals(args.attacks)
    if "random" not in aa or "dre" not in aa:
        sys.exit(f"error: {' and '.join(map(str, args.attacks))} have no AutoAttack rows of PGD-trained random and "
                 "dre runs to compare.")
    others = [a for a in aa if a != "random"]
    print_family("aa-vs-random, final robust under AutoAttack: function − random under PGD, Holm over the "
                 f"{len(others)} functions attacked", paired_family([(a, aa[a], aa["random"]) for a in others]))
    versus = [a for a in PAPER if a != "dre" and a in aa]
    print_family(f"aa-dre-vs-paper, final robust under AutoAttack: dre − function under PGD, Holm over the "
                 f"{len(versus)} comparisons", paired_family([(a, aa["dre"], aa[a]) for a in versus]))

    trials = read_csv(args.retrain)
    by: dict[tuple[str, int], dict[int, float]] = {}
    for r in trials:
        if r["robust_after"]:
            by.setdefault((r["metric"], int(r["size"])), {})[int(r["seed"])] = float(r["robust_after"])
    for size in sorted({k[1] for k in by}):
        metrics = [m for m, n in by if n == size and m != "dre"]
        if (("dre", size)) not in by:
            continue
        print_family(f"retrain-{size}, robust after: dre − metric, Holm over the {len(metrics)} metrics",
                     paired_family([(m, by[("dre", size)], by[(m, size)]) for m in metrics]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
