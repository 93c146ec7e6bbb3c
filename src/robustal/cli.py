"""Command-line interface: a thin layer over the Python API. ``robustal --help`` lists the commands."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from robustal.errors import RobustalError

DESCRIPTION = """\
robustal: robust active learning. Train classifiers that are accurate and adversarially robust
from few labels: adversarial (PGD) training at every stage of the active-learning loop, and
acquisition functions (DRE by default) that pick which samples to label next.
"""

EPILOG = """\
examples:
  robustal demo                                   # small comparison on the offline digits data
  robustal train --dataset digits --training pgd  # one model, clean and robust accuracy
  robustal run --dataset mnist --training pgd --acquisition dre --budget 1000 --out runs/mnist
"""


def _datasets() -> list[str]:
    from robustal.data import list_datasets

    return list_datasets()


def _models() -> list[str]:
    from robustal.models import list_models

    return list_models()


def _acquisitions() -> list[str]:
    from robustal.acquisition import list_acquisitions

    return list_acquisitions()


def add_data_args(p: argparse.ArgumentParser, default: str | None = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default, required=default is None, metavar="NAME|FILE.npz",
                   help=f"registered dataset ({', '.join(_datasets())}) or an .npz with x_train, y_train, x_test, "
                        "y_test (default: %(default)s)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="download cache (default: $ROBUSTAL_DATA or ~/.cache/robustal)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME",
                   help=f"architecture ({', '.join(_models())}); default: the dataset's (lenet5 for MNIST, ...)")


def add_training_args(p: argparse.ArgumentParser, epochs: int = 10) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--training", choices=("standard", "pgd"), default="pgd",
                   help="standard training, or PGD adversarial training (Madry et al.) (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=epochs, help="epochs per training (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=128, help="training batch size (default: %(default)s)")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="(default: %(default)s)")
    g.add_argument("--epsilon", type=float, default=None,
                   help="L-inf budget for training and evaluation (default: the dataset's: 0.3 MNIST-like, "
                        "8/255 SVHN/CIFAR-10, 0.2 digits)")
    g.add_argument("--attack-steps", type=int, default=10, help="PGD steps k of the training attack (default: 10)")
    g.add_argument("--step-size", type=float, default=None, help="training PGD step (default: 2.5*epsilon/k)")
    g.add_argument("--epsilon-warmup", type=int, default=2, metavar="EPOCHS",
                   help="raise the training epsilon linearly over the first EPOCHS epochs of a model trained from "
                        "scratch (default: %(default)s; 0 = the paper's full epsilon from the start)")
    g.add_argument("--no-random-start", action="store_true",
                   help="training PGD starts at the clean input, as the authors' reference code did")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-steps", type=int, default=50,
                   help="PGD steps of the robust-accuracy evaluation, with random start and the dataset's step "
                        "(default: 50; 0 skips robust accuracy)")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_loop_args(p: argparse.ArgumentParser, budget: int = 1000) -> None:
    g = p.add_argument_group("active learning")
    g.add_argument("--acquisition", default="dre", metavar="NAME",
                   help=f"acquisition function: {', '.join(_acquisitions())} (default: %(default)s)")
    g.add_argument("--initial", type=int, default=100, help="random initial labeled set (default: %(default)s)")
    g.add_argument("--per-stage", type=int, default=100, help="labels added per stage (default: %(default)s)")
    g.add_argument("--budget", type=int, default=budget, help="total labels, initial included (default: %(default)s)")
    g.add_argument("--from-scratch", action="store_true",
                   help="re-initialise the model at each stage (default: continue from the previous stage's model "
                        "and optimizer, as the reference does)")
    g.add_argument("--dre-bins", type=int, default=None, help="DRE's number of histogram bins (default: 50)")


def train_config(args: argparse.Namespace):
    from robustal.training import TrainConfig

    return TrainConfig(mode=args.training, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                       lr=args.lr, weight_decay=args.weight_decay, epsilon=args.epsilon,
                       attack_steps=args.attack_steps, step_size=args.step_size,
                       random_start=not args.no_random_start, epsilon_warmup=args.epsilon_warmup)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from robustal._runtime import resolve_device
    from robustal.data import load_dataset
    from robustal.evaluation import evaluate, paper_attack
    from robustal.experiment import model_factory
    from robustal.store import atomic_torch_save
    from robustal.training import fit

    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_dir)
    if args.epsilon is not None:
        dataset.epsilon = args.epsilon
    cfg = train_config(args).for_dataset(dataset)
    splits = dataset.splits()
    model_name = args.model or dataset.default_model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = model_factory(model_name, dataset)().to(device)
    _log(f"{dataset.name}: {len(splits.pool)} train / {len(splits.val)} val / {len(splits.test)} test; "
         f"{model_name}, {cfg.mode} training for {cfg.epochs} epochs on {device}")
    result = fit(model, splits.pool, splits.val, cfg, device=device, seed=args.seed, progress=not args.no_progress)
    _log(f"best epoch {result.best_epoch} (validation {'robust' if cfg.mode == 'pgd' else 'clean'} accuracy "
         f"{result.best_score:.4f}), {result.seconds:.1f} s")
    attack = paper_attack(dataset, args.eval_steps) if args.eval_steps else None
    ev = evaluate(model, splits.test, attack, device=device, seed=args.seed)
    print(f"clean accuracy: {ev.clean:.4f}")
    if attack is not None:
        print(f"robust accuracy: {ev.robust:.4f} (PGD-{attack.steps}, eps={attack.epsilon:.4g}, "
              f"step={attack.step_size:.4g}, n={ev.n})")
    if args.save:
        atomic_torch_save({"model": model.state_dict(), "model_name": model_name, "dataset": args.dataset,
                           "num_classes": dataset.num_classes, "image_shape": list(dataset.image_shape),
                           "epsilon": dataset.epsilon, "train_config": cfg.to_dict()}, Path(args.save))
        _log(f"saved {args.save}")
    return 0


def loop_spec(args: argparse.Namespace):
    from robustal.experiment import RunSpec
    from robustal.loop import LoopConfig

    options = {"bins": args.dre_bins} if args.dre_bins is not None and args.acquisition == "dre" else {}
    loop = LoopConfig(acquisition=args.acquisition, acquisition_options=options, initial=args.initial,
                      per_stage=args.per_stage, budget=args.budget, train=train_config(args),
                      from_scratch=args.from_scratch, seed=args.seed)
    return RunSpec(dataset=args.dataset, model=args.model, loop=loop, eval_steps=args.eval_steps)


def _stage_line(result) -> str:
    r = result.record
    robust = "-" if r.robust is None else f"{r.robust:.4f}"
    return (f"stage {r.stage}: {r.labeled} labeled, clean {r.clean:.4f}, robust {robust} "
            f"(select {r.select_seconds:.1f} s, train {r.train_seconds:.1f} s, best epoch {r.best_epoch})")


def cmd_run(args: argparse.Namespace) -> int:
    from robustal.experiment import run_experiment
    from robustal.report import format_table

    spec = loop_spec(args)
    stages = len(spec.loop.stage_sizes())
    bar = _bar(stages, "stages", disable=args.no_progress)
    name = args.name or "run"

    def on_stage(result) -> None:
        bar.update(1)
        bar.write(_stage_line(result))

    _log(f"run {name!r}: {spec.loop.acquisition} on {spec.dataset}, {spec.loop.train.mode} training, "
         f"{spec.loop.initial} + {spec.loop.per_stage}/stage up to {spec.loop.budget} labels"
         + (f"; results in {args.out}" if args.out else ""))
    try:
        result = run_experiment(spec, args.out, name=name, data_dir=args.data_dir, device=args.device,
                                progress=not args.no_progress, on_stage=on_stage)
    finally:
        bar.close()
    print(format_table(["stage", "labeled", "clean", "robust", "train s", "select s"],
                       [[r.stage, r.labeled, r.clean, r.robust, round(r.train_seconds, 1),
                         round(r.select_seconds, 2)] for r in result.stages], floatfmt=".4f"))
    return 0


DEMO_FUNCTIONS = ("random", "entropy", "dre")


def cmd_demo(args: argparse.Namespace) -> int:
    from robustal.experiment import RunSpec
    from robustal.loop import LoopConfig
    from robustal.report import format_table
    from robustal.study import RunTask, run_local
    from robustal.training import TrainConfig

    started = time.perf_counter()
    tasks = []
    for mode in ("standard", "pgd"):
        for acq in DEMO_FUNCTIONS:
            loop = LoopConfig(acquisition=acq, initial=args.initial, per_stage=args.per_stage, budget=args.budget,
                              train=TrainConfig(mode=mode, epochs=args.epochs, batch_size=64), seed=args.seed)
            tasks.append(RunTask(f"digits-{mode}-{acq}-s{args.seed}",
                                 RunSpec(dataset="digits", model="small-cnn", eval_steps=args.eval_steps, loop=loop)))
    _log(f"demo: {len(tasks)} active-learning runs on scikit-learn's digits (small-cnn, {args.initial} + "
         f"{args.per_stage}/stage up to {args.budget} labels, {args.epochs} epochs/stage, {args.workers} workers); "
         f"results in {args.out}")
    bar = _bar(len(tasks), "runs", disable=args.no_progress)

    def on_done(name: str, stages) -> None:
        bar.update(1)
        bar.write(f"{name}: clean {stages[-1].clean:.3f}, robust {stages[-1].robust:.3f}")

    try:
        results = run_local(tasks, args.out, workers=args.workers, device=args.device, on_done=on_done)
    finally:
        bar.close()
    rows = []
    for task in tasks:
        stages = results[task.name]
        first, last = stages[0], stages[-1]
        rows.append([task.spec.loop.train.mode, task.spec.loop.acquisition, last.labeled, first.clean, last.clean,
                     first.robust, last.robust])
    print(format_table(["training", "acquisition", "labels", "clean (first)", "clean (last)", "robust (first)",
                        "robust (last)"], rows))
    print(f"\nclean/robust: accuracy on 250 held-out digits, robust under PGD-{args.eval_steps} (eps=0.2); first = "
          f"after the {args.initial} random labels, last = at {args.budget} labels; "
          f"{time.perf_counter() - started:.0f} s."
          "\nStandard training gives accurate but fragile models; PGD training at every stage gives robust ones.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustal", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from robustal import __version__

    parser.add_argument("--version", action="version", version=f"robustal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one model (standard or PGD) and report clean and robust accuracy",
                       description="Train one model on a dataset's full training set, keep the epoch with the best "
                                   "validation score, and print clean and PGD robust accuracy on the test split.")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    add_eval_args(p)
    add_runtime_args(p)
    p.add_argument("--save", default=None, metavar="FILE.pt", help="save the trained model here")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="one active-learning run, stored and resumable",
                       description="Run the (robust) active-learning loop: random initial set, then stages in which "
                                   "the acquisition function picks samples to label and the model is retrained. "
                                   "With --out, each stage is stored; re-running the same command resumes.")
    add_data_args(p)
    add_model_args(p)
    add_loop_args(p)
    add_training_args(p)
    add_eval_args(p)
    add_runtime_args(p)
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (DIR/results.db, checkpoints)")
    p.add_argument("--name", default=None, help="the run's name in the results store (default: run)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="random vs entropy vs DRE, standard vs PGD training, on digits (about 1 minute)",
                       description="A complete small comparison on scikit-learn's bundled digits (no download): "
                                   "random, entropy and DRE acquisition under standard and PGD training.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="results folder (default: %(default)s)")
    p.add_argument("--initial", type=int, default=50)
    p.add_argument("--per-stage", type=int, default=50)
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--workers", type=int, default=2, help="parallel runs (default: %(default)s)")
    add_runtime_args(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bar(total: int, unit: str, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit.rstrip("s"), desc=unit, disable=disable, dynamic_ncols=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        return args.func(args)
    except RobustalError as e:
        print(f"robustal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        print(f"\nrobustal {args.command}: interrupted." + (f" Finished stages are saved in {out}; run the same "
              "command again to resume." if out else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
