"""``robustal evaluate``: clean and robust accuracy of a saved model, without training it (RobustBench's use)."""

from __future__ import annotations

import argparse
import json

from robustal.cli import common
from robustal.cli.common import (
    DATA_DIR_HELP,
    POSITIVE_INT,
    add_eval_args,
    add_factory_arg,
    add_runtime_args,
    attack_label,
    attack_settings,
    log,
)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from robustal._runtime import resolve_device
    from robustal.checkpoint import load_checkpoint
    from robustal.checkpoint_data import checkpoint_data
    from robustal.errors import ConfigError
    from robustal.evaluation import evaluate

    device = resolve_device(args.device)
    ckpt = load_checkpoint(args.model, args.factory)
    data = checkpoint_data(ckpt, args.data, args.data_dir, args.epsilon)
    dataset = data.dataset
    part = dataset.splits().test if args.split == "test" else dataset.splits().val
    if args.n is not None:
        if args.n > len(part):
            raise ConfigError(f"--n {args.n} is more than the {len(part)} samples of the {args.split} split.")
        part = part.subset(torch.arange(args.n))
    attack = common.eval_attack(args, dataset)
    model = ckpt.build(dataset, device)
    what = f"the held-out labels of {dataset.name}" if data.project is not None else dataset.name
    log(f"{what}: evaluating {ckpt.build_name} from {args.model} on the first {len(part)} samples of the "
        f"{args.split} split" + (f", robust under {attack_label(attack)}" if attack else "")
        + ("" if data.recorded else " (not the data it was made on)"))
    if args.checks:
        result, report = _with_checks(model, part, dataset, attack, args, device)
    else:
        result, report = evaluate(model, part, attack, device=device, seed=args.seed), None
    if args.json:
        from robustal.provenance import provenance

        out = {"model": str(args.model), "model_name": ckpt.model_name, "data": data.source,
               "data_is_recorded": data.recorded, "split": args.split, "n": result.n,
               "clean": result.clean, "robust": result.robust,
               "attack": None if attack is None else attack_settings(attack), "seed": args.seed,
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
    return 0


def _with_checks(model, part, dataset, attack, args, device):
    """The evaluation's result and the gradient-masking checks (:mod:`robustal.masking`), which reuse the
    evaluation attack's per-image mask; their PGD is the evaluation's (or the paper's PGD-50 when that is not PGD)."""
    from robustal.autoattack import require
    from robustal.evaluation import EVAL_STEPS, accuracy_masks, from_masks, paper_attack
    from robustal.masking import CHECK_SQUARE_QUERIES, masking_checks

    require("square")  # before any attack runs
    correct, robust = accuracy_masks(model, part, attack, device=device, seed=args.seed)
    pgd = attack if attack is not None and attack.name == "pgd" else paper_attack(dataset, args.eval_steps or
                                                                                  EVAL_STEPS)
    queries = args.checks_queries or CHECK_SQUARE_QUERIES
    log(f"gradient-masking checks: FGSM, a PGD-{pgd.steps} epsilon sweep, the input gradients"
        + ("" if attack is not None and attack.name == "square" else f", Square ({queries} queries)"))
    report = masking_checks(model, part, pgd.epsilon, steps=pgd.steps, step_size=pgd.step_size,
                            attacks_done=None if attack is None else {attack.name: robust},
                            square_queries=queries, device=device,
                            seed=args.seed)
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


def register(sub) -> None:
    """Add this module's command to the subparsers ``sub``."""
    p = sub.add_parser("evaluate", help="clean and robust accuracy of a saved model (no training)",
                       description="Measure a checkpoint saved by robustal (train, retrain, run or label --save) on "
                                   "the test (or validation) split of its dataset or another one: clean accuracy and "
                                   "robust accuracy under PGD, AutoAttack or Square. The checkpoint finds its data "
                                   "from any folder (recorded by absolute path and fingerprint; else beside the "
                                   "checkpoint); a labeling project's model is measured on the project's held-out "
                                   "labels. A checkpoint of your own model "
                                   "(--model package.module:factory when it was trained) is rebuilt from the "
                                   "factory you name with --factory: a checkpoint never makes robustal import code.")
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True, metavar="CKPT", help="a checkpoint saved by robustal")
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
    add_eval_args(p)
    add_runtime_args(p)
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
