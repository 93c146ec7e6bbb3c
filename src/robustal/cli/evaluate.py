"""``robustal evaluate``: clean and robust accuracy of a saved or stored model, without training it (RobustBench's
use); ``robustal export``: a stored run's model as a standalone checkpoint."""

from __future__ import annotations

import argparse
import json

from robustal.cli import common
from robustal.cli.common import (
    DATA_DIR_HELP,
    POSITIVE_INT,
    add_factory_arg,
    add_runtime_args,
    attack_label,
    attack_settings,
    log,
)


def _model(args: argparse.Namespace):
    """The checkpoint ``--model`` names, or (``DIR --run NAME [--stage N]``) a stored run's."""
    from robustal.errors import ConfigError
    from robustal.reports.stored_model import load_model, run_checkpoint

    if (args.model is None) == (args.dir is None):
        raise ConfigError("Give the model either with --model FILE.pt or as a results folder and a run: robustal "
                          f"{args.command} DIR --run NAME [--stage N].")
    if args.model is not None:
        if args.run is not None or args.stage is not None:
            raise ConfigError("--run and --stage name a run of a results folder (robustal evaluate DIR --run NAME); "
                              "with --model leave them out.")
        return load_model(args.model, args.factory), str(args.model)
    ckpt = run_checkpoint(args.dir, args.run, args.stage, args.factory)
    return ckpt, f"run {ckpt.evaluation['run']!r} of {args.dir}, stage {ckpt.evaluation['stage']}"


def _attack_and_seed(args: argparse.Namespace, ckpt, dataset):
    """``--attack``/``--eval-steps``/``--seed`` as given; left out for a run's model, the run's own evaluation
    attack and seed (so that the stored accuracies are reproduced), else PGD-50 and seed 0."""
    from robustal.reports.stored_model import run_evaluation

    own = run_evaluation(ckpt)
    custom = args.attack is not None or args.eval_steps is not None or args.epsilon is not None
    if own is not None and not custom:
        attack, seed = own
    else:
        args.attack, args.eval_steps = args.attack or "pgd", 50 if args.eval_steps is None else args.eval_steps
        attack, seed = common.eval_attack(args, dataset), (own[1] if own is not None else 0)
    reproduces = own is not None and not custom and args.seed is None
    return attack, (args.seed if args.seed is not None else seed), reproduces


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from robustal._runtime import resolve_device
    from robustal.engine.evaluation import evaluate
    from robustal.errors import ConfigError
    from robustal.loop.checkpoint_data import checkpoint_data

    device = resolve_device(args.device)
    ckpt, source = _model(args)
    data = checkpoint_data(ckpt, args.data, args.data_dir, args.epsilon)
    dataset = data.dataset
    part = dataset.splits().test if args.split == "test" else dataset.splits().val
    whole = len(part)
    if args.n is not None:
        if args.n > len(part):
            raise ConfigError(f"--n {args.n} is more than the {len(part)} samples of the {args.split} split.")
        part = part.subset(torch.arange(args.n))
    attack, seed, runs_own = _attack_and_seed(args, ckpt, dataset)
    model = ckpt.build(dataset, device)
    what = f"the held-out labels of {dataset.name}" if data.project is not None else dataset.name
    log(f"{what}: evaluating {ckpt.build_name} from {source} on the first {len(part)} samples of the "
        f"{args.split} split" + (f", robust under {attack_label(attack)}" if attack else "")
        + (" (the run's own evaluation attack and seed)" if runs_own else "")
        + ("" if data.recorded else " (not the data it was made on)"))
    if args.checks:
        result, report = _with_checks(model, part, dataset, attack, args, device, seed)
    else:
        result, report = evaluate(model, part, attack, device=device, seed=seed), None
    stored = None
    if runs_own and data.recorded and args.split == "test" and len(part) == whole:
        stored = {k: ckpt.evaluation.get(k) for k in ("run", "stage", "clean", "robust")}
    if args.json:
        from robustal.storage.provenance import provenance

        out = {"model": source, "model_name": ckpt.model_name, "data": data.source,
               "data_is_recorded": data.recorded, "split": args.split, "n": result.n,
               "clean": result.clean, "robust": result.robust,
               "attack": None if attack is None else attack_settings(attack), "seed": seed, "stored": stored,
               "provenance": provenance(device)}
        if report is not None:
            out.update(best_known_robust=report.best_known, masking=report.to_dict())
        print(json.dumps(out, indent=1))
        return 0
    print(f"clean accuracy: {result.clean:.4f}")
    if attack is not None:
        print(f"robust accuracy: {result.robust:.4f} ({attack_label(attack)}, n={result.n})")
    if report is not None:
        _print_checks(report)
    if stored is not None:
        robust = "" if stored["robust"] is None else f", robust {stored['robust']:.4f}"
        log(f"the run stored at stage {stored['stage']}: clean {stored['clean']:.4f}{robust}")
    return 0


def _with_checks(model, part, dataset, attack, args, device, seed: int):
    """The evaluation's result and the gradient-masking checks (:mod:`robustal.engine.masking`), which reuse the
    evaluation attack's per-image mask; their PGD is the evaluation's (or the paper's PGD-50 when that is not PGD)."""
    from robustal.engine.autoattack import require
    from robustal.engine.evaluation import EVAL_STEPS, accuracy_masks, from_masks, paper_attack
    from robustal.engine.masking import CHECK_SQUARE_QUERIES, masking_checks

    require("square")  # before any attack runs
    correct, robust = accuracy_masks(model, part, attack, device=device, seed=seed)
    pgd = attack if attack is not None and attack.name == "pgd" else paper_attack(dataset, args.eval_steps or
                                                                                  EVAL_STEPS)
    queries = args.checks_queries or CHECK_SQUARE_QUERIES
    log(f"gradient-masking checks: FGSM, a PGD-{pgd.steps} epsilon sweep, the input gradients"
        + ("" if attack is not None and attack.name == "square" else f", Square ({queries} queries)"))
    report = masking_checks(model, part, pgd.epsilon, steps=pgd.steps, step_size=pgd.step_size,
                            attacks_done=None if attack is None else {attack.name: robust},
                            square_queries=queries, device=device, seed=seed)
    return from_masks(correct, robust), report


def _print_checks(report) -> None:
    print(f"gradient-masking checks (eps={report.epsilon:.4g}, n={report.n}): "
          f"{len(report.flags)} of {len(report.checks)} flagged")
    for check in report.checks:
        print(f"  {'PASS' if check.passed else 'FLAG'}  {check.name}: {check.summary()} "
              f"(threshold {check.threshold:g})")
        if check.meaning:
            print(f"        {check.meaning}")
    attacks = ", ".join(f"{name} {acc:.4f}" for name, acc in report.robust.items())
    print(f"best-known robust accuracy: {report.best_known:.4f} (robust to every attack at eps={report.epsilon:.4g}: "
          f"{attacks})")


def cmd_export(args: argparse.Namespace) -> int:
    from robustal.reports.stored_model import export_checkpoint, run_checkpoint
    from robustal.storage.outputs import check_output_file

    check_output_file(args.out, "--out")
    ckpt = run_checkpoint(args.dir, args.run, args.stage, args.factory)
    export_checkpoint(ckpt, args.out)
    log(f"wrote {args.out}: run {ckpt.evaluation['run']!r}, stage {ckpt.evaluation['stage']} "
        f"({ckpt.model_name} on {ckpt.dataset}); evaluate it with robustal evaluate --model {args.out}")
    return 0


def _add_run_args(g) -> None:
    g.add_argument("--run", default=None, metavar="NAME",
                   help="the run of DIR whose model to use (default: DIR's only run)")
    g.add_argument("--stage", type=common.COUNT, default=None, metavar="N",
                   help="the stage whose model to use (default: the run's last stored stage; only that one's "
                        "checkpoint is kept)")


def register(sub) -> None:
    """Add this module's command to the subparsers ``sub``."""
    p = sub.add_parser("evaluate", help="clean and robust accuracy of a saved model (no training)",
                       description="Measure a checkpoint saved by robustal (train, retrain, run or label --save, "
                                   "export), a run's stage checkpoint, or a stored run named by its results folder "
                                   "(robustal evaluate DIR --run NAME [--stage N]) on "
                                   "the test (or validation) split of its dataset or another one: clean accuracy and "
                                   "robust accuracy under PGD, AutoAttack or Square. A run's model is measured by "
                                   "default with the run's own evaluation attack and seed, which reproduces the "
                                   "accuracy it stored. The checkpoint finds its data "
                                   "from any folder (recorded by absolute path and fingerprint; else beside the "
                                   "checkpoint); a labeling project's model is measured on the project's held-out "
                                   "labels. A checkpoint of your own model "
                                   "(--model package.module:factory when it was trained) is rebuilt from the "
                                   "factory you name with --factory: a checkpoint never makes robustal import code.")
    p.add_argument("dir", nargs="?", default=None, metavar="DIR",
                   help="a results folder (run, study): evaluate its run --run NAME instead of --model")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default=None, metavar="CKPT",
                   help="a checkpoint saved by robustal (train/retrain/label --save, export) or a run's stage "
                        "checkpoint DIR/checkpoints/RUN/stage-NNN.pt (also MLflow's copy of it)")
    _add_run_args(g)
    add_factory_arg(g)
    g.add_argument("--data", default=None, metavar="NAME|FILE.npz|DIR",
                   help="the data: a registered dataset, an .npz, an image folder (its classes mapped by the names "
                        "the checkpoint records) or a labeling project's folder (its held-out labels) (default: the "
                        "data recorded in the checkpoint)")
    g.add_argument("--data-dir", default=None, metavar="DIR", help=DATA_DIR_HELP)
    g.add_argument("--split", choices=("test", "val"), default="test", help="(default: %(default)s)")
    g.add_argument("--n", type=POSITIVE_INT, default=None, help="evaluate the first N samples only (default: all)")
    g.add_argument("--epsilon", type=common.UNIT, default=None,
                   help="L-inf budget (default: the checkpoint's, else the dataset's)")
    e = p.add_argument_group("evaluation")
    e.add_argument("--attack", choices=("pgd", "autoattack", "square"), default=None,
                   help="robust-accuracy attack, L-inf: pgd (PGD with --eval-steps steps, random start, the "
                        "dataset's step), autoattack (standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square) or "
                        "square (Square, 5000 queries); the last two need: pip install 'robustal[autoattack]' "
                        "(default: a run's model: the run's own evaluation attack; else pgd)")
    e.add_argument("--eval-steps", type=common.COUNT, default=None,
                   help="PGD steps (default: 50; 0 skips robust accuracy)")
    add_runtime_args(p, seed=False)
    p.add_argument("--seed", type=common.SEED, default=None,
                   help="seed of the attack's random choices (default: a run's model: the run's own evaluation "
                        "seed, reproducing its stored accuracy; else 0)")
    g = p.add_argument_group("gradient-masking checks (docs/masking.md)")
    g.add_argument("--checks", action="store_true",
                   help="also run the gradient-masking checks of Carlini et al. 2019 and AutoAttack -- PGD at "
                        "eps x1, x2, x4 and 1 (0.5 for colour images), FGSM, Square, the share of zero input "
                        "gradients, and the PGD -> AutoAttack gap with --attack autoattack -- and print each as PASS "
                        "or FLAG, with the best-known robust accuracy (robust to every attack). Square dominates the "
                        "cost: on a LeNet-5 with --n 200, about 10 times a PGD-50 evaluation at 1000 queries (off by "
                        "default)")
    g.add_argument("--checks-queries", type=POSITIVE_INT, default=None, metavar="N",
                   help="Square's queries in --checks (default: 1000; AutoAttack's Square uses 5000)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("export", help="a stored run's model as a standalone checkpoint",
                       description="Write the model of a run stored in the results folder DIR (its last stage, or "
                                   "--stage N) as a standalone checkpoint, the format of train --save: it records "
                                   "its model, its data (absolute path and fingerprint), its labeled set and the "
                                   "run's evaluation attack and seed, so that robustal evaluate --model FILE.pt (and "
                                   "select, retrain) use it from any folder and reproduce the run's accuracy.")
    x.add_argument("dir", metavar="DIR", help="a results folder (run, study)")
    _add_run_args(x)
    add_factory_arg(x)
    x.add_argument("--out", required=True, metavar="FILE.pt", help="the checkpoint to write")
    x.set_defaults(func=cmd_export)
