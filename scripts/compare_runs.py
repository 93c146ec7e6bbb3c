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

FOLDER may also be a committed report folder (``robustal report --out``: its stages.csv, and attacks.csv where there
is one), so runs whose results folder is gone still pair with new ones, e.g. DRE under TRADES (a second machine)
against random under TRADES (pool-mnist's first folder, lost with its machine):

    python scripts/compare_runs.py runs/pool-mnist:mnist-8k-lenet5-trades+self-training-dre \
        docs/results/pool-mnist:mnist-8k-lenet5-trades+self-training-random
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
    if not any((Path(folder) / f).is_file() for f in ("results.db", "stages.csv")):
        raise SystemExit(f"compare_runs: {folder} holds no results.db or stages.csv; give a study's or run's --out "
                         "folder, or a report folder (robustal report --out)")
    return Path(folder), prefix, int(labels) if at else None


#: The key of the robust accuracy under each run's own evaluation attack, whichever attack that was.
EVAL = "robust"


def _at(stages: list, name: str, labels: int | None):
    """The final stage, or the one with ``labels`` labels (None, said, where there is none)."""
    chosen = stages[-1] if labels is None else next((s for s in stages if s.labeled == labels), None)
    if chosen is None:
        print(f"note: {name} has no stage at {labels} labels "
              f"(its stages: {', '.join(str(s.labeled) for s in stages)}); left out")
    return chosen


def csv_values(folder: Path, prefix: str, labels: int | None = None) -> tuple[dict[int, dict[str, float]], None]:
    """As :func:`run_values`, from a report folder's stages.csv and attacks.csv, which do not name the evaluation
    attack (None)."""
    import csv
    from types import SimpleNamespace

    with (folder / "stages.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["run"].rpartition("-s")[0] == prefix and r["status"] == "finished"]
    attacks: dict[str, list[dict]] = {}
    if (folder / "attacks.csv").is_file():
        with (folder / "attacks.csv").open(newline="") as f:
            for r in csv.DictReader(f):
                attacks.setdefault(r["run"], []).append(r)
    runs: dict[str, list] = {}
    for r in rows:
        runs.setdefault(r["run"], []).append(SimpleNamespace(stage=int(r["stage"]), labeled=int(r["labeled"]),
                                                             clean=float(r["clean"]), robust=float(r["robust"])))
    out: dict[int, dict[str, float]] = {}
    for name, stages in runs.items():
        seed = name.rpartition("-s")[2]
        stages.sort(key=lambda s: s.stage)
        chosen = _at(stages, name, labels)
        if chosen is None or not seed.isdigit():
            continue
        values = {"clean": chosen.clean, EVAL: chosen.robust}
        if chosen is stages[-1]:
            values |= {f"{a['attack']} ({a['n']} images)": float(a["robust"]) for a in attacks.get(name, [])}
        out[int(seed)] = values
    return out, None


def run_values(folder: Path, prefix: str,
               labels: int | None = None) -> tuple[dict[int, dict[str, float]], str | None]:
    """seed -> {"clean", EVAL, <attack>...} of the finished runs ``PREFIX-sSEED`` in ``folder``: at their final
    stage, or at their stage with ``labels`` labels (runs without one are named and left out); and the label of
    EVAL (the evaluation attack's name; None where it is not known). A folder without results.db is read as a report
    folder."""
    if not (folder / "results.db").is_file():
        return csv_values(folder, prefix, labels)
    from robustal.storage.store import Store

    store = Store(folder)
    out: dict[int, dict[str, float]] = {}
    evaluation = "robust"
    for run in store.runs():
        name, _, seed = run["name"].rpartition("-s")
        if name != prefix or not seed.isdigit() or run["status"] != "finished":
            continue
        stages = store.stages(run["name"])
        chosen = _at(stages, run["name"], labels)
        if chosen is None:
            continue
        attack = (store.run_config(run["name"]) or {}).get("loop", {}).get("eval_attack") or {}
        evaluation = f"{attack.get('name', 'attack').upper()}-{attack['steps']}" if "steps" in attack else "robust"
        values = {"clean": chosen.clean, EVAL: chosen.robust}
        if chosen is stages[-1]:  # a final attack was made on the final model only
            for row in store.final_attacks(run["name"]):
                values[f"{row['attack']} ({row['n']} images)"] = row["robust"]
        out[int(seed)] = values
    return out, f"{evaluation} (all test images)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="FOLDER:PREFIX of the runs compared (FOLDER:PREFIX@LABELS: their stage at LABELS labels)")
    ap.add_argument("b", help="FOLDER:PREFIX[@LABELS] of the runs they are compared against")
    args = ap.parse_args(argv)
    from robustal.reports.stats import EXACT_PAIRS, compare_paired, mean_std

    (fa, pa, la), (fb, pb, lb) = group(args.a), group(args.b)
    (a, eval_a), (b, eval_b) = run_values(fa, pa, la), run_values(fb, pb, lb)
    if eval_a is None and eval_b is None:  # report folders' stages.csv do not name their attack
        names = {EVAL: "robust (all test images; the evaluation attack of stages.csv)"}
    elif eval_a is None or eval_b is None:  # one does: shown, with whose figures it does not name
        shown, side = (eval_b, "A") if eval_a is None else (eval_a, "B")
        names = {EVAL: f"{shown[:-1]}; {side}'s from its stages.csv)"}
    else:
        names = {EVAL: eval_a}
    if eval_a is not None and eval_b is not None and eval_a != eval_b:
        print(f"note: the groups were evaluated under different attacks ({eval_a}, {eval_b}); not paired")
        for runs in (a, b):
            for values in runs.values():
                values.pop(EVAL, None)
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
        print(f"| {names.get(m, m)} | {mean_std(x)[0]:.3f} | {mean_std(y)[0]:.3f} | {c.mean_diff:+.3f} "
              f"| {c.higher} / {c.lower} | {c.p:.3f}{approx} |")
    print("\nper seed (A / B):")
    for s in seeds:
        print(f"  s{s}: " + ", ".join(f"{names.get(m, m)} {a[s][m]:.3f} / {b[s][m]:.3f}" for m in metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
