"""``robustal select``, ``retrain`` and ``retrain-study``: test selection for retraining a trained model."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustal.cli.common import (
    DATA_DIR_HELP,
    MAX_SEED,
    POSITIVE_INT,
    acquisition_names,
    add_eval_args,
    add_factory_arg,
    add_runtime_args,
    add_training_args,
    attack_label,
    eval_attack,
    int_list,
    log,
    name_list,
    output_folder,
    progress_bar,
    train_config,
)


def _checkpoint_and_data(args: argparse.Namespace):
    """``--model``'s checkpoint, its data (``--data``, default: the recorded ones, found from any folder), the
    model's original training data in them (:class:`~robustal.studies.retrain.TrainingSet`) and the device."""
    from robustal._runtime import resolve_device
    from robustal.errors import ConfigError
    from robustal.loop.checkpoint_data import checkpoint_data
    from robustal.reports.stored_model import load_model
    from robustal.studies.retrain import resolve_training_set

    device = resolve_device(args.device)
    ckpt = load_model(args.model, args.factory)
    metric = getattr(args, "metric", None)
    if metric is not None:
        from robustal.acquisition import create_acquisition

        try:
            create_acquisition(metric)
        except ConfigError as e:
            raise ConfigError(f"--metric: {e}") from None
    data = checkpoint_data(ckpt, args.data, args.data_dir, getattr(args, "epsilon", None))
    if data.project is not None:
        raise ConfigError(f"{data.project} is a labeling project: its model is continued with robustal label (and "
                          "measured with robustal evaluate); select and retrain need a dataset whose training set "
                          "has labels. Give one with --data.")
    dataset = data.dataset
    if args.train_size is not None and args.train_size > len(dataset.train):
        raise ConfigError(f"--train-size {args.train_size} is more than the {len(dataset.train)} training samples of "
                          f"{dataset.name}; give at most {len(dataset.train) - 1} (some must stay unlabeled).")
    training = resolve_training_set(ckpt, len(dataset.train), args.train_size, data.recorded)
    return ckpt, data, training, device


def _check_sizes(sizes: list[int], available: int, flag: str) -> None:
    from robustal.errors import ConfigError

    too_many = [n for n in sizes if n > available]
    if too_many:
        raise ConfigError(f"{flag} asks for {too_many[0]} samples, but the new unlabeled set holds only {available} "
                          f"(the training set minus the model's original training data); give at most {available}.")


def _check_metric(metric: str, model, flag: str) -> None:
    """Refuse a metric that the model cannot serve (MC dropout, features) before any work."""
    from robustal.acquisition import create_acquisition
    from robustal.errors import ConfigError

    try:
        create_acquisition(metric).check(model)
    except ConfigError as e:
        raise ConfigError(f"{flag} {metric}: {e}") from None


def cmd_select(args: argparse.Namespace) -> int:
    from robustal.acquisition import create_acquisition
    from robustal.reports.picks_csv import write_selection
    from robustal.storage.outputs import check_output_file
    from robustal.studies.retrain import select_samples

    out = check_output_file(args.out, "--out", example="picks.csv")
    ckpt, data, training, device = _checkpoint_and_data(args)
    dataset = data.dataset
    _check_sizes([args.n], training.n_new, "--n")
    model = ckpt.build(dataset, device)
    _check_metric(args.metric, model, "--metric")
    log(f"{dataset.name}: ranking the {training.n_new} new unlabeled samples with {args.metric!r}; "
        f"{ckpt.build_name} was trained on {training.describe()} (of {training.pool_size})")
    selection = select_samples(model, dataset.train, training.indices, args.metric, args.n, seed=args.seed,
                               device=device, epsilon=dataset.epsilon)
    write_selection(out, selection, data.train_ids)
    order = "ranked, best first" if create_acquisition(args.metric).ranked else "a set, in random order"
    columns = "rank, index, score, " + ("file, " if data.train_ids is not None else "") + "label (empty)"
    print(f"wrote {out}: {len(selection.indices)} picks ({columns}; {order}). To label them yourself, fill in the "
          "label column before robustal retrain; left empty, the dataset's labels are used.")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    import torch

    from robustal.engine.evaluation import evaluate
    from robustal.loop.checkpoint import data_meta, save_checkpoint
    from robustal.reports.picks_csv import read_selection
    from robustal.storage.outputs import check_output_file
    from robustal.studies.retrain import retrain

    save = check_output_file(args.save, "--save")
    ckpt, data, training, device = _checkpoint_and_data(args)
    dataset = data.dataset
    picks = read_selection(args.selected, len(dataset.train), training.indices, args.n,
                           num_classes=dataset.num_classes, classes=dataset.class_names, ids=data.train_ids)
    cfg = train_config(args).for_dataset(dataset)
    attack = eval_attack(args, dataset)
    test = dataset.splits().test
    model = ckpt.build(dataset, device)
    before = evaluate(model, test, attack, device=device, seed=args.seed)
    source = f"your labels in {args.selected}" if picks.labels is not None else "labeled from the dataset"
    log(f"{dataset.name}: fine-tuning {ckpt.build_name} on its {len(training.indices)} original training samples + "
        f"{len(picks.indices)} selected ({source}), {cfg.mode} training for {cfg.epochs} epochs on {device}")
    if picks.labels is not None:
        differ = int((picks.labels != dataset.train.y[picks.indices]).sum())
        log(f"{differ} of your {len(picks.labels)} labels differ from the dataset's")
    result = retrain(model, dataset, training.indices, picks.indices, cfg, labels=picks.labels, device=device,
                     seed=args.seed, progress=not args.no_progress, warmup=cfg.epsilon_warmup > 0)
    log(f"best epoch {result.best_epoch} (validation {'robust' if cfg.adversarial else 'clean'} accuracy "
        f"{result.best_score:.4f}), {result.seconds:.1f} s")
    after = evaluate(model, test, attack, device=device, seed=args.seed)
    print(f"clean accuracy:  before {before.clean:.4f}, after {after.clean:.4f} ({after.clean - before.clean:+.4f})")
    if attack is not None:
        print(f"robust accuracy: before {before.robust:.4f}, after {after.robust:.4f} "
              f"({after.robust - before.robust:+.4f}) ({attack_label(attack)}, n={after.n})")
    if save is not None:
        extra = training.indices[training.indices >= training.prefix]
        save_checkpoint(save, model, ckpt.build_name, **data_meta(dataset, data.source), train_config=cfg,
                        train_size=training.prefix or None, selected=torch.cat([extra, picks.indices]).tolist())
        log(f"saved {save}")
    return 0


def cmd_retrain_study(args: argparse.Namespace) -> int:
    metrics = name_list(args.metrics, "--metrics", acquisition_names())
    sizes = int_list(args.sizes, "--sizes", min_value=1)
    seeds = int_list(args.seeds, "--seeds", min_value=0, max_value=MAX_SEED)
    with output_folder(args.out):
        ckpt, data, training, device = _checkpoint_and_data(args)
        dataset = data.dataset
        _check_sizes(sizes, training.n_new, "--sizes")
        model = ckpt.build(dataset)
        for metric in metrics:
            _check_metric(metric, model, "--metrics")
        cfg = train_config(args).for_dataset(dataset)
        attack = eval_attack(args, dataset)
        return _retrain_study(args, metrics, sizes, seeds, ckpt, dataset, training, device, cfg, attack)


def _retrain_study(args, metrics, sizes, seeds, ckpt, dataset, training, device, cfg, attack) -> int:
    from robustal.reports.tables import count
    from robustal.storage.outputs import atomic_write_bytes
    from robustal.studies.retrain import retrain_study, study_table

    total = len(metrics) * len(sizes) * len(seeds)
    log(f"retrain study: {', '.join(metrics)} x sizes {sizes} x seeds {seeds} ({count(total, 'trial')}), "
        f"{cfg.mode} fine-tuning for {cfg.epochs} epochs from {args.model}; results in {args.out}")
    bar = progress_bar(total, "trials", disable=args.no_progress)

    def on_trial(row: dict) -> None:
        bar.update(1)
        robust = "-" if row["robust_after"] is None else f"{row['robust_after']:.4f}"
        bar.write(f"{row['metric']} n={row['size']} seed {row['seed']}: clean {row['clean_after']:.4f}, "
                  f"robust {robust} ({row['seconds']} s)")

    try:
        rows = retrain_study(ckpt, dataset, metrics, sizes, seeds, cfg, attack, args.out,
                             train_size=training.indices, device=device, on_trial=on_trial)
    finally:
        bar.close()
    table = study_table([r for r in rows if r["metric"] in metrics and int(r["size"]) in sizes
                         and int(r["seed"]) in seeds], metrics)
    label = attack_label(attack) if attack is not None else "none"
    text = (f"# Retraining study: {args.model}\n\nFine-tuned on {training.describe()} + the selected ones, "
            f"{cfg.mode} training, {cfg.epochs} epochs; test accuracy (n={len(dataset.splits().test)}), robust under "
            f"{label}; mean ± std over seeds {seeds}.\n\n{table}\n")
    atomic_write_bytes(Path(args.out) / "results.md", text.encode())
    print(table)
    print(f"\nwrote {Path(args.out) / 'results.csv'} and {Path(args.out) / 'results.md'}")
    return 0


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", required=True, metavar="CKPT",
                   help="a checkpoint saved by robustal (train or retrain --save, export) or a run's stage "
                        "checkpoint DIR/checkpoints/RUN/stage-NNN.pt (also MLflow's copy of it)")
    add_factory_arg(g)
    g.add_argument("--data", default=None, metavar="NAME|FILE.npz|DIR",
                   help="its dataset (default: the one recorded in the checkpoint, found by absolute path and "
                        "fingerprint, else beside the checkpoint)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help=DATA_DIR_HELP)
    g.add_argument("--train-size", type=POSITIVE_INT, default=None, metavar="K",
                   help="declare that the model was trained on the first K samples of the training set, for a "
                        "checkpoint that does not record its training samples or for data other than its own "
                        "(default: as the checkpoint records them: robustal train --train-size, or a run's labeled "
                        "set); the rest are the new unlabeled set")


def register(sub) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("select", help="rank new unlabeled samples with a test-selection metric; write the top n",
                       description="Rank the new unlabeled set -- the dataset's training samples the model was not "
                                   "trained on (as the checkpoint records them, see --train-size) -- with any "
                                   "acquisition function as a test-selection metric, and write the top n to a CSV "
                                   "with columns rank,index,score,label (index: into the training set; score empty "
                                   "for metrics without one, such as random; a file column too for an image folder; "
                                   "label empty, for you to fill in if you label the picks yourself).")
    add_checkpoint_args(p)
    p.add_argument("--metric", default="dre", metavar="NAME",
                   help=f"selection metric: {', '.join(acquisition_names())} (default: %(default)s)")
    p.add_argument("--n", type=POSITIVE_INT, required=True, help="number of samples to select")
    p.add_argument("--out", required=True, metavar="PICKS.csv", help="where to write the selection")
    add_runtime_args(p)
    p.set_defaults(func=cmd_select)
    p = sub.add_parser("retrain", help="fine-tune a model on its training data + selected samples; before/after",
                       description="Fine-tune the checkpoint on its original training data plus the samples of a "
                                   "robustal select CSV -- labeled by you where you filled in its label column, else "
                                   "from the dataset -- and print clean and robust test accuracy before and after.")
    add_checkpoint_args(p)
    p.add_argument("--selected", required=True, metavar="PICKS.csv",
                   help="a CSV written by robustal select; fill in its label column (class names, or indices where "
                        "no class name is a number) to train on your labels, or leave it empty for the dataset's")
    p.add_argument("--n", type=POSITIVE_INT, default=None, help="use the top N picks only (default: all)")
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
    add_runtime_args(p, seed=False)
    p.set_defaults(func=cmd_retrain_study)
