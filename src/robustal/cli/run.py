"""``robustal run`` and ``robustal demo``: stored, resumable active-learning runs."""

from __future__ import annotations

import argparse
import time

from robustal.cli.common import (
    COUNT,
    POSITIVE_INT,
    add_data_args,
    add_eval_args,
    add_loop_args,
    add_model_args,
    add_runtime_args,
    add_tracking_args,
    add_training_args,
    log,
    loop_config,
    output_folder,
    progress_bar,
    tracker_from,
)

#: ``--final-attack``'s choices, written out so that building the parser does not import torch (a test checks them
#: against :data:`robustal.loop.final_eval.FINAL_ATTACKS`).
FINAL_ATTACK_NAMES = ("autoattack", "autoattack-fast")


def loop_spec(args: argparse.Namespace):
    from robustal.cli.common import check_attack_steps
    from robustal.engine.autoattack import require
    from robustal.loop.experiment import RunSpec

    loop = loop_config(args)
    check_attack_steps(args)
    require(args.attack)
    return RunSpec(dataset=args.dataset, model=args.model, loop=loop, eval_steps=args.eval_steps,
                   eval_attack=args.attack, image_size=args.image_size, channels=args.channels)


def final_attack_from(args: argparse.Namespace):
    """``--final-attack``/``--final-n`` as a :class:`~robustal.loop.final_eval.FinalAttackConfig` (None without
    them)."""
    from robustal.engine.autoattack import require
    from robustal.errors import ConfigError
    from robustal.loop.final_eval import DEFAULT_N, FinalAttackConfig

    if args.final_attack is None:
        if args.final_n is not None:
            raise ConfigError("--final-n sets the test images of the final attack: add --final-attack autoattack "
                              "(or autoattack-fast), or leave --final-n out.")
        return None
    if args.out is None:
        raise ConfigError(f"--final-attack {args.final_attack} stores its result with the run: add --out DIR.")
    require(args.final_attack)  # before any training
    return FinalAttackConfig(args.final_attack, args.final_n if args.final_n is not None else DEFAULT_N)


#: The name robustal before 0.4 gave every run without --name: a folder holding one is resumed under it.
LEGACY_RUN_NAME = "run"


def default_run_name(spec, dataset, out: str | None) -> str:
    """A run's name without ``--name``: its settings, as a study names its runs (``digits-small-cnn-pgd-dre-s0``);
    ``run`` where ``out`` holds a run of that name (robustal before 0.4 named every run so), so that it resumes."""
    from dataclasses import replace
    from pathlib import Path

    if out is not None and (Path(out) / "results.db").is_file():
        from robustal.storage.store import Store

        if Store(out, create=False).run_config(LEGACY_RUN_NAME) is not None:
            return LEGACY_RUN_NAME
    return replace(spec, model=spec.model or dataset.default_model).default_name()


def _stage_line(result) -> str:
    r = result.record
    robust = "-" if r.robust is None else f"{r.robust:.4f}"
    return (f"stage {r.stage}: {r.labeled} labeled, clean {r.clean:.4f}, robust {robust} "
            f"(select {r.select_seconds:.1f} s, train {r.train_seconds:.1f} s, best epoch {r.best_epoch})")


def cmd_run(args: argparse.Namespace) -> int:
    from robustal.errors import ConfigError
    from robustal.loop.checkpoint import data_meta, save_checkpoint
    from robustal.loop.experiment import run_experiment
    from robustal.reports.tables import format_table
    from robustal.storage.outputs import check_output_file

    save = check_output_file(args.save, "--save")
    final = final_attack_from(args)
    spec = loop_spec(args)
    tracker = tracker_from(args)
    stages = len(spec.loop.stage_sizes())
    if args.name is not None and not args.name.strip():
        raise ConfigError("--name is empty; give the run a name (or leave --name out: it is named after its "
                          "settings, e.g. digits-small-cnn-pgd-dre-s0).")

    def on_stage(result) -> None:
        bar.update(1)
        bar.write(_stage_line(result))

    with output_folder(args.out):
        dataset = spec.load_data(args.data_dir)
        name = args.name if args.name is not None else default_run_name(spec, dataset, args.out)
        log(f"run {name!r}: {spec.loop.acquisition} on {spec.dataset}, {spec.loop.train.mode} training, "
            f"{spec.loop.initial} + {spec.loop.per_stage}/stage up to {spec.loop.budget} labels"
            + (f"; results in {args.out}" if args.out else ""))
        bar = progress_bar(stages, "stages", disable=args.no_progress)
        try:
            result = run_experiment(spec, args.out, name=name, data_dir=args.data_dir, device=args.device,
                                    progress=not args.no_progress, on_stage=on_stage, dataset=dataset,
                                    tracker=tracker, final_attack=final)
        finally:
            bar.close()
        if final is not None and result.waiting is None:
            from robustal.loop.final_eval import row_line, stored_row
            from robustal.storage.store import Store

            log(f"final attack: {row_line(stored_row(Store(args.out), name, final.attack))}")
    print(format_table(["stage", "labeled", "clean", "robust", "train s", "select s"],
                       [[r.stage, r.labeled, r.clean, r.robust, round(r.train_seconds, 1),
                         round(r.select_seconds, 2)] for r in result.stages], floatfmt=".4f"))
    if result.stages and result.waiting is None and result.stages[-1].labeled < spec.loop.budget:
        log(f"stopped at {result.stages[-1].labeled} of {spec.loop.budget} labels: {spec.loop.stop.describe()} "
            "(run again without --stop-gain to go on to the budget)")
    if save is not None:
        from robustal.loop.experiment import resolve

        model_name, cfg = resolve(spec, dataset)
        save_checkpoint(save, result.model, model_name,
                        **data_meta(dataset.with_epsilon(spec.loop.train.epsilon), spec.dataset),
                        train_config=cfg.train, selected=result.labeled.tolist())
        log(f"saved the final model to {save}")
    return 0


#: The demo's functions: the baseline and the paper's DRE, each under standard and PGD training -- four runs, so
#: that two workers finish in the time of one PGD run and one standard run (with entropy too, 6 runs took twice that).
DEMO_FUNCTIONS = ("random", "dre")


def cmd_demo(args: argparse.Namespace) -> int:
    from robustal.engine.training import TrainConfig
    from robustal.loop import LoopConfig
    from robustal.loop.experiment import RunSpec
    from robustal.reports.tables import count, format_table
    from robustal.studies.executors import RunTask, run_local

    started = time.perf_counter()
    tasks = []
    for mode in ("standard", "pgd"):
        for acq in DEMO_FUNCTIONS:
            loop = LoopConfig(acquisition=acq, initial=args.initial, per_stage=args.per_stage, budget=args.budget,
                              train=TrainConfig(mode=mode, epochs=args.epochs, batch_size=64,
                                                min_steps=args.min_steps), seed=args.seed)
            tasks.append(RunTask(f"digits-{mode}-{acq}-s{args.seed}",
                                 RunSpec(dataset="digits", model="small-cnn", eval_steps=args.eval_steps, loop=loop)))
    def on_done(name: str, stages) -> None:
        bar.update(1)
        robust = "-" if stages[-1].robust is None else f"{stages[-1].robust:.3f}"
        bar.write(f"{name}: clean {stages[-1].clean:.3f}, robust {robust}")

    with output_folder(args.out):
        log(f"demo: {count(len(tasks), 'active-learning run')} on scikit-learn's digits (small-cnn, "
            f"{args.initial} + {args.per_stage}/stage up to {args.budget} labels, {args.epochs} epochs/stage, "
            f"{count(args.workers, 'worker')}); results in {args.out}")
        bar = progress_bar(len(tasks), "runs", disable=args.no_progress)
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
    robust = f"robust under PGD-{args.eval_steps} (eps=0.2)" if args.eval_steps else "robust not measured"
    print(f"\nclean/robust: accuracy on 250 held-out digits, {robust}; first = "
          f"after the {args.initial} random labels, last = at {args.budget} labels; "
          f"{time.perf_counter() - started:.0f} s."
          "\nStandard training gives accurate but fragile models; PGD training at every stage gives robust ones.")
    return 0


def register(sub) -> None:
    """Add this module's commands to the subparsers ``sub``."""
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
    add_tracking_args(p)
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (DIR/results.db, checkpoints)")
    p.add_argument("--name", default=None,
                   help="the run's name in the results store (default: named after its settings, e.g. "
                        "digits-small-cnn-pgd-dre-s0)")
    p.add_argument("--save", default=None, metavar="FILE.pt",
                   help="save the final model (for robustal evaluate, select, retrain)")
    g = p.add_argument_group("final attack (stored in DIR/results.db, table final_attacks; not part of the run's "
                             "settings: adding it to a finished run only attacks)")
    g.add_argument("--final-attack", choices=FINAL_ATTACK_NAMES, default=None,
                   help="attack the final model after the last stage: AutoAttack standard (APGD-CE, APGD-T, FAB-T, "
                        "Square) or autoattack-fast (APGD-CE, APGD-T) (needs --out)")
    g.add_argument("--final-n", type=POSITIVE_INT, default=None, metavar="N",
                   help="the first N test images (default: 200)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("demo", help="random vs DRE, standard vs PGD training, on digits "
                                    "(about 40 s on 2 CPU cores)",
                       description="A complete small comparison on scikit-learn's bundled digits (no download): "
                                   "random and DRE acquisition under standard and PGD training.")
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="results folder (default: %(default)s)")
    p.add_argument("--initial", type=POSITIVE_INT, default=50, help="random initial labels (default: %(default)s)")
    p.add_argument("--per-stage", type=POSITIVE_INT, default=50, help="labels per stage (default: %(default)s)")
    p.add_argument("--budget", type=POSITIVE_INT, default=300, help="total labels (default: %(default)s)")
    # The demo's schedule (6 epochs, >= 100 steps) is lighter than robustal's default (15, >= 150): a minute's run.
    p.add_argument("--epochs", type=POSITIVE_INT, default=6, help="epochs per stage (default: %(default)s)")
    p.add_argument("--min-steps", type=COUNT, default=100,
                   help="at least this many optimizer steps per stage (default: %(default)s)")
    p.add_argument("--eval-steps", type=COUNT, default=50, help="PGD steps of robust accuracy (default: %(default)s)")
    p.add_argument("--workers", type=POSITIVE_INT, default=2, help="parallel runs (default: %(default)s)")
    add_runtime_args(p)
    p.set_defaults(func=cmd_demo)
