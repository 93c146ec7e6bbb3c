"""``robustal study`` and ``robustal report``: grids of runs and what they show."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from robustal.cli.common import (
    DATA_DIR_HELP,
    NON_NEGATIVE,
    POSITIVE_INT,
    POSITIVE_UNIT,
    add_runtime_args,
    add_tracking_args,
    log,
    output_folder,
    read_text_file,
    tracker_from,
)
from robustal.cli.study_progress import StudyProgress
from robustal.loop.stopping import StoppingRule


def cmd_study(args: argparse.Namespace) -> int:
    from robustal.storage.store import Store
    from robustal.studies.study import Study

    started = time.perf_counter()
    _check_executor_options(args)
    study = Study.load(args.file)
    study.check_data()
    out = Path(args.out if args.out is not None else Path("runs") / study.name)
    if args.executor == "ray":  # Ray installed, the cluster answering and accepting us: before any work
        from robustal.studies.ray_cluster import check_address

        check_address(args.address)
    tracker = tracker_from(args, study)  # before the folder is touched: a bad URI leaves nothing behind
    with output_folder(str(out)):
        store = Store(out, create=False) if (out / "results.db").is_file() else None
        return _study(args, study, out, store, started, tracker)


def _check_executor_options(args: argparse.Namespace) -> None:
    """Refuse options the chosen executor would ignore."""
    from robustal.errors import ConfigError

    if args.executor == "local":
        for flag, value in (("--address", args.address), ("--gpus-per-run", args.gpus_per_run)):
            if value is not None:
                raise ConfigError(f"{flag} is for Ray (--executor ray); the local executor runs --workers processes "
                                  f"on this machine's --device. Add --executor ray, or leave {flag} out.")
    elif args.gpus_per_run is not None and not str(args.device).startswith("cuda"):
        raise ConfigError(f"--gpus-per-run {args.gpus_per_run:g} asks Ray for a share of a GPU per run, which "
                          f"--device {args.device} would not use: add --device cuda, or leave --gpus-per-run out.")


def _study(args: argparse.Namespace, study, out: Path, store, started: float, tracker) -> int:
    from robustal.reports.stats import format_mean_std, mean_std
    from robustal.reports.tables import count, format_table
    from robustal.studies.study_run import run_study

    tasks = study.tasks()
    finished = {t.name for t in tasks if store is not None and store.status(t.name) == "finished"}
    where = (f"Ray cluster at {args.address}" if args.executor == "ray" and args.address is not None
             else f"{args.executor} executor, {count(args.workers, 'worker')}")
    final = ""
    if study.final_attack is not None:
        from robustal.loop.final_eval import is_due

        due = sum(is_due(store, t.name, study.final_attack) for t in tasks if t.name in finished)
        final = (f"; final attack {study.final_attack.describe()} after each run"
                 + (f" ({count(due, 'finished run')} to attack, without retraining)" if due else ""))
    log(f"study {study.name!r}: {count(len(tasks), 'run')} ({len(finished)} already finished), {where}; results in "
        f"{out}" + final)
    bar = StudyProgress(out, tasks, disable=args.no_progress)

    def on_done(name: str, stages) -> None:
        if name in finished:
            return
        bar.refresh()
        robust = "-" if stages[-1].robust is None else f"{stages[-1].robust:.3f}"
        bar.write(f"{name}: {stages[-1].labeled} labels, clean {stages[-1].clean:.3f}, robust {robust}")

    named = {t.spec.model for t in tasks if t.spec.model and ":" in t.spec.model}  # named in the study file

    def report() -> Path:  # attached to the study's MLflow run
        from robustal.studies.report import write_report

        path = write_report(out, factories=sorted(named))
        log(f"report {path} attached to the study's MLflow run")
        return path.parent

    try:
        results = run_study(study, out, executor=args.executor, workers=args.workers, device=args.device,
                            data_dir=args.data_dir, address=args.address, on_done=on_done, study_file=args.file,
                            tracker=tracker, gpus_per_run=args.gpus_per_run, report=report)
    finally:
        bar.close()
    from robustal.engine.pool_training import training_label

    cells: dict[tuple, list] = {}
    for task in tasks:
        loop = task.spec.loop
        acq = task.spec.acquisition_label or loop.acquisition
        training = training_label(loop.train.mode, loop.pool.mode)
        key = (task.name.removesuffix(f"-{training}-{acq}-s{loop.seed}"), training, acq)
        cells.setdefault(key, []).append(results[task.name][-1])
    rows = []
    for (prefix, mode, acq), finals in cells.items():
        clean = mean_std([r.clean for r in finals])
        robust = mean_std([r.robust for r in finals]) if all(r.robust is not None for r in finals) else None
        rows.append([prefix, mode, acq, len(finals), format_mean_std(*clean, len(finals)),
                     "-" if robust is None else format_mean_std(*robust, len(finals))])
    print(format_table(["dataset-model", "training", "acquisition", "seeds", "clean (final)", "robust (final)"], rows))
    print(f"\n{count(len(tasks), 'run')} in {out} ({time.perf_counter() - started:.0f} s); tables, curves and tests: "
          f"robustal report {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the report. A part left out (a run's checkpoint missing or damaged, data that cannot be loaded) is a
    warning on stderr, one line per problem, and the exit code stays 0: the report is written and complete but for
    that part, which report.md names with its reason, so a script that makes reports keeps them."""
    import warnings

    from robustal.errors import ReportWarning
    from robustal.storage.outputs import check_output_dir
    from robustal.studies.report import write_report

    header = read_text_file(args.header, "--header") if args.header is not None else ""
    out = check_output_dir(args.out, "--out")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)  # one line per problem, even two alike
        path = write_report(args.dir, out, data_dir=args.data_dir, entropies=not args.no_entropy, header=header,
                            factories=args.factory, stopping=StoppingRule(args.stop_gain, args.stop_patience))
    for w in caught:  # shown once the report is written, each as the warnings module would
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    left_out = sum(issubclass(w.category, ReportWarning) for w in caught)
    print(f"wrote {path}" + (f" ({left_out} part(s) left out: see the warnings above and the report)"
                             if left_out else ""))
    return 0


def register(sub) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("study", help="run a study file's grid of runs (resumable), locally or on Ray",
                       description="Run every run of a study file (datasets x models x training modes x acquisition "
                                   "functions x seeds) that is not finished yet; interrupted runs resume. The study "
                                   "file is copied to DIR/study.toml for `robustal report DIR`.")
    p.add_argument("file", metavar="FILE.toml", help="study file (see studies/ for examples)")
    p.add_argument("--out", default=None, metavar="DIR", help="results folder (default: runs/<study name>)")
    p.add_argument("--workers", type=POSITIVE_INT, default=1,
                   help="parallel runs (local processes, or the local Ray instance's CPUs) (default: %(default)s)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local worker processes, or Ray tasks (pip install 'robustal[ray]') (default: %(default)s)")
    p.add_argument("--address", default=None,
                   help="Ray cluster address: the host:port that `ray start --head` prints (a token-authenticated "
                        "cluster needs its token here: RAY_AUTH_TOKEN or ~/.ray/auth_token), auto, or "
                        "ray://host:10001 (default: $RAY_ADDRESS, else start a local instance)")
    p.add_argument("--gpus-per-run", type=POSITIVE_UNIT, default=None, metavar="SHARE",
                   help="Ray with --device cuda: the share of a GPU each run asks for, so that several runs share "
                        "a card (default: by model size: 0.25 under 1 M parameters, 0.5 under 20 M, else 1)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help=DATA_DIR_HELP)
    add_runtime_args(p, seed=False)
    add_tracking_args(p, study=True)
    p.set_defaults(func=cmd_study)
    p = sub.add_parser("report", help="tables, curves and statistical tests of a study's results",
                       description="Write DIR/report/report.md with final and area-under-curve accuracies (mean +- "
                                   "std over seeds), curves, entropy distributions of the selected samples, "
                                   "the class balance of each function's labeled set, "
                                   "Mann-Whitney U tests and Vargha-Delaney A12 of each function vs random, "
                                   "and stages.csv. A part that cannot be made (a run's checkpoint missing or "
                                   "damaged, data that cannot be loaded) is left out with its reason in the report "
                                   "and a warning on stderr; the exit code stays 0, since the rest of the report "
                                   "is complete.")
    p.add_argument("dir", metavar="DIR", help="a study's (or run's) results folder")
    p.add_argument("--out", default=None, metavar="REPORT_DIR", help="where to write (default: DIR/report)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="dataset cache, to recompute entropies and class balance (default: $ROBUSTAL_DATA or "
                        "~/.cache/robustal)")
    p.add_argument("--no-entropy", action="store_true",
                   help="skip what needs the data: the entropy distributions (they load each dataset and final "
                        "model) and the class balance")
    p.add_argument("--header", default=None, metavar="FILE.md",
                   help="Markdown put at the top of the report (e.g. the commands that made the results)")
    p.add_argument("--factory", action="append", default=[], metavar="MODULE:FACTORY",
                   help="runs of your own model: its factory (repeat for several), so that the entropy section can "
                        "rebuild them. robustal imports only code you name here, never a factory because a results "
                        "folder records it")
    p.add_argument("--stop-gain", type=NON_NEGATIVE, default=StoppingRule().min_gain, metavar="G",
                   help="the stopping rule the report judges on every finished run: stop once validation gained "
                        "less than G (0.01 = one point) over the last --stop-patience stages (default: %(default)s, "
                        "the rule `robustal status` recommends)")
    p.add_argument("--stop-patience", type=POSITIVE_INT, default=StoppingRule().patience, metavar="K",
                   help="stages over which --stop-gain is measured (default: %(default)s)")
    p.set_defaults(func=cmd_report)
