"""Argument groups and helpers shared by the commands: one help text per option, one way to build configurations."""

from __future__ import annotations

import argparse
import sys

DATA_DIR_HELP = "download cache (default: $ROBUSTAL_DATA or ~/.cache/robustal)"


def dataset_names() -> list[str]:
    from robustal.data import list_datasets

    return list_datasets()


def model_names() -> list[str]:
    from robustal.models import list_models

    return list_models()


def acquisition_names() -> list[str]:
    from robustal.acquisition import list_acquisitions

    return list_acquisitions()


def add_data_args(p: argparse.ArgumentParser, default: str | None = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=default, required=default is None, metavar="NAME|FILE.npz",
                   help=f"registered dataset ({', '.join(dataset_names())}) or an .npz with x_train, y_train, x_test, "
                        "y_test (default: %(default)s)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help=DATA_DIR_HELP)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME",
                   help=f"architecture ({', '.join(model_names())}); default: the dataset's (lenet5 for MNIST, ...)")


def add_training_args(p: argparse.ArgumentParser, epochs: int | None = None) -> None:
    """Training options; their defaults are :class:`~robustal.training.TrainConfig`'s (``epochs`` may differ)."""
    from robustal.training import TRAINING_MODES, TrainConfig

    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--training", choices=TRAINING_MODES, default="pgd",
                   help="standard training, PGD adversarial training (Madry et al.) or TRADES (Zhang et al.) "
                        "(default: %(default)s)")
    g.add_argument("--epochs", type=int, default=epochs or d.epochs, help="epochs per training (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch size (default: %(default)s)")
    g.add_argument("--min-steps", type=int, default=d.min_steps, metavar="STEPS",
                   help="at least STEPS optimizer steps per training: a small labeled set is passed over several "
                        "times per epoch (default: %(default)s; 0 = one pass per epoch)")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)")
    g.add_argument("--epsilon", type=float, default=None,
                   help="L-inf budget for training and evaluation (default: the dataset's: 0.3 MNIST-like, "
                        "8/255 SVHN/CIFAR-10, 0.2 digits)")
    g.add_argument("--attack-steps", type=int, default=d.attack_steps,
                   help="PGD steps k of the training attack (default: %(default)s)")
    g.add_argument("--step-size", type=float, default=None, help="training PGD step (default: 2.5*epsilon/k)")
    g.add_argument("--trades-beta", type=float, default=d.trades_beta,
                   help="TRADES's weight of the robustness (KL) term (default: %(default)s)")
    g.add_argument("--epsilon-warmup", type=int, default=d.epsilon_warmup, metavar="EPOCHS",
                   help="raise the training epsilon linearly over the first EPOCHS epochs of a model trained from "
                        "scratch or at chance level (default: %(default)s; 0 = the paper's full epsilon from the "
                        "start)")
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


def add_runtime_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    g = p.add_argument_group("runtime")
    if seed:
        g.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: %(default)s)")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_loop_args(p: argparse.ArgumentParser, budget: int = 1000) -> None:
    from robustal.loop import CHANCE_RECOVERIES, LoopConfig

    g = p.add_argument_group("active learning")
    g.add_argument("--acquisition", default="dre", metavar="NAME",
                   help=f"acquisition function: {', '.join(acquisition_names())} (default: %(default)s)")
    g.add_argument("--initial", type=int, default=100, help="random initial labeled set (default: %(default)s)")
    g.add_argument("--per-stage", type=int, default=100, help="labels added per stage (default: %(default)s)")
    g.add_argument("--budget", type=int, default=budget, help="total labels, initial included (default: %(default)s)")
    g.add_argument("--from-scratch", action="store_true",
                   help="re-initialise the model at each stage (default: continue from the previous stage's model "
                        "and optimizer, as the reference does)")
    g.add_argument("--dre-bins", type=int, default=None, help="DRE's number of histogram bins (default: 50)")
    g.add_argument("--chance-recovery", choices=CHANCE_RECOVERIES, default=LoopConfig().chance_recovery,
                   help="when a stage ends with a model at chance level (no better than predicting one class; always "
                        "warned about and flagged in the results): none, warmup (train the next stage with the "
                        "epsilon warm-up) or reinit (also retrain that stage once from new weights, keeping the "
                        "better) (default: %(default)s)")


def train_config(args: argparse.Namespace):
    from robustal.training import TrainConfig

    return TrainConfig(mode=args.training, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                       lr=args.lr, weight_decay=args.weight_decay, epsilon=args.epsilon,
                       attack_steps=args.attack_steps, step_size=args.step_size,
                       random_start=not args.no_random_start, epsilon_warmup=args.epsilon_warmup,
                       trades_beta=args.trades_beta, min_steps=args.min_steps)


def int_list(text: str, name: str) -> list[int]:
    from robustal.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers; got {text!r}.") from None
    if not values:
        raise ConfigError(f"{name} is empty.")
    return values


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress_bar(total: int, unit: str, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit.rstrip("s"), desc=unit, disable=disable, dynamic_ncols=True)

