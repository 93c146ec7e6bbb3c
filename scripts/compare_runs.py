"""Two groups of finished runs, possibly from two results folders, compared seed by seed: final clean accuracy,
robust accuracy under the run's own evaluation attack (PGD-50) and every final attack stored for both (AutoAttack),
with the mean difference, how many seeds are higher / lower, and the exact two-sided Wilcoxon signed-rank p.

`robustal report` pairs runs within one study; this pairs across studies, e.g. the pool used once, long
(pool-steps-mnist) against the pool at every stage and against no pool (pool-mnist):

    python scripts/compare_runs.py runs/pool-steps-mnist:mnist-8k-lenet5-pgd+self-training-random \\
        runs/pool-mnist:mnist-8k-lenet5-pgd+self-training-random

A group is ``FOLDER:PREFIX``; its runs are the finished runs named ``PREFIX-sSEED``. Only seeds both groups have are
paired; the seeds each lacks are named. ``FOLDER:PREFIX@LABELS`` takes each run's stage at LABELS labels instead of its
final stage, e.g. 300 labels with the pool against the same seeds' stage at 300 labels without it:

    python scripts/compare_runs.py runs/pool-budget300-mnist:mnist-8k-lenet5-pgd+self-training-random \
        runs/pool-mnist:mnist-8k-lenet5-pgd-random@300

A final attack (AutoAttack) was made on a run's final model, so it counts only where that stage is the run's last.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def group(spec: str) -> tuple[Path, str, int | None]:
    folder, sep, prefix = spec.rpartition(":")
    prefix, at, labels = prefix.partition("@")
    if not sep or not folder or not prefix or (at and not labels.isdigit()):
        raise SystemExit(f"compare_runs: {spec!r} is not FOLDER:PREFIX or FOLDER:PREFIX@LABELS "
                         "(e.g. runs/pool-mnist:mnist-8k-lenet5-pgd-random or ...-random@300)")
    if not (Path(folder) / "results.db").is_file():
        raise SystemExit(f"compare_runs: {folder} holds no results.db; give a study's or run's --out folder")
    return Path(folder), prefix, int(labels) if at else None


def run_values(folder: Path, prefix: str, labels: int | None = None) -> dict[int, dict[str, float]]:
    """seed -> {"clean", "PGD", <attack>...} of the finished runs ``PREFIX-sSEED`` in ``folder``: at their final
    stage, or at their stage with ``labels`` labels (runs without one are named and left out)."""
    from robustal.storage.store import Store

    store = Store(folder)
    out: dict[int, dict[str, float]] = {}
    for run in store.runs():
        name, _, seed = run["name"].rpartition("-s")
        if name != prefix or not seed.isdigit() or run["status"] != "finished":
            continue
        stages = store.stages(run["name"])
        chosen = stages[-1] if labels is None else next((s for s in stages if s.labeled == labels), None)
        if chosen is None:
            print(f"note: {run['name']} has no stage at {labels} labels "
                  f"(its stages: {', '.join(str(s.labeled) for s in stages)}); left out")
            continue
        attack = (store.run_config(run["name"]) or {}).get("loop", {}).get("eval_attack") or {}
        evaluation = f"{attack.get('name', 'attack').upper()}-{attack['steps']}" if "steps" in attack else "robust"
        values = {"clean": chosen.clean, f"{evaluation} (all test images)": chosen.robust}
        if chosen is stages[-1]:  # a final attack was made on the final model only
            for row in store.final_attacks(run["name"]):
                values[f"{row['attack']} ({row['n']} images)"] = row["robust"]
        out[int(seed)] = values
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="FOLDER:PREFIX of the runs compared (FOLDER:PREFIX@LABELS: their stage at LABELS labels)")
    ap.add_argument("b", help="FOLDER:PREFIX[@LABELS] of the runs they are compared against")
    args = ap.parse_args(argv)
    from robustal.reports.stats import EXACT_PAIRS, compare_paired, mean_std

    (fa, pa, la), (fb, pb, lb) = group(args.a), group(args.b)
    a, b = run_values(fa, pa, la), run_values(fb, pb, lb)
    for label, runs, folder, prefix, labels in (("A", a, fa, pa, la), ("B", b, fb, pb, lb)):
        at = "" if labels is None else f" at {labels} labels"
        if not runs:
            raise SystemExit(f"compare_runs: no finished run named {prefix}-sSEED{at} in {folder}")
        print(f"{label}: {folder}:{prefix}{at} ({len(runs)} finished seeds: {', '.join(map(str, sorted(runs)))})")
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
