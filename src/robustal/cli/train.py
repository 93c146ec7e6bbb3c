"""``robustal train``: one model, standard or adversarial, with clean and robust accuracy."""

from __future__ import annotations

import argparse

from robustal.cli.common import (
    POSITIVE_INT,
    add_data_args,
    add_eval_args,
    add_model_args,
    add_runtime_args,
    add_training_args,
    attack_label,
    eval_attack,
    log,
    train_config,
)


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from robustal._runtime import resolve_device
    from robustal.data import load_dataset
    from robustal.engine.evaluation import evaluate
    from robustal.engine.training import fit
    from robustal.errors import ConfigError
    from robustal.loop.checkpoint import data_meta, save_checkpoint
    from robustal.loop.experiment import model_factory
    from robustal.storage.outputs import check_output_file

    save = check_output_file(args.save, "--save")  # before the work, so that a trained model is never lost
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_dir, image_size=args.image_size, channels=args.channels,
                           epsilon=args.epsilon).with_epsilon(args.epsilon)
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
    log(f"{dataset.name}: {len(train)} train / {len(splits.val)} val / {len(splits.test)} test; "
         f"{model_name}, {cfg.mode} training for {cfg.epochs} epochs on {device}")
    result = fit(model, train, splits.val, cfg, device=device, seed=args.seed, progress=not args.no_progress)
    log(f"best epoch {result.best_epoch} (validation {'robust' if cfg.adversarial else 'clean'} accuracy "
         f"{result.best_score:.4f}), {result.seconds:.1f} s")
    ev = evaluate(model, splits.test, attack, device=device, seed=args.seed)
    print(f"clean accuracy: {ev.clean:.4f}")
    if attack is not None:
        print(f"robust accuracy: {ev.robust:.4f} ({attack_label(attack)}, n={ev.n})")
    if save is not None:
        save_checkpoint(save, model, model_name, **data_meta(dataset, args.dataset), train_config=cfg,
                        train_size=len(train))
        log(f"saved {save}")
    return 0


def register(sub) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("train", help="train one model (standard, PGD or TRADES) and report clean and robust "
                                     "accuracy",
                       description="Train one model (standard, PGD or TRADES training) on a dataset's training set "
                                   "(or its first --train-size samples), keep the epoch with the best validation "
                                   "score, and print clean and robust accuracy on the test split.")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    add_eval_args(p)
    add_runtime_args(p)
    p.add_argument("--save", default=None, metavar="FILE.pt", help="save the trained model here")
    p.add_argument("--train-size", type=POSITIVE_INT, default=None, metavar="K",
                   help="train on the first K samples of the training set only (recorded in the checkpoint; "
                        "robustal select then picks from the rest). Default: all")
    p.set_defaults(func=cmd_train)
