"""Cheaper validation rules against the current one: which epoch each would keep, and what that epoch is worth.

Runs robust active-learning runs (the 8 000-image MNIST npz, LeNet-5, the default recipe, DRE) with the current
validation rule -- PGD-10 on all 1 000 validation images after every epoch, the epoch with the best robust accuracy
kept -- and, after every epoch of every stage, also measures on the same model:

* the validation scores of each cheaper rule: the first 500 validation images (``val500``); PGD-5 at step 2.5·ε/5
  instead of PGD-10 (``pgd5``); both (``val500-pgd5``); validating every other epoch only (``every2``: epochs 2, 4,
  ..., 10) or the last half only (``last5``);
* the epoch's test accuracy, clean and robust under PGD-50 (the paper's evaluation), on the 1 000 test images.

It then replays the best-epoch rule (best robust score, then clean, then the later epoch) under each cheaper rule and
compares with the current rule's choice: how often the same epoch is kept, and the test robust accuracy of the epoch
kept (the *regret*: current minus cheaper, mean and worst over stages). The runs themselves follow the current rule,
so every rule is judged on the same models. The time each rule's validation costs is measured too.

    python scripts/validation_options.py --seeds 0-3 --workers 2 --out runs/validation-options.jsonl
    python scripts/validation_options.py --analyse runs/validation-options.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

#: Cheaper rules: (images, PGD steps, epochs validated); None = as the current rule.
RULES = {"current": (None, None, None), "val500": (500, None, None), "pgd5": (None, 5, None),
         "val500-pgd5": (500, 5, None), "every2": (None, None, "even"), "last5": (None, None, "last-half")}


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def per_image(model, data, attack, device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(correct, robust)`` per image, computed exactly as :func:`robustal.engine.evaluation.evaluate` does."""
    from robustal._runtime import make_generator
    from robustal.data.dataset import to_float
    from robustal.models.base import frozen

    gen = make_generator(seed, "evaluate", device=device)
    correct_all, robust_all = [], []
    with frozen(model):
        for start in range(0, len(data), 500):
            x = to_float(data.x[start:start + 500], device)
            y = data.y[start:start + 500].to(device)
            with torch.no_grad():
                correct = model(x).argmax(1) == y
            robust = torch.zeros_like(correct)
            if correct.any():
                robust[correct] = attack.robust(model, x[correct], y[correct], generator=gen)
            correct_all.append(correct.cpu())
            robust_all.append(robust.cpu())
    return torch.cat(correct_all), torch.cat(robust_all)


def run_seed(args: tuple[str, int, int, str]) -> list[dict]:
    """One run (seed), recording every epoch's scores under every rule and its test accuracy."""
    npz, seed, budget, out = args
    torch.set_num_threads(1)
    import robustal.engine.training as training_module
    import robustal.loop.active as loop_module
    from robustal.engine.evaluation import EvalResult, paper_attack
    from robustal.engine.training import TrainConfig
    from robustal.loop import LoopConfig
    from robustal.loop.experiment import RunSpec, run_experiment

    spec = RunSpec(npz, LoopConfig(acquisition="dre", initial=100, per_stage=100, budget=budget, seed=seed,
                                   train=TrainConfig(mode="pgd")), model="lenet5")
    dataset = spec.load_data()
    test = dataset.splits().test
    test_attack = paper_attack(dataset)
    state = {"stage": -1, "epoch": 0}
    rows: list[dict] = []
    real_fit = loop_module.fit

    def fit(*a, **k):
        state["stage"] += 1
        state["epoch"] = 0
        return real_fit(*a, **k)

    def validate(model, val, attack, *, device, seed):
        state["epoch"] += 1
        row = {"seed": spec.loop.seed, "stage": state["stage"], "epoch": state["epoch"]}
        cheap = replace(attack, steps=5, step_size=2.5 * attack.epsilon / 5)
        t = time.process_time()
        correct, robust = per_image(model, val, attack, device, seed)
        row["seconds_current"] = time.process_time() - t
        t = time.process_time()
        correct5, robust5 = per_image(model, val, cheap, device, seed)
        row["seconds_pgd5"] = time.process_time() - t
        for name, (c, r) in {"full": (correct, robust), "pgd5": (correct5, robust5)}.items():
            row[f"{name}_clean"], row[f"{name}_robust"] = float(c.float().mean()), float(r.float().mean())
            row[f"{name}500_clean"], row[f"{name}500_robust"] = float(c[:500].float().mean()), \
                float(r[:500].float().mean())
        test_correct, test_robust = per_image(model, test, test_attack, device, seed)
        row["test_clean"], row["test_robust"] = float(test_correct.float().mean()), float(test_robust.float().mean())
        rows.append(row)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        return EvalResult(row["full_clean"], row["full_robust"], len(val))

    loop_module.fit = fit
    training_module.evaluate = validate
    run_experiment(spec, None, dataset=dataset)
    return rows


def choose(epochs: list[dict], score: str, clean: str, allowed) -> dict:
    """The epoch the best-epoch rule keeps among ``allowed`` (best score, then clean, then the later epoch)."""
    candidates = [e for e in epochs if allowed(e["epoch"], len(epochs))]
    return max(candidates, key=lambda e: (e[score], e[clean], e["epoch"]))


def analyse(path: Path) -> None:
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; give the JSON lines file a run of this script wrote (--out)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    stages: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        stages.setdefault((r["seed"], r["stage"]), []).append(r)
    stages = {k: sorted(v, key=lambda e: e["epoch"]) for k, v in stages.items() if len(v) >= 10}
    allowed = {None: lambda e, n: True, "even": lambda e, n: e % 2 == 0 or e == n,
               "last-half": lambda e, n: e > n // 2}
    seeds = sorted({k[0] for k in stages})
    print(f"{len(stages)} stages of {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), "
          f"{sum(len(v) for v in stages.values())} epochs\n")
    kept = [choose(v, "full_robust", "full_clean", allowed[None])["epoch"] for v in stages.values()]
    print("epoch kept by the current rule (count per epoch 1..10):",
          [kept.count(e) for e in range(1, 11)], "\n")
    cost_full = statistics.mean(r["seconds_current"] for r in rows)
    cost_pgd5 = statistics.mean(r["seconds_pgd5"] for r in rows)
    print("| rule | same epoch as current | test robust of the kept epoch: regret mean | worst | "
          "validation cost vs current |")
    print("|---|---|---|---|---|")
    for name, (images, steps, which) in RULES.items():
        prefix = "pgd5" if steps == 5 else "full"
        suffix = "500" if images == 500 else ""
        same, regret = 0, []
        for v in stages.values():
            ref = choose(v, "full_robust", "full_clean", allowed[None])
            got = choose(v, f"{prefix}{suffix}_robust", f"{prefix}{suffix}_clean", allowed[which])
            same += got["epoch"] == ref["epoch"]
            regret.append(ref["test_robust"] - got["test_robust"])
        cost = (cost_pgd5 if steps == 5 else cost_full) * (0.5 if images == 500 else 1) * \
            (0.5 if which else 1) / cost_full
        print(f"| {name} | {same}/{len(stages)} | {statistics.mean(regret):+.4f} | {max(regret):+.4f} | "
              f"{cost:.2f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", default="mnist-8k.npz", help="python scripts/mnist_npz.py writes it")
    ap.add_argument("--seeds", default="0-3")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/validation-options.jsonl"))
    ap.add_argument("--analyse", type=Path, default=None, help="only analyse this file of recorded epochs")
    args = ap.parse_args(argv)
    if args.analyse is not None:
        analyse(args.analyse)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tasks = [(args.npz, seed, args.budget, str(args.out)) for seed in parse_seeds(args.seeds)]
    if args.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.workers) as pool:
            pool.map(run_seed, tasks)
    else:
        for t in tasks:
            run_seed(t)
    analyse(args.out)
    print(f"\n(recorded epochs in {args.out})", file=sys.stderr)


if __name__ == "__main__":
    main()
