"""Argument groups and helpers shared by the commands: one help text per option, one way to build configurations."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

DATA_DIR_HELP = "download cache (default: $ROBUSTAL_DATA or ~/.cache/robustal)"


def _typed(kind: type, ok: Callable[[float], bool], what: str) -> Callable[[str], object]:
    """An argparse ``type``: parse with ``kind`` and check ``ok``; a bad value is reported with the flag's name."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}")
        return value

    parse.__name__ = what
    return parse


#: Seeds go into SQLite, NumPy and torch: 32 bits fit all three (robustal.loop.MAX_SEED).
MAX_SEED = 2**32 - 1
POSITIVE_INT = _typed(int, lambda v: v >= 1, "an integer >= 1")
#: The side images are resized to: 4 pixels at least (the smallest any model takes).
IMAGE_SIZE = _typed(int, lambda v: v >= 4, "an integer >= 4 (pixels)")
COUNT = _typed(int, lambda v: v >= 0, "an integer >= 0")
SEED = _typed(int, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
UNIT = _typed(float, lambda v: math.isfinite(v) and 0 <= v <= 1, "a number in [0, 1]")
POSITIVE_UNIT = _typed(float, lambda v: math.isfinite(v) and 0 < v <= 1, "a number in (0, 1]")
POSITIVE = _typed(float, lambda v: math.isfinite(v) and v > 0, "a number > 0")
NON_NEGATIVE = _typed(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
UNIT_OPEN = _typed(float, lambda v: math.isfinite(v) and 0 <= v < 1, "a number in [0, 1)")


def _is_device(text: str) -> bool:
    import re

    return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text) is not None


DEVICE = _typed(str, _is_device, "auto, cpu, cuda, cuda:N or mps")


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
    g.add_argument("--dataset", default=default, required=default is None, metavar="NAME|FILE.npz|DIR",
                   help=f"registered dataset ({', '.join(dataset_names())}), an .npz with x_train, y_train, x_test, "
                        "y_test, or an image folder DIR/train/<class>/*.png, DIR/test/<class>/*.png (with "
                        "--image-size, --channels and --epsilon) (default: %(default)s)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help=DATA_DIR_HELP)
    g.add_argument("--image-size", type=IMAGE_SIZE, default=None, metavar="PIXELS",
                   help="image folders: the side images are resized to (the aspect ratio is not kept)")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="image folders: 1 (grey) or 3 (colour)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME|MODULE:FACTORY",
                   help=f"architecture ({', '.join(model_names())}), or your own: package.module:factory or "
                        "path/to/file.py:factory, called with num_classes, in_channels and image_size; default: the "
                        "dataset's (lenet5 for MNIST, ...)")


#: ``--factory``'s help: the one way a checkpoint or results folder of a user's model gets its code.
FACTORY_HELP = ("a checkpoint of your own model: its factory, package.module:factory or path/to/file.py:factory. "
                "robustal imports only code you name here, never a factory because a checkpoint records it")


def add_factory_arg(g) -> None:
    """``--factory``: the user's model factory to rebuild a checkpoint of a user's model with."""
    g.add_argument("--factory", default=None, metavar="MODULE:FACTORY", help=FACTORY_HELP)


def add_training_args(p: argparse.ArgumentParser, epochs: int | None = None) -> None:
    """Training options; their defaults are :class:`~robustal.engine.training.TrainConfig`'s (``epochs`` may differ)."""
    from robustal.engine.training import TRAINING_MODES, TrainConfig
    from robustal.models.memory_format import MEMORY_FORMATS

    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--training", choices=TRAINING_MODES, default="pgd",
                   help="standard training, PGD adversarial training (Madry et al.) or TRADES (Zhang et al.) "
                        "(default: %(default)s)")
    g.add_argument("--epochs", type=POSITIVE_INT, default=epochs or d.epochs,
                   help="epochs per training (default: %(default)s)")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=d.batch_size,
                   help="training batch size (default: %(default)s)")
    g.add_argument("--min-steps", type=COUNT, default=d.min_steps, metavar="STEPS",
                   help="at least STEPS optimizer steps per training: a small labeled set is passed over several "
                        "times per epoch (default: %(default)s; 0 = one pass per epoch)")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default=d.optimizer, help="(default: %(default)s)")
    g.add_argument("--precision", choices=("fp32", "bf16"), default=d.precision,
                   help="bf16: mixed precision for training and the training attack; robust accuracy is always "
                        "measured in fp32 (default: %(default)s)")
    g.add_argument("--validate-last", type=COUNT, default=d.validate_last or 0, metavar="EPOCHS",
                   help="validate, and keep the best of, only the last EPOCHS epochs of each training: the cost of "
                        "validation halves and the kept epoch is the same in the measurements of docs/recipe.md "
                        "(default: %(default)s; 0 = every epoch)")
    g.add_argument("--memory-format", choices=MEMORY_FORMATS, default=d.memory_format,
                   help="memory layout of the model for training, attacks and evaluation: auto = channels-last where "
                        "it was measured faster (LeNet-5, small-cnn, VGG8 on the CPU; bf16 conv nets on CUDA); "
                        "results differ between layouts in the last bits (default: %(default)s)")
    g.add_argument("--lr", type=POSITIVE, default=d.lr, help="learning rate (default: %(default)s)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=d.weight_decay, help="(default: %(default)s)")
    g.add_argument("--epsilon", type=UNIT, default=None,
                   help="L-inf budget for training and evaluation (default: the dataset's: 0.3 MNIST-like, "
                        "8/255 SVHN/CIFAR-10, 0.2 digits)")
    g.add_argument("--attack-steps", type=POSITIVE_INT, default=d.attack_steps,
                   help="PGD steps k of the training attack (default: %(default)s)")
    g.add_argument("--step-size", type=POSITIVE_UNIT, default=None, help="training PGD step (default: 2.5*epsilon/k)")
    g.add_argument("--trades-beta", type=NON_NEGATIVE, default=d.trades_beta,
                   help="TRADES's weight of the robustness (KL) term (default: %(default)s)")
    g.add_argument("--ema", type=UNIT_OPEN, default=d.ema, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (0.999 is usual) and "
                        "validate, keep and evaluate it in place of the raw weights (default: %(default)s = off)")
    g.add_argument("--epsilon-warmup", type=COUNT, default=d.epsilon_warmup, metavar="EPOCHS",
                   help="raise the training epsilon linearly over the first EPOCHS epochs of a model trained from "
                        "scratch or at chance level (default: %(default)s; 0 = the paper's full epsilon from the "
                        "start)")
    g.add_argument("--no-random-start", action="store_true",
                   help="training PGD starts at the clean input, as the authors' reference code did")


def add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-steps", type=COUNT, default=50,
                   help="PGD steps of the robust-accuracy evaluation, with random start and the dataset's step "
                        "(default: 50; 0 skips robust accuracy)")
    g.add_argument("--attack", choices=("pgd", "autoattack", "square"), default="pgd",
                   help="robust-accuracy attack, L-inf with the dataset's epsilon: pgd (PGD with --eval-steps "
                        "steps), autoattack (standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square) or square "
                        "(Square, 5000 queries); the last two need: pip install 'robustal[autoattack]' "
                        "(default: %(default)s)")


def eval_attack(args: argparse.Namespace, dataset):
    """The robust-accuracy attack of ``--attack``/``--eval-steps`` (None: skipped); fails early on a missing extra."""
    from robustal.engine.autoattack import require
    from robustal.engine.evaluation import paper_attack

    check_attack_steps(args)
    if not args.eval_steps:
        return None
    require(args.attack)
    return paper_attack(dataset, args.eval_steps, args.attack)


def check_attack_steps(args: argparse.Namespace) -> None:
    """``--attack autoattack|square`` with ``--eval-steps 0`` would skip robust accuracy without a word: refused."""
    from robustal.errors import ConfigError

    if not args.eval_steps and args.attack != "pgd":
        raise ConfigError(f"--attack {args.attack} with --eval-steps 0: --eval-steps 0 skips robust accuracy, so "
                          f"{args.attack} would never run. Leave --eval-steps out to run it ({args.attack} does not "
                          "use the step count), or leave --attack out to skip robust accuracy.")


def attack_label(attack) -> str:
    """``PGD-50, eps=0.3, step=0.01, any iterate`` / ``autoattack, eps=0.3``."""
    if attack.name == "pgd":
        return (f"PGD-{attack.steps}, eps={attack.epsilon:.4g}, step={attack.step_size:.4g}, "
                f"{attack.rule.replace('-', ' ')}")
    return f"{attack.name}, eps={attack.epsilon:.4g}"


def attack_settings(attack) -> dict:
    """The settings an attack really runs with (``evaluate --json``): PGD's steps and step; Square's queries; the
    attacks of AutoAttack's standard version. The parameter-free attacks ignore steps and step size."""
    from robustal.engine.autoattack import SQUARE_QUERIES

    settings = {"name": attack.name, "epsilon": attack.epsilon, "norm": "Linf"}
    if attack.name == "pgd":
        return {**settings, "steps": attack.steps, "step_size": attack.step_size,
                "random_start": attack.random_start, "rule": attack.rule}
    if attack.name == "square":
        return {**settings, "n_queries": SQUARE_QUERIES, "restarts": 1}
    if attack.name == "autoattack":
        return {**settings, "version": "standard",
                "attacks": ["apgd-ce", "apgd-t", "fab-t", f"square ({SQUARE_QUERIES} queries)"]}
    return settings


def add_runtime_args(p: argparse.ArgumentParser, seed: bool = True) -> None:
    g = p.add_argument_group("runtime")
    if seed:
        g.add_argument("--seed", type=SEED, default=0, help="seed of every random choice (default: %(default)s)")
    g.add_argument("--device", type=DEVICE, default="auto",
                   help="auto (CUDA when there is one), cpu, cuda or cuda:N (default: %(default)s)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_loop_args(p: argparse.ArgumentParser, budget: int = 1000) -> None:
    from robustal.loop import CHANCE_RECOVERIES, LoopConfig

    g = p.add_argument_group("active learning")
    g.add_argument("--acquisition", default="dre", metavar="NAME",
                   help=f"acquisition function: {', '.join(acquisition_names())} (default: %(default)s)")
    g.add_argument("--initial", type=POSITIVE_INT, default=100,
                   help="random initial labeled set (default: %(default)s)")
    g.add_argument("--per-stage", type=POSITIVE_INT, default=100,
                   help="labels added per stage (default: %(default)s)")
    g.add_argument("--budget", type=POSITIVE_INT, default=budget,
                   help="total labels, initial included (default: %(default)s)")
    g.add_argument("--from-scratch", action="store_true",
                   help="re-initialise the model at each stage (default: continue from the previous stage's model "
                        "and optimizer, as the reference does)")
    g.add_argument("--dre-bins", type=POSITIVE_INT, default=None, help="DRE's number of histogram bins (default: 50)")
    g.add_argument("--chance-recovery", choices=CHANCE_RECOVERIES, default=LoopConfig().chance_recovery,
                   help="when a stage ends with a model at chance level (no better than predicting one class; always "
                        "warned about and flagged in the results): none, warmup (train the next stage with the "
                        "epsilon warm-up) or reinit (also retrain that stage once from new weights, keeping the "
                        "better) (default: %(default)s)")
    g.add_argument("--stop-gain", type=NON_NEGATIVE, default=None, metavar="G",
                   help="stop before the budget once validation (robust accuracy under adversarial training) gained "
                        "less than G (0.01 = one point) over the last --stop-patience stages (default: run to the "
                        "budget; robustal status says where the rule would stop either way)")
    g.add_argument("--stop-patience", type=POSITIVE_INT, default=2, metavar="K",
                   help="stages over which --stop-gain is measured (default: %(default)s)")
    add_pool_args(p)


def add_pool_args(p: argparse.ArgumentParser) -> None:
    """Training on the unlabeled pool (robustal.engine.pool_training): the images a run has not labeled."""
    from robustal.engine.pool_training import POOL_MODES, POOL_STAGES, TEACHERS, PoolConfig

    d = PoolConfig()
    g = p.add_argument_group("training on the unlabeled pool (pgd, trades; pseudo-labels are never stored as labels)")
    g.add_argument("--pool-training", choices=POOL_MODES, default=d.mode,
                   help="none; self-training (a teacher pseudo-labels the unlabeled images, adversarial training "
                        "uses them like labels: Carmon et al. 2019); consistency (TRADES's robustness term alone on "
                        "the unlabeled images, no pseudo-labels: Uesato et al. 2019) (default: %(default)s)")
    g.add_argument("--pool-share", type=UNIT_OPEN, default=d.share, metavar="S",
                   help="the pool's share of each training batch, in [0, 1); the run's cost grows by 1/(1-S) "
                        "(default: %(default)s)")
    g.add_argument("--pool-weight", type=NON_NEGATIVE, default=d.weight, metavar="W",
                   help="weight of the pool images' loss against the labeled ones' (default: %(default)s)")
    g.add_argument("--teacher", choices=TEACHERS, default=d.teacher,
                   help="self-training's teacher: standard (a model trained without attack on the stage's labels) or "
                        "model (the run's model as the previous stage left it) (default: %(default)s)")
    g.add_argument("--teacher-epochs", type=POSITIVE_INT, default=d.teacher_epochs,
                   help="epochs of the standard teacher's training (default: %(default)s)")
    g.add_argument("--pool-confidence", type=UNIT_OPEN, default=d.confidence, metavar="C",
                   help="use only pseudo-labels whose teacher probability is at least C (default: %(default)s)")
    g.add_argument("--pool-stages", choices=POOL_STAGES, default=d.stages,
                   help="use the pool at every stage, or at the last one only (default: %(default)s)")
    g.add_argument("--pool-steps", type=COUNT, default=d.steps, metavar="STEPS",
                   help="at least STEPS optimizer steps in a stage trained on the pool: more passes over the pool, "
                        "at a cost bounded by STEPS (default: %(default)s = the steps of the labels alone)")


def pool_config(args: argparse.Namespace):
    """The :class:`~robustal.engine.pool_training.PoolConfig` of the pool options."""
    from robustal.engine.pool_training import PoolConfig

    return PoolConfig(mode=args.pool_training, share=args.pool_share, weight=args.pool_weight, teacher=args.teacher,
                      teacher_epochs=args.teacher_epochs, confidence=args.pool_confidence, stages=args.pool_stages,
                      steps=args.pool_steps)


def add_tracking_args(p: argparse.ArgumentParser, study: bool = False) -> None:
    from robustal.tracking.tracking import DEFAULT_URI, TRACKERS, URI_VARIABLE

    g = p.add_argument_group("experiment tracking")
    g.add_argument("--track", choices=TRACKERS, default=None,
                   help="mirror runs into an experiment tracker: mlflow logs each run's settings as params, "
                        "clean/robust accuracy per stage as it finishes (step: the label count), the final "
                        "checkpoint and model (needs pip install 'robustal[mlflow]') (default: "
                        + ("the study file's [tracking], else " if study else "") + "none; --tracking-uri or "
                        "--tracking-experiment imply mlflow)")
    g.add_argument("--tracking-uri", default=None, metavar="URI",
                   help="MLflow tracking store: a SQLite file or an http:// server (default: "
                        + ("the study file's [tracking] uri, else " if study else "")
                        + f"${URI_VARIABLE}, else {DEFAULT_URI})")
    g.add_argument("--tracking-experiment", default=None, metavar="NAME",
                   help="MLflow experiment (default: " + ("the study file's, else " if study else "") + "robustal)")
    g.add_argument("--no-log-model", dest="log_model", action="store_false", default=None,
                   help="MLflow: log the final checkpoint only, not also the model in MLflow's PyTorch flavour "
                        "(torch.export: under a second for small nets, seconds for ResNet-18)")


def tracker_from(args: argparse.Namespace, study=None):
    """The tracker the options ask for, a study file's ``[tracking]`` table as fallback; fails at once (before any
    work) on a missing extra or a tracking store that cannot be used, naming where its URI came from.

    ``--tracking-uri`` (or ``--tracking-experiment``) without ``--track`` means ``--track mlflow``: MLflow is the
    only tracker that takes them, and a URI typed on the command line is meant to be used. ``--track none`` with
    either is a contradiction, refused. ``MLFLOW_TRACKING_URI`` alone never turns tracking on (it is often set for
    other work), but tracking that is on uses it.
    """
    from robustal.errors import ConfigError
    from robustal.tracking.tracking import create_tracker

    table = study.tracking if study is not None else {}
    where = f"the [tracking] table of {study.source}" if study is not None else None
    given = [flag for flag, value in (("--tracking-uri", args.tracking_uri),
                                      ("--tracking-experiment", args.tracking_experiment)) if value is not None]
    if args.track == "none" and given:
        raise ConfigError(f"{given[0]} has no effect with --track none: leave out one or the other.")
    kind = args.track
    if kind is None and given:
        kind = "mlflow"
        log(f"tracking with MLflow ({given[0]} implies --track mlflow)")
    if kind is None:
        kind = table.get("kind") or ("mlflow" if {"uri", "experiment"} & set(table) else "none")
    uri, source = None, None
    if args.tracking_uri is not None:
        uri, source = args.tracking_uri, "--tracking-uri"
    elif "uri" in table:
        uri, source = table["uri"], f"uri in {where}"
    experiment = args.tracking_experiment or table.get("experiment") or "robustal"
    log_model = args.log_model if args.log_model is not None else table.get("log_model", True)
    return create_tracker(kind, uri, experiment, source=source, log_model=log_model)


def loop_config(args: argparse.Namespace, train=None, eval_attack=None):
    """The :class:`~robustal.loop.LoopConfig` of the active-learning options (``train``: default from the training
    options)."""
    from robustal.loop import LoopConfig
    from robustal.loop.stopping import StoppingRule

    options = {"bins": args.dre_bins} if args.dre_bins is not None and args.acquisition == "dre" else {}
    return LoopConfig(acquisition=args.acquisition, acquisition_options=options, initial=args.initial,
                      per_stage=args.per_stage, budget=args.budget, train=train or train_config(args),
                      eval_attack=eval_attack, from_scratch=args.from_scratch,
                      chance_recovery=args.chance_recovery, seed=args.seed, pool=pool_config(args),
                      stop=None if args.stop_gain is None else StoppingRule(args.stop_gain, args.stop_patience))


def train_config(args: argparse.Namespace):
    from robustal.engine.training import TrainConfig

    return TrainConfig(mode=args.training, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                       lr=args.lr, weight_decay=args.weight_decay, epsilon=args.epsilon,
                       attack_steps=args.attack_steps, step_size=args.step_size,
                       random_start=not args.no_random_start, epsilon_warmup=args.epsilon_warmup,
                       trades_beta=args.trades_beta, min_steps=args.min_steps, precision=args.precision,
                       memory_format=args.memory_format, validate_last=args.validate_last or None,
                       ema=args.ema)


def int_list(text: str, flag: str, min_value: int | None = None, max_value: int | None = None) -> list[int]:
    """Comma-separated integers of ``flag`` within the bounds, none twice."""
    from robustal.errors import ConfigError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} must be comma-separated integers; got {text!r}.") from None
    if not values:
        raise ConfigError(f"{flag} is empty; give comma-separated integers (e.g. {flag} 100,500).")
    bad = [v for v in values if (min_value is not None and v < min_value) or (max_value is not None and v > max_value)]
    if bad:
        raise ConfigError(f"{flag} values must lie in [{min_value}, {max_value if max_value is not None else 'inf'}]; "
                          f"got {bad[0]}.")
    if len(set(values)) != len(values):
        raise ConfigError(f"{flag} lists a value twice: {text!r}.")
    return values


def name_list(text: str, flag: str, valid: list[str], kind: str = "acquisition function") -> list[str]:
    """Comma-separated registered names of ``flag``; an unknown one is reported with the flag and the nearest name."""
    from robustal.errors import ConfigError, UnknownNameError

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{flag} is empty; give comma-separated names from: {', '.join(valid)}.")
    for n in names:
        if n not in valid:
            raise ConfigError(f"{flag}: {UnknownNameError(kind, n, valid)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{flag} lists a name twice: {text!r}.")
    return names


def read_text_file(path: str, flag: str) -> str:
    """The UTF-8 text of the file given to ``flag``, or a ConfigError that says what is wrong with it."""
    from pathlib import Path

    from robustal.errors import ConfigError

    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{flag} {path!r} is a directory; give a text file.")
    if not p.is_file():
        raise ConfigError(f"{flag} {path!r} not found; give an existing text file.")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{flag} {path!r} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except OSError as e:
        raise ConfigError(f"{flag} {path!r} cannot be read ({e.strerror}).") from None


def command_line() -> str:
    """The command as typed, for the lock file of a results folder."""
    return "robustal " + " ".join(sys.argv[1:])[:200]


def output_folder(path: str | None, flag: str = "--out"):
    """Check a results folder before any work and hold its lock (one robustal process per folder) while in the
    ``with`` block; None: no folder, no lock."""
    import contextlib

    from robustal.storage.outputs import claimed_folder

    if path is None:
        return contextlib.nullcontext()
    return claimed_folder(path, flag, command_line())  # a folder it made is removed again if the command fails


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress_bar(total: int, unit: str, disable: bool = False):
    """A tqdm bar on stderr; none (no escape codes) with ``disable`` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit.rstrip("s"), desc=unit, disable=True if disable else None, dynamic_ncols=True)

