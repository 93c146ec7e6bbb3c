"""Which training recipe lets robust active learning leave chance level quickly and reliably? (issue: trustworthy
robust AL). Runs each recipe variant for several seeds with random acquisition on the 8 000-image MNIST npz (LeNet-5,
100 + 100 per stage up to 1 000 labels, PGD-50 evaluation) and prints, per variant: how many runs were at chance
(validation score no better than a constant prediction) at 100-300, 500 and 1 000 labels, final clean and robust
test accuracy, and the time per run. Results are stored (and resumed) in --out.

Usage (from the repository root, after `python scripts/mnist_npz.py`):
    python scripts/recipe_comparison.py --seeds 0-4 --workers 2 --out runs/recipe [--variants a,b] [--acquisition A]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from robustal.engine.training import TrainConfig
from robustal.loop import LoopConfig
from robustal.loop.experiment import RunSpec
from robustal.storage.store import Store
from robustal.studies.executors import RunTask, run_local

#: The settings before the recipe (robustal 0.1's defaults, with its best-epoch tie-breaking fixed); every variant
#: changes only what it names, so the table holds even when robustal's defaults change.
BASE = TrainConfig(mode="pgd", epochs=10, batch_size=128, lr=1e-3, epsilon_warmup=2, min_steps=0)

#: name -> (TrainConfig changes, LoopConfig changes, what it tries)
VARIANTS: dict[str, tuple[dict, dict, str]] = {
    "defaults": ({}, {}, "10 epochs, batch 128, Adam 1e-3, warm-up on the fresh model only"),
    "reinit": ({}, {"chance_recovery": "reinit"}, "10 epochs; a stage at chance is retrained from new weights"),
    "steps100": ({"min_steps": 100}, {}, "at least 100 optimizer steps per stage"),
    "steps100-warmup": ({"min_steps": 100}, {"chance_recovery": "warmup"},
                        "100 steps; warm-up again after a stage at chance"),
    "steps100-reinit": ({"min_steps": 100}, {"chance_recovery": "reinit"},
                        "100 steps; a stage at chance is retrained from new weights"),
    "steps200-reinit": ({"min_steps": 200}, {"chance_recovery": "reinit"},
                        "200 steps; a stage at chance is retrained from new weights"),
    "batch32-reinit": ({"batch_size": 32}, {"chance_recovery": "reinit"},
                       "batch 32; a stage at chance is retrained from new weights"),
    "trades-steps100": ({"mode": "trades", "min_steps": 100}, {}, "TRADES (beta 6), 100 steps"),
    "trades-steps100-reinit": ({"mode": "trades", "min_steps": 100}, {"chance_recovery": "reinit"},
                               "TRADES (beta 6), 100 steps, retrain a stage at chance"),
    "steps100-lr3e-4-reinit": ({"min_steps": 100, "lr": 3e-4}, {"chance_recovery": "reinit"},
                               "100 steps, Adam 3e-4, retrain a stage at chance"),
    "steps100-warmup5-reinit": ({"min_steps": 100, "epsilon_warmup": 5}, {"chance_recovery": "reinit"},
                                "100 steps, 5 warm-up epochs, retrain a stage at chance"),
}


def seeds_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def tasks(variants: list[str], seeds: list[int], data: str, acquisition: str) -> list[RunTask]:
    out = []
    for v in variants:
        train_changes, loop_changes, _ = VARIANTS[v]
        for s in seeds:
            loop = LoopConfig(acquisition=acquisition, initial=100, per_stage=100, budget=1000,
                              train=replace(BASE, **train_changes), seed=s,
                              **{"chance_recovery": "none", **loop_changes})
            out.append(RunTask(f"{v}-{acquisition}-s{s}", RunSpec(dataset=data, model="lenet5", loop=loop,
                                                                eval_steps=50)))
    return out


def summary(store: Store, variants: list[str], seeds: list[int], acquisition: str) -> str:
    lines = ["| variant | runs | at chance at 100 / 200 / 300 / 500 / 1000 labels | robust at 1000 | clean at 1000 "
             "| min robust | run time (s) |", "|---|---|---|---|---|---|---|"]
    for v in variants:
        runs = [store.stages(f"{v}-{acquisition}-s{s}") for s in seeds]
        runs = [r for r in runs if r and r[-1].labeled == 1000]
        if not runs:
            continue
        at = [sum(next(st.at_chance for st in r if st.labeled == n) for r in runs) for n in (100, 200, 300, 500, 1000)]
        robust = [r[-1].robust for r in runs]
        clean = [r[-1].clean for r in runs]
        secs = [sum(st.train_seconds + st.select_seconds + st.eval_seconds for st in r) for r in runs]
        sd = statistics.stdev(robust) if len(robust) > 1 else 0.0
        lines.append(f"| {v} | {len(runs)} | {' / '.join(map(str, at))} | {statistics.mean(robust):.3f} ± {sd:.3f} "
                     f"| {statistics.mean(clean):.3f} | {min(robust):.3f} | {statistics.mean(secs):.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,3 (default: %(default)s)")
    p.add_argument("--acquisition", default="random")
    p.add_argument("--data", default="mnist-8k.npz")
    p.add_argument("--out", default="runs/recipe")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args()
    variants = args.variants.split(",")
    seeds = seeds_arg(args.seeds)
    if not args.summary_only:
        started = time.perf_counter()
        todo = tasks(variants, seeds, args.data, args.acquisition)
        todo.sort(key=lambda t: t.spec.loop.train.min_steps, reverse=True)  # longest first balances the workers

        def done(name, stages):
            last = stages[-1]
            print(f"{name}: robust {last.robust:.3f} clean {last.clean:.3f}; at chance at "
                  f"{[s.labeled for s in stages if s.at_chance]} ({time.perf_counter() - started:.0f} s)", flush=True)

        run_local(todo, args.out, workers=args.workers, on_done=done)
    print(summary(Store(args.out), variants, seeds, args.acquisition))
    for v in variants:
        print(f"- {v}: {VARIANTS[v][2]}")


if __name__ == "__main__":
    main()
