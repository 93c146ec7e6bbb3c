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
  robustal select --model m.pt --metric dre --n 500 --out picks.csv  # then: robustal retrain (docs/retrain.md)
"""


DATA_DIR_HELP = "download cache (default: $ROBUSTAL_DATA or ~/.cache/robustal)"


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
                   help=DATA_DIR_HELP)


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
    g.add_argument("--attack", choices=("pgd", "autoattack", "square"), default="pgd",
                   help="robust-accuracy attack, L-inf with the dataset's epsilon: pgd (PGD with --eval-steps "
                        "steps), autoattack (standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square) or square "
                        "(Square, 5000 queries); the last two need: pip install 'robustal[autoattack]' "
                        "(default: %(default)s)")


def eval_attack(args: argparse.Namespace, dataset):
    """The robust-accuracy attack of ``--attack``/``--eval-steps`` (None: skipped); fails early on a missing extra."""
    from robustal.autoattack import require
    from robustal.evaluation import paper_attack

    if not args.eval_steps:
        return None
    require(args.attack)
    return paper_attack(dataset, args.eval_steps, args.attack)


def attack_label(attack) -> str:
    """``PGD-50, eps=0.3, step=0.01`` / ``autoattack, eps=0.3``."""
    if attack.name == "pgd":
        return f"PGD-{attack.steps}, eps={attack.epsilon:.4g}, step={attack.step_size:.4g}"
    return f"{attack.name}, eps={attack.epsilon:.4g}"


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
    from robustal.errors import ConfigError
    from robustal.evaluation import evaluate
    from robustal.experiment import model_factory
    from robustal.retrain import save_checkpoint
    from robustal.training import fit

    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_dir)
    if args.epsilon is not None:
        dataset.epsilon = args.epsilon
    cfg = train_config(args).for_dataset(dataset)
    attack = eval_attack(args, dataset)
    splits = dataset.splits()
    train = splits.pool
    if args.train_size is not None:
        if not 1 <= args.train_size <= len(splits.pool):
            raise ConfigError(f"--train-size must lie in [1, {len(splits.pool)}]; got {args.train_size}.")
        train = splits.pool.subset(torch.arange(args.train_size))
    model_name = args.model or dataset.default_model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = model_factory(model_name, dataset)().to(device)
    _log(f"{dataset.name}: {len(train)} train / {len(splits.val)} val / {len(splits.test)} test; "
         f"{model_name}, {cfg.mode} training for {cfg.epochs} epochs on {device}")
    result = fit(model, train, splits.val, cfg, device=device, seed=args.seed, progress=not args.no_progress)
    _log(f"best epoch {result.best_epoch} (validation {'robust' if cfg.mode == 'pgd' else 'clean'} accuracy "
         f"{result.best_score:.4f}), {result.seconds:.1f} s")
    ev = evaluate(model, splits.test, attack, device=device, seed=args.seed)
    print(f"clean accuracy: {ev.clean:.4f}")
    if attack is not None:
        print(f"robust accuracy: {ev.robust:.4f} ({attack_label(attack)}, n={ev.n})")
    if args.save:
        save_checkpoint(args.save, model, model_name, dataset, args.dataset, cfg, len(train))
        _log(f"saved {args.save}")
    return 0


def loop_spec(args: argparse.Namespace):
    from robustal.autoattack import require
    from robustal.experiment import RunSpec
    from robustal.loop import LoopConfig

    options = {"bins": args.dre_bins} if args.dre_bins is not None and args.acquisition == "dre" else {}
    loop = LoopConfig(acquisition=args.acquisition, acquisition_options=options, initial=args.initial,
                      per_stage=args.per_stage, budget=args.budget, train=train_config(args),
                      from_scratch=args.from_scratch, seed=args.seed)
    require(args.attack)
    return RunSpec(dataset=args.dataset, model=args.model, loop=loop, eval_steps=args.eval_steps,
                   eval_attack=args.attack)


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
        longest_first = sorted(tasks, key=lambda t: t.spec.loop.train.mode != "pgd")  # balances the workers
        results = run_local(longest_first, args.out, workers=args.workers, device=args.device, on_done=on_done)
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


def cmd_study(args: argparse.Namespace) -> int:
    from robustal.report import format_table, mean_std
    from robustal.store import Store
    from robustal.study import Study, run_study, save_study_copy

    started = time.perf_counter()
    study = Study.load(args.file)
    study.check_data()
    tasks = study.tasks()
    out = Path(args.out or Path("runs") / study.name)
    store = Store(out)
    save_study_copy(args.file, out)
    finished = {t.name for t in tasks if store.status(t.name) == "finished"}
    _log(f"study {study.name!r}: {len(tasks)} runs ({len(finished)} already finished), {args.executor} executor, "
         f"{args.workers} workers; results in {out}")
    bar = _bar(len(tasks), "runs", disable=args.no_progress)
    bar.n = bar.initial = len(finished)  # the rate and ETA count only the runs done now
    bar.refresh()

    def on_done(name: str, stages) -> None:
        if name in finished:
            return
        bar.update(1)
        robust = "-" if stages[-1].robust is None else f"{stages[-1].robust:.3f}"
        bar.write(f"{name}: {stages[-1].labeled} labels, clean {stages[-1].clean:.3f}, robust {robust}")

    try:
        results = run_study(study, out, executor=args.executor, workers=args.workers, device=args.device,
                            data_dir=args.data_dir, address=args.address, on_done=on_done)
    finally:
        bar.close()
    cells: dict[tuple, list] = {}
    for task in tasks:
        loop = task.spec.loop
        key = (task.name.removesuffix(f"-{loop.train.mode}-{loop.acquisition}-s{loop.seed}"), loop.train.mode,
               loop.acquisition)
        cells.setdefault(key, []).append(results[task.name][-1])
    rows = []
    for (prefix, mode, acq), finals in cells.items():
        clean = mean_std([r.clean for r in finals])
        robust = mean_std([r.robust for r in finals]) if all(r.robust is not None for r in finals) else None
        rows.append([prefix, mode, acq, len(finals), f"{clean[0]:.3f} ± {clean[1]:.3f}",
                     "-" if robust is None else f"{robust[0]:.3f} ± {robust[1]:.3f}"])
    print(format_table(["dataset-model", "training", "acquisition", "seeds", "clean (final)", "robust (final)"], rows))
    print(f"\n{len(tasks)} runs in {out} ({time.perf_counter() - started:.0f} s); tables, curves and tests: "
          f"robustal report {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from robustal.report import write_report

    header = Path(args.header).read_text() if args.header else ""
    path = write_report(args.dir, args.out, data_dir=args.data_dir, entropies=not args.no_entropy, header=header)
    print(f"wrote {path}")
    return 0


def _checkpoint_and_data(args: argparse.Namespace):
    """``--model``'s checkpoint, the dataset (``--data``, default: the checkpoint's) and the original train size."""
    from robustal._runtime import resolve_device
    from robustal.data import load_dataset
    from robustal.errors import ConfigError
    from robustal.retrain import load_checkpoint, resolve_train_size

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model)
    data = args.data or ckpt.dataset
    if not data:
        raise ConfigError(f"Checkpoint {args.model} does not name its dataset; give --data.")
    dataset = load_dataset(data, args.data_dir)
    epsilon = getattr(args, "epsilon", None)
    if epsilon is not None or ckpt.epsilon is not None:
        dataset.epsilon = float(epsilon if epsilon is not None else ckpt.epsilon)
    ckpt.check(dataset)
    k = resolve_train_size(ckpt, len(dataset.train), args.train_size)
    return ckpt, dataset, k, device


def cmd_select(args: argparse.Namespace) -> int:
    from robustal.retrain import select_samples, write_selection

    ckpt, dataset, k, device = _checkpoint_and_data(args)
    model = ckpt.build(dataset, device)
    n_new = len(dataset.train) - k
    _log(f"{dataset.name}: ranking the {n_new} new unlabeled samples (training-set indices {k}..{k + n_new - 1}) "
         f"with {args.metric!r}; {ckpt.model_name} was trained on the first {k}")
    selection = select_samples(model, dataset.train, k, args.metric, args.n, seed=args.seed, device=device)
    write_selection(args.out, selection)
    print(f"wrote {args.out}: {len(selection.indices)} picks (rank, index, score)")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    import torch

    from robustal.evaluation import evaluate
    from robustal.retrain import read_selection, retrain, save_checkpoint

    ckpt, dataset, k, device = _checkpoint_and_data(args)
    selected = read_selection(args.selected, len(dataset.train), k, args.n)
    cfg = train_config(args).for_dataset(dataset)
    attack = eval_attack(args, dataset)
    test = dataset.splits().test
    model = ckpt.build(dataset, device)
    before = evaluate(model, test, attack, device=device, seed=args.seed)
    _log(f"{dataset.name}: fine-tuning {ckpt.model_name} on its {k} original training samples + {len(selected)} "
         f"selected, {cfg.mode} training for {cfg.epochs} epochs on {device}")
    result = retrain(model, dataset, k, selected, cfg, device=device, seed=args.seed, progress=not args.no_progress)
    _log(f"best epoch {result.best_epoch} (validation {'robust' if cfg.mode == 'pgd' else 'clean'} accuracy "
         f"{result.best_score:.4f}), {result.seconds:.1f} s")
    after = evaluate(model, test, attack, device=device, seed=args.seed)
    print(f"clean accuracy:  before {before.clean:.4f}, after {after.clean:.4f} ({after.clean - before.clean:+.4f})")
    if attack is not None:
        print(f"robust accuracy: before {before.robust:.4f}, after {after.robust:.4f} "
              f"({after.robust - before.robust:+.4f}) ({attack_label(attack)}, n={after.n})")
    if args.save:
        save_checkpoint(args.save, model, ckpt.model_name, dataset, ckpt.dataset, cfg, k,
                        selected=torch.as_tensor(selected).tolist())
        _log(f"saved {args.save}")
    return 0


def _int_list(text: str, name: str) -> list[int]:
    from robustal.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers; got {text!r}.") from None
    if not values:
        raise ConfigError(f"{name} is empty.")
    return values


def cmd_retrain_study(args: argparse.Namespace) -> int:
    from robustal.retrain import retrain_study, study_table
    from robustal.store import atomic_write_bytes

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    sizes, seeds = _int_list(args.sizes, "--sizes"), _int_list(args.seeds, "--seeds")
    ckpt, dataset, k, device = _checkpoint_and_data(args)
    cfg = train_config(args).for_dataset(dataset)
    attack = eval_attack(args, dataset)
    total = len(metrics) * len(sizes) * len(seeds)
    _log(f"retrain study: {', '.join(metrics)} x sizes {sizes} x seeds {seeds} ({total} trials), "
         f"{cfg.mode} fine-tuning for {cfg.epochs} epochs from {args.model}; results in {args.out}")
    bar = _bar(total, "trials", disable=args.no_progress)

    def on_trial(row: dict) -> None:
        bar.update(1)
        robust = "-" if row["robust_after"] is None else f"{row['robust_after']:.4f}"
        bar.write(f"{row['metric']} n={row['size']} seed {row['seed']}: clean {row['clean_after']:.4f}, "
                  f"robust {robust} ({row['seconds']} s)")

    try:
        rows = retrain_study(ckpt, dataset, metrics, sizes, seeds, cfg, attack, args.out, train_size=k,
                             device=device, on_trial=on_trial)
    finally:
        bar.close()
    table = study_table([r for r in rows if r["metric"] in metrics and int(r["size"]) in sizes
                         and int(r["seed"]) in seeds], metrics)
    label = attack_label(attack) if attack is not None else "none"
    text = (f"# Retraining study: {args.model}\n\nFine-tuned on the first {k} training samples + the selected ones, "
            f"{cfg.mode} training, {cfg.epochs} epochs; test accuracy (n={len(dataset.splits().test)}), robust under "
            f"{label}; mean ± std over seeds {seeds}.\n\n{table}\n")
    atomic_write_bytes(Path(args.out) / "results.md", text.encode())
    print(table)
    print(f"\nwrote {Path(args.out) / 'results.csv'} and {Path(args.out) / 'results.md'}")
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
    p.add_argument("--train-size", type=int, default=None, metavar="K",
                   help="train on the first K samples of the training set only (recorded in the checkpoint; "
                        "robustal select then picks from the rest). Default: all")
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

    p = sub.add_parser("demo", help="random vs entropy vs DRE, standard vs PGD training, on digits "
                                    "(about 75 s on 2 CPU cores)",
                       description="A complete small comparison on scikit-learn's bundled digits (no download): "
                                   "random, entropy and DRE acquisition under standard and PGD training.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="results folder (default: %(default)s)")
    p.add_argument("--initial", type=int, default=50, help="random initial labels (default: %(default)s)")
    p.add_argument("--per-stage", type=int, default=50, help="labels per stage (default: %(default)s)")
    p.add_argument("--budget", type=int, default=300, help="total labels (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per stage (default: %(default)s)")
    p.add_argument("--eval-steps", type=int, default=50, help="PGD steps of robust accuracy (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="parallel runs (default: %(default)s)")
    add_runtime_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("study", help="run a study file's grid of runs (resumable), locally or on Ray",
                       description="Run every run of a study file (datasets x models x training modes x acquisition "
                                   "functions x seeds) that is not finished yet; interrupted runs resume. The study "
                                   "file is copied to DIR/study.toml for `robustal report DIR`.")
    p.add_argument("file", metavar="FILE.toml", help="study file (see studies/ for examples)")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default: runs/<study name>)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel runs (local processes, or the local Ray instance's CPUs) (default: %(default)s)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local worker processes, or Ray tasks (pip install 'robustal[ray]') (default: %(default)s)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address (e.g. auto or ray://host:10001; default: start a local instance)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=DATA_DIR_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="tables, curves and statistical tests of a study's results",
                       description="Write DIR/report/report.md with final and area-under-curve accuracies (mean +- "
                                   "std over seeds), curves, entropy distributions of the selected samples, "
                                   "Mann-Whitney U tests and Vargha-Delaney A12 of each function vs random, "
                                   "and stages.csv.")
    p.add_argument("dir", metavar="DIR", help="a study's (or run's) results folder")
    p.add_argument("--out", default=None, metavar="REPORT_DIR", help="where to write (default: DIR/report)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="dataset cache, to recompute entropies (default: $ROBUSTAL_DATA or ~/.cache/robustal)")
    p.add_argument("--no-entropy", action="store_true",
                   help="skip the entropy distributions (they load each dataset and final model)")
    p.add_argument("--header", default=None, metavar="FILE.md",
                   help="Markdown put at the top of the report (e.g. the commands that made the results)")
    p.set_defaults(func=cmd_report)

    def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("model and data")
        g.add_argument("--model", required=True, metavar="CKPT", help="a checkpoint saved by robustal train --save")
        g.add_argument("--data", default=None, metavar="NAME|FILE.npz",
                       help="its dataset (default: the one recorded in the checkpoint)")
        g.add_argument("--data-dir", default=None, metavar="DIR",
                       help=DATA_DIR_HELP)
        g.add_argument("--train-size", type=int, default=None, metavar="K",
                       help="the model's original training data are the first K samples of the training set "
                            "(default: as recorded by robustal train --train-size); the rest are the new unlabeled "
                            "set")

    p = sub.add_parser("select", help="rank new unlabeled samples with a test-selection metric; write the top n",
                       description="Rank the new unlabeled set -- the dataset's training samples after the model's "
                                   "original training data (first K, see --train-size) -- with any acquisition "
                                   "function as a test-selection metric, and write the top n to a CSV with columns "
                                   "rank,index,score (index: into the training set; score empty for metrics "
                                   "without one, such as random).")
    add_checkpoint_args(p)
    p.add_argument("--metric", default="dre", metavar="NAME",
                   help=f"selection metric: {', '.join(_acquisitions())} (default: %(default)s)")
    p.add_argument("--n", type=int, required=True, help="number of samples to select")
    p.add_argument("--out", required=True, metavar="PICKS.csv", help="where to write the selection")
    add_runtime_args(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("retrain", help="fine-tune a model on its training data + selected samples; before/after",
                       description="Fine-tune the checkpoint on its original training data (the first K training "
                                   "samples) plus the samples of a robustal select CSV, labeled from the dataset, "
                                   "and print clean and robust test accuracy before and after.")
    add_checkpoint_args(p)
    p.add_argument("--selected", required=True, metavar="PICKS.csv", help="a CSV written by robustal select")
    p.add_argument("--n", type=int, default=None, help="use the top N picks only (default: all)")
    add_training_args(p, epochs=5)
    p.set_defaults(epsilon_warmup=0)
    add_eval_args(p)
    add_runtime_args(p)
    p.add_argument("--save", default=None, metavar="OUT.pt", help="save the fine-tuned model here")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("retrain-study", help="compare selection metrics for retraining over sizes and seeds",
                       description="For every metric x size x seed: select from the new unlabeled set, fine-tune "
                                   "the checkpoint on original + selected samples, and evaluate. Writes "
                                   "DIR/results.csv (one row per trial, resumable) and DIR/results.md (mean +- std "
                                   "over seeds of clean and robust accuracy after retraining).")
    add_checkpoint_args(p)
    p.add_argument("--metrics", default="dre,entropy,random", help="comma-separated (default: %(default)s)")
    p.add_argument("--sizes", default="100,500", help="comma-separated selection sizes (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder")
    add_training_args(p, epochs=5)
    p.set_defaults(epsilon_warmup=0)
    add_eval_args(p)
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_retrain_study)
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
