"""Two groups of finished runs, possibly from two results folders, compared seed by seed: final clean accuracy,
robust accuracy under the run's own evaluation attack (PGD-50) and every final attack stored for both (AutoAttack),
with the mean difference, how many seeds are higher / lower, and the exact two-sided Wilcoxon signed-rank p.

`robustal report` pairs runs within one study; this pairs across studies, e.g. the pool used once, long
(pool-steps-mnist) against the pool at every stage and against no pool (pool-mnist):

    python scripts/compare_runs.py runs/pool-steps-mnist:mnist-8k-lenet5-pgd+self-training-random \\
        runs/pool-mnist:mnist-8k-lenet5-pgd+self-training-random

A group is ``FOLDER:PREFIX``; its runs are the finished runs named ``PREFIX-sSEED``. Only seeds both groups have are
paired; the seeds each lacks are named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def group(spec: str) -> tuple[Path, str]:
    folder, sep, prefix = spec.rpartition(":")
    if not sep or not folder or not prefix:
        raise SystemExit(f"compare_runs: {spec!r} is not FOLDER:PREFIX "
                         "(e.g. runs/pool-mnist:mnist-8k-lenet5-pgd-random)")
    if not (Path(folder) / "results.db").is_file():
        raise SystemExit(f"compare_runs: {folder} holds no results.db; give a study's or run's --out folder")
    return Path(folder), prefix


def finals(folder: Path, prefix: str) -> dict[int, dict[str, float]]:
    """seed -> {"clean", "PGD", <attack>...} of the finished runs ``PREFIX-sSEED`` in ``folder``."""
    from robustal.storage.store import Store

    store = Store(folder)
    out: dict[int, dict[str, float]] = {}
    for run in store.runs():
        name, _, seed = run["name"].rpartition("-s")
        if name != prefix or not seed.isdigit() or run["status"] != "finished":
            continue
        last = store.stages(run["name"])[-1]
        attack = (store.run_config(run["name"]) or {}).get("loop", {}).get("eval_attack") or {}
        evaluation = f"{attack.get('name', 'attack').upper()}-{attack['steps']}" if "steps" in attack else "robust"
        values = {"clean": last.clean, f"{evaluation} (all test images)": last.robust}
        for row in store.final_attacks(run["name"]):
            values[f"{row['attack']} ({row['n']} images)"] = row["robust"]
        out[int(seed)] = values
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="FOLDER:PREFIX of the runs compared")
    ap.add_argument("b", help="FOLDER:PREFIX of the runs they are compared against")
    args = ap.parse_args(argv)
    from robustal.reports.stats import EXACT_PAIRS, compare_paired, mean_std

    (fa, pa), (fb, pb) = group(args.a), group(args.b)
    a, b = finals(fa, pa), finals(fb, pb)
    for label, runs, folder, prefix in (("A", a, fa, pa), ("B", b, fb, pb)):
        if not runs:
            raise SystemExit(f"compare_runs: no finished run named {prefix}-sSEED in {folder}")
        print(f"{label}: {folder}:{prefix} ({len(runs)} finished seeds: {', '.join(map(str, sorted(runs)))})")
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise SystemExit("compare_runs: the two groups share no seed")
    metrics = [m for m in a[seeds[0]] if all(m in a[s] and m in b[s] for s in seeds)]
    print(f"paired seeds: {', '.join(map(str, seeds))}\n")
    print("| metric | A | B | A - B | A higher / lower | p (exact Wilcoxon) |")
    print("|---|---|---|---|---|---|")
    approx = "" if len(seeds) <= EXACT_PAIRS else " (normal approx.)"
    for m in metrics:
        x, y = [a[s][m] for s in seeds], [b[s][m] for s in seeds]
        c = compare_paired(x, y)
        print(f"| {m} | {mean_std(x)[0]:.3f} | {mean_std(y)[0]:.3f} | {c.mean_diff:+.3f} | {c.higher} / {c.lower} "
              f"| {c.p:.3f}{approx} |")
    print("\nper seed (A / B):")
    for s in seeds:
        print(f"  s{s}: " + ", ".join(f"{m} {a[s][m]:.3f} / {b[s][m]:.3f}" for m in metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
