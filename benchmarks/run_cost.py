"""What one robust active-learning run costs, piece by piece, with each speed-up on and off, against a plain loop.

One run as the studies make it (the 8 000-image MNIST npz, LeNet-5, PGD training with the default recipe, DRE,
100 random labels + 100 per stage; 4 stages by default), timed in CPU seconds of this process on one torch thread
(so that other work on the machine changes the figures little) and split into training, validation (the attack
after each epoch), selection and evaluation (PGD-50 on the test split after each stage). Variants, side by side in
one invocation:

* ``all off`` -- robustal 0.2's way: contiguous memory, the last-iterate rule (an image counts as robust when the
  attack's last iterate is still classified right; every image runs all the steps), every epoch validated;
* each speed-up alone: ``channels-last`` (``--memory-format``), ``any-iterate`` (evaluation attacks stop on fooled
  images), ``validate-last`` (only the last epochs of a stage are validated, ``--validate-last``);
* ``all on`` -- robustal's defaults (since 0.4: 15 epochs of at least 150 steps per stage);
* ``pool self-training`` and ``pool consistency`` -- ``all on`` training on the unlabeled pool too (issue 25's cost
  target: at most 2.5 × ``all on``); the teacher's training and pseudo-labelling are their own column;
* ``pool last-1000`` -- ``all on`` with self-training at the last stage only, raised to 1 000 optimizer steps
  (``--pool-stages last --pool-steps 1000``): fewer stages with the pool, more steps in the one that has it;
  ``pool last-2000`` the same with 2 000 steps;
* ``recipe ema``, ``recipe pgd40`` and ``recipe long`` -- ``all on`` with one change of the training recipe measured
  against AutoAttack (issue 26: adopted only at <= 1.5 x ``all on``): weight averaging (``--ema 0.999``), Madry's
  training attack (PGD-40 at step 0.01), twice robustal 0.3's steps per stage (20 epochs, at least 200 steps);
  ``recipe 0.3``: robustal 0.3's default schedule (10 epochs, at least 100 steps), which ``all on`` replaced at 1.40x
  (measured before the switch as ``--variants "all on" "recipe 15ep"``: the same two runs);
* ``plain loop`` -- a minimal hand-written PyTorch loop doing the same training, validation and evaluation work as
  ``all on`` (same labeled sets, steps, epochs validated, early-stopping attacks, channels-last): the limit.

Targets (issue 15): ``all off`` / ``all on`` ≥ 1.8; robustal's train + validate + evaluate ≤ 1.1 × the plain loop's;
validation + evaluation ≤ 35 % of an ``all on`` run.

    .venv/bin/python benchmarks/run_cost.py                     # 4 stages (100 -> 400 labels)
    .venv/bin/python benchmarks/run_cost.py --budget 1000       # the studies' full run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import robustal.engine.training as training_module
import robustal.loop.active as loop_module
from robustal.engine.attacks import AttackConfig
from robustal.engine.pool_training import PoolConfig
from robustal.engine.training import TrainConfig
from robustal.loop import LoopConfig
from robustal.loop.experiment import RunSpec, run_experiment

MNIST_DIR = Path(os.environ.get("ROBUSTAL_TEST_MNIST",
                                Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"))


def mnist_npz(path: Path) -> Path:
    """The README's npz (scripts/mnist_npz.py): 8 000 / 2 000 real MNIST test images, 32×32."""
    if path.is_file():
        return path
    from robustal.data.readers import read_idx

    x = np.pad(read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz"), ((0, 0), (2, 2), (2, 2)))
    y = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    np.savez(path, x_train=x[:8000], y_train=y[:8000], x_test=x[8000:10000], y_test=y[8000:10000])
    return path


@contextlib.contextmanager
def rule(any_iterate: bool):
    """Every evaluation attack -- validation's (built by TrainConfig) and the test's -- under the any-iterate rule
    (robustal's) or the last-iterate rule (0.2's: every image runs every step, only the last iterate is judged)."""
    saved = AttackConfig.robust
    if not any_iterate:
        AttackConfig.robust = lambda self, *a, **k: saved(replace(self, rule="last-iterate"), *a, **k)
    try:
        yield
    finally:
        AttackConfig.robust = saved


@contextlib.contextmanager
def timers(acc: dict):
    """CPU seconds of training (fit, validation included), validation and evaluation, accumulated into ``acc``."""
    real = {"fit": loop_module.fit, "val": training_module.evaluate, "test": loop_module.evaluate,
            "teacher": loop_module.pseudo_label}

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                acc[key] = acc.get(key, 0.0) + time.process_time() - t
        return wrapper

    loop_module.fit = timed("fit", real["fit"])
    training_module.evaluate = timed("val", real["val"])
    loop_module.evaluate = timed("test", real["test"])
    loop_module.pseudo_label = timed("teacher", real["teacher"])
    try:
        yield
    finally:
        loop_module.fit, training_module.evaluate, loop_module.evaluate = real["fit"], real["val"], real["test"]
        loop_module.pseudo_label = real["teacher"]


def robustal_run(npz: str, budget: int, seed: int, *, channels_last: bool, any_iterate: bool,
                 validate_last: int | None, pool: PoolConfig, recipe: dict | None = None,
                 training: str = "pgd") -> dict:
    train = TrainConfig(mode=training, memory_format="auto" if channels_last else "contiguous",
                        validate_last=validate_last, **(recipe or {}))
    spec = RunSpec(npz, LoopConfig(acquisition="dre", initial=100, per_stage=100, budget=budget, seed=seed,
                                   train=train, pool=pool), model="lenet5")
    acc: dict = {}
    picks: list[torch.Tensor] = []
    t0, w0 = time.process_time(), time.perf_counter()
    with rule(any_iterate), timers(acc):
        result = run_experiment(spec, None, on_stage=lambda r: picks.append(r.picked))
    total = time.process_time() - t0
    teacher = acc.get("teacher", 0.0)  # its fit and validation are not the run's: counted here only
    return {"total": total, "wall": time.perf_counter() - w0, "train": acc["fit"] - acc.get("val", 0.0),
            "validate": acc.get("val", 0.0), "evaluate": acc["test"], "teacher": teacher,
            "select": total - acc["fit"] - acc["test"] - teacher, "picks": picks,
            "final": (result.stages[-1].clean, result.stages[-1].robust)}


# --- the plain loop ---------------------------------------------------------------------------------------------------
def plain_pgd_train(model, x, y, eps, step, steps, gen):
    """PGD from a random start, the last iterate returned (adversarial training)."""
    lo, hi = x - eps, x + eps
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=gen)).clamp(0, 1)
    for _ in range(steps):
        xa = x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        x_adv = torch.min(torch.max(xa.detach() + step * g.sign(), lo), hi).clamp(0, 1)
    return x_adv


def plain_pgd_robust(model, x, y, eps, step, steps, gen):
    """PGD from a random start that drops an image as soon as an iterate misclassifies it: which images withstand
    every iterate (evaluation)."""
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps, generator=gen)).clamp(0, 1)
    robust = torch.ones(len(x), dtype=torch.bool)
    idx = torch.arange(len(x))
    for k in range(steps + 1):
        xa = x_adv.requires_grad_(k < steps)
        logits = model(xa)
        fooled = logits.argmax(1) != y[idx]
        robust[idx[fooled]] = False
        if k == steps:
            break
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y[idx], reduction="sum"), xa)
        keep = ~fooled
        idx = idx[keep]
        if not len(idx):
            break
        xo = x[idx]
        x_adv = torch.min(torch.max(xa.detach()[keep] + step * g[keep].sign(), xo - eps), xo + eps).clamp(0, 1)
    return robust


def plain_robust_accuracy(model, x, y, eps, step, steps, gen) -> float:
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    robust = 0
    for s in range(0, len(x), 500):
        xb, yb = x[s:s + 500], y[s:s + 500]
        with torch.no_grad():
            ok = model(xb).argmax(1) == yb
        if ok.any():
            robust += int(plain_pgd_robust(model, xb[ok], yb[ok], eps, step, steps, gen).sum())
    for p in model.parameters():
        p.requires_grad_(True)
    return robust / len(x)


def plain_loop(npz: str, picks: list[torch.Tensor], validate_last: int | None, epochs: int, min_steps: int) -> dict:
    """The same training, validation and evaluation work as robustal's default run, written out by hand."""
    from robustal.models import create_model

    data = np.load(npz)
    pool_x = torch.from_numpy(data["x_train"]).float().div(255).unsqueeze(1)
    pool_y = torch.from_numpy(data["y_train"]).long()
    test_x = torch.from_numpy(data["x_test"]).float().div(255).unsqueeze(1)
    test_y = torch.from_numpy(data["y_test"]).long()
    val_x, val_y, test_x, test_y = test_x[:1000], test_y[:1000], test_x[1000:], test_y[1000:]
    torch.manual_seed(0)
    model = create_model("lenet5").to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    eps, batch = 0.3, 128
    acc = {"train": 0.0, "validate": 0.0, "evaluate": 0.0}
    labeled = torch.empty(0, dtype=torch.int64)
    t_all = time.process_time()
    for stage, new in enumerate(picks):
        labeled = torch.cat([labeled, new])
        x, y = pool_x[labeled], pool_y[labeled]
        per_epoch = max(math.ceil(len(x) / batch), math.ceil(min_steps / epochs))
        best, best_state = (-1.0, -1.0), None
        for epoch in range(1, epochs + 1):
            t = time.process_time()
            frac = epoch / 3 if stage == 0 and epoch <= 2 else 1.0  # the ε warm-up of a fresh model
            model.train()
            batches: list[torch.Tensor] = []  # shuffled passes in batches, as robustal's epochs are made
            while len(batches) < per_epoch:
                batches += list(torch.randperm(len(x), generator=gen).split(batch))
            for idx in batches[:per_epoch]:
                xb = plain_pgd_train(model, x[idx], y[idx], eps * frac, 2.5 * eps * frac / 10, 10, gen)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), y[idx]).backward()
                opt.step()
            acc["train"] += time.process_time() - t
            if validate_last is not None and epoch <= epochs - validate_last:
                continue
            t = time.process_time()
            model.eval()
            with torch.no_grad():
                clean = float((model(val_x).argmax(1) == val_y).float().mean())
            score = (plain_robust_accuracy(model, val_x, val_y, eps, 2.5 * eps / 10, 10, gen), clean)
            if score >= best:
                best, best_state = score, (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
            acc["validate"] += time.process_time() - t
        model.load_state_dict(best_state[0])
        opt.load_state_dict(best_state[1])
        t = time.process_time()
        model.eval()
        plain_robust_accuracy(model, test_x, test_y, eps, 0.01, 50, gen)
        acc["evaluate"] += time.process_time() - t
    acc["total"] = time.process_time() - t_all
    return acc


NO_POOL = PoolConfig()
VARIANTS = {  # name: (channels_last, any_iterate, validate_last, pool, recipe: TrainConfig changes)
    "all off (robustal 0.2)": (False, False, None, NO_POOL, {}),
    "channels-last only": (True, False, None, NO_POOL, {}),
    "any-iterate only": (False, True, None, NO_POOL, {}),
    "validate-last only": (False, False, "default", NO_POOL, {}),
    "all on (defaults)": (True, True, "default", NO_POOL, {}),
    "pool self-training (all on + the pool)": (True, True, "default", PoolConfig(mode="self-training"), {}),
    "pool consistency (all on + the pool)": (True, True, "default", PoolConfig(mode="consistency"), {}),
    "pool last-1000 (all on + self-training at the last stage, 1 000 steps)": (
        True, True, "default", PoolConfig(mode="self-training", stages="last", steps=1000), {}),
    "pool last-2000 (all on + self-training at the last stage, 2 000 steps)": (
        True, True, "default", PoolConfig(mode="self-training", stages="last", steps=2000), {}),
    "recipe ema (all on + weight averaging)": (True, True, "default", NO_POOL, {"ema": 0.999}),
    "recipe pgd40 (all on + Madry's PGD-40 training attack)": (True, True, "default", NO_POOL,
                                                               {"attack_steps": 40, "step_size": 0.01}),
    "recipe long (all on, twice 0.3's steps)": (True, True, "default", NO_POOL, {"epochs": 20, "min_steps": 200}),
    "recipe 0.3 (all on with robustal 0.3's 10 epochs of >= 100 steps)": (True, True, "default", NO_POOL,
                                                                          {"epochs": 10, "min_steps": 100}),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", type=Path, default=Path("mnist-8k.npz"), help="built from ../shared/datasets/mnist "
                    "when absent (as scripts/mnist_npz.py)")
    ap.add_argument("--budget", type=int, default=400, help="labels at the end (100 + 100 per stage)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", choices=[v.split(" ")[0] + " " + v.split(" ")[1] for v in VARIANTS],
                    default=None, metavar="VARIANT", help="only these (e.g. 'all off' 'all on'; default: all); the "
                    "plain loop runs whenever 'all on' does")
    ap.add_argument("--validate-last", type=int, default=TrainConfig().validate_last,
                    help="the validate-last setting of the 'on' variants (default: robustal's default)")
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs,
                    help="epochs per stage of every variant but 'recipe long' and 'recipe 0.3', which set their own "
                         "(default: robustal's; 10 with --min-steps 100 for the schedule of the studies under "
                         "studies/)")
    ap.add_argument("--min-steps", type=int, default=TrainConfig().min_steps,
                    help="the step floor per stage, likewise (default: robustal's)")
    ap.add_argument("--training", choices=["pgd", "trades"], default="pgd",
                    help="the adversarial training of every variant (default: pgd); under trades the plain loop, "
                         "which does PGD training, is left out")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    npz = str(mnist_npz(args.npz))
    default_last = args.validate_last
    rows = {}
    for name, (cl, any_it, last, pool, recipe) in VARIANTS.items():
        if last == "default" and default_last is None and name != "all on (defaults)":
            continue
        if args.variants is not None and " ".join(name.split(" ")[:2]) not in {*args.variants, "all on"}:
            continue
        rows[name] = robustal_run(npz, args.budget, args.seed, channels_last=cl, any_iterate=any_it,
                                  validate_last=default_last if last == "default" else None, pool=pool,
                                  recipe={"epochs": args.epochs, "min_steps": args.min_steps, **recipe},
                                  training=args.training)
        print(f"{name}: {rows[name]['total']:.1f} s CPU", flush=True)
    on = rows["all on (defaults)"]  # always measured: the reference of every ratio
    plain = None
    if args.training == "pgd":
        plain = plain_loop(npz, on["picks"], default_last, args.epochs, args.min_steps)
        print(f"plain loop: {plain['total']:.1f} s CPU\n", flush=True)
    stages = args.budget // 100
    print(f"One robust active-learning run: mnist-8k.npz, LeNet-5, {args.training.upper()} training (PGD-10 "
          f"inside), DRE, 100 + 100/stage to "
          f"{args.budget} labels ({stages} stages), {args.epochs} epochs of >= {args.min_steps} steps per stage unless "
          f"a variant says otherwise, seed {args.seed}, {args.threads} torch thread(s); CPU seconds of the process.\n")
    print("| variant | train | validate | select | teacher | evaluate | total | vs all on | validate + evaluate | "
          "final clean / robust |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        share = (r["validate"] + r["evaluate"]) / r["total"]
        print(f"| {name} | {r['train']:.1f} | {r['validate']:.1f} | {r['select']:.1f} | {r['teacher']:.1f} | "
              f"{r['evaluate']:.1f} | {r['total']:.1f} | {r['total'] / on['total']:.2f}x | {100 * share:.0f} % | "
              f"{r['final'][0]:.3f} / {r['final'][1]:.3f} |")
    if plain is not None:
        share = (plain["validate"] + plain["evaluate"]) / plain["total"]
        print(f"| plain loop (same work as all on, no selection) | {plain['train']:.1f} | {plain['validate']:.1f} | "
              f"- | - | {plain['evaluate']:.1f} | {plain['total']:.1f} | - | {100 * share:.0f} % | - |")
    for name, r in rows.items():
        if name.startswith("pool"):
            print(f"{name.split(' (')[0]} / all on: {r['total'] / on['total']:.2f}x (target <= 2.5)")
        if name.startswith("recipe 0.3"):
            print(f"all on / recipe 0.3: {on['total'] / r['total']:.2f}x (the cost of 0.4's default schedule)")
        elif name.startswith("recipe"):
            print(f"{name.split(' (')[0]} / all on: {r['total'] / on['total']:.2f}x (adopted only at <= 1.5)")
    off = rows.get("all off (robustal 0.2)")
    work = on["train"] + on["validate"] + on["evaluate"]
    if off is not None:
        print(f"\nspeed-up, all on vs all off: {off['total'] / on['total']:.2f}x (target >= 1.8)")
    if plain is not None:
        print(f"robustal / plain loop (train + validate + evaluate): {work / plain['total']:.2f}x (target <= 1.1)")
    print(f"validation + evaluation share of an all-on run: "
          f"{100 * (on['validate'] + on['evaluate']) / on['total']:.0f} % (target <= 35 %)")
    if off is not None:
        print(f"wall seconds, all off / all on: {off['wall']:.1f} / {on['wall']:.1f}")


if __name__ == "__main__":
    main()
