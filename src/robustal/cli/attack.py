"""``robustal attack``: the final models of a results folder's finished runs under AutoAttack, without retraining."""

from __future__ import annotations

import argparse

from robustal.cli.common import DATA_DIR_HELP, POSITIVE_INT, SEED, add_factory_arg, add_runtime_args, log
from robustal.cli.run import FINAL_ATTACK_NAMES


def _select(runs, args: argparse.Namespace) -> list:
    """The finished runs the filters keep; a filter value that matches no run of the folder is refused."""
    from robustal.errors import ConfigError

    finished = [r for r in runs if r.status == "finished"]
    for flag, values, attr in (("--training", args.training, "training"),
                               ("--acquisitions", args.acquisitions, "acquisition"), ("--seeds", args.seeds, "seed")):
        if values is None:
            continue
        have = list(dict.fromkeys(getattr(r, attr) for r in finished))
        unknown = [v for v in values if v not in have]
        if unknown:
            raise ConfigError(f"{flag} {' '.join(map(str, unknown))}: no finished run of {args.dir} has it; its "
                              f"finished runs have {', '.join(map(str, have)) or 'none'}.")
        finished = [r for r in finished if getattr(r, attr) in values]
    return finished


def cmd_attack(args: argparse.Namespace) -> int:
    from robustal.engine.autoattack import require
    from robustal.loop.final_eval import FinalAttackConfig, attack_runs, is_due, row_line
    from robustal.reports.results import collect
    from robustal.storage.store import Store
    from robustal.studies.study_run import load_study_copy

    config = FinalAttackConfig(args.attack, args.n, args.seed)
    require(args.attack)
    store = Store(args.dir, create=False)  # a folder without results.db: refused here, with the fix
    study = load_study_copy(args.dir)
    runs = collect(args.dir, [t.name for t in study.tasks()] if study is not None else None)
    selected = _select(runs, args)
    todo = [r.name for r in selected if is_due(store, r.name, config)]
    log(f"attack: {len(todo)} of {len(selected)} selected final models to attack with {config.attack} "
        f"({config.version}) on the first {config.n} test images ({len(selected) - len(todo)} done before), "
        f"{args.workers} workers")
    done = 0

    def on_done(row: dict) -> None:
        nonlocal done
        done += 1
        log(f"[{done}/{len(todo)}] {row_line(row)}")

    attack_runs(args.dir, todo, config, workers=args.workers, device=args.device, data_dir=args.data_dir,
                factory=args.factory, on_done=on_done)
    log(f"{args.dir}/results.db, table final_attacks: {len(todo)} rows written; robustal report {args.dir} shows "
        "them")
    return 0


def register(sub) -> None:
    """Add this module's command to the subparsers ``sub``."""
    p = sub.add_parser("attack", help="attack the final models of a results folder with AutoAttack (no retraining)",
                       description="Attack the final model (last stored checkpoint) of each finished run of a "
                                   "results folder on its first N test images: clean accuracy, the run's own "
                                   "evaluation attack (PGD) and AutoAttack, stored in DIR/results.db (table "
                                   "final_attacks) with the machine it ran on; robustal report DIR reads them. Runs "
                                   "attacked before with the same attack, N and seed are skipped; a row made with "
                                   "another N or seed is replaced.")
    p.add_argument("dir", metavar="DIR", help="a study's (or run's) results folder")
    p.add_argument("--attack", choices=FINAL_ATTACK_NAMES, default="autoattack",
                   help="AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) or autoattack-fast (APGD-CE, APGD-T) "
                        "(default: %(default)s)")
    p.add_argument("--n", type=POSITIVE_INT, default=200, help="the first N test images (default: %(default)s)")
    p.add_argument("--training", nargs="+", default=None, metavar="MODE", help="only these training modes")
    p.add_argument("--acquisitions", nargs="+", default=None, metavar="NAME", help="only these functions")
    p.add_argument("--seeds", nargs="+", type=SEED, default=None, metavar="SEED", help="only these seeds")
    p.add_argument("--workers", type=POSITIVE_INT, default=1, help="parallel processes (default: %(default)s)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help=DATA_DIR_HELP)
    add_factory_arg(p)
    add_runtime_args(p)
    p.set_defaults(func=cmd_attack)
