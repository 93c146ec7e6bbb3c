"""``robustal export-runs`` and ``robustal import-runs``: a store's finished runs carried to another machine or
session (:mod:`robustal.storage.archive`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from robustal.cli.common import log, output_folder


def cmd_export(args: argparse.Namespace) -> int:
    from robustal.errors import ConfigError
    from robustal.storage.archive import export_runs
    from robustal.storage.provenance import machine_lines
    from robustal.storage.store import Store

    store = Store(args.dir, create=False)  # read only: a study may go on writing it meanwhile
    out = Path(args.out) if args.out is not None else store.root / "finished-runs.json.gz"
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the export file's name (e.g. {out / 'runs.json.gz'}).")
    names = export_runs(store, out, args.runs)
    held = {r["name"]: r for r in store.runs()}
    unfinished = sum(r["status"] != "finished" for r in held.values())
    log(f"exported {len(names)} finished run(s) of {store.root} to {out} ({out.stat().st_size / 1024:.0f} KiB; "
        "rows only, no checkpoints)" + (f"; {unfinished} unfinished run(s) left out" if unfinished else ""))
    for line in machine_lines((n, held[n]["versions"]) for n in names):
        log(f"  {line.replace('**', '')}")
    log(f"merge them into another results folder with: robustal import-runs {out} --out DIR")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from robustal.storage.archive import import_runs, read_export
    from robustal.storage.store import Store

    read_export(args.file)  # a bad file is refused before the folder is made or claimed
    with output_folder(args.out):
        imported, same = import_runs(args.file, Store(args.out))
    log(f"imported {len(imported)} finished run(s) from {args.file} into {args.out}"
        + (f"; {len(same)} already there with the same rows, left as they were" if same else "")
        + ". A study resumed with the same file and --out skips them; `robustal report` shows them (without their "
        "checkpoints, which do not travel).")
    return 0


def register(sub) -> None:
    """Add this module's commands to the subparsers ``sub``."""
    p = sub.add_parser("export-runs", help="write a results folder's finished runs into one file, to carry elsewhere",
                       description="Write every finished run of a results folder (its configuration, machine, "
                                   "stages, picks, labels and final attacks; no checkpoints) into one gzip JSON "
                                   "file, small enough to commit beside a report or to copy to another machine, "
                                   "where `robustal import-runs` merges it into a results folder. Safe while a study "
                                   "writes the folder: only runs finished by then are written.")
    p.add_argument("dir", metavar="DIR", help="a study's (or run's) results folder")
    p.add_argument("--out", default=None, metavar="FILE.json.gz",
                   help="the file to write (default: DIR/finished-runs.json.gz)")
    p.add_argument("--runs", action="append", default=[], metavar="PATTERN",
                   help="only the finished runs whose name matches this shell pattern, e.g. '*-all-labels-*' "
                        "(repeat for several; default: every finished run): a large folder travels in several files")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("import-runs", help="merge the runs of a `robustal export-runs` file into a results folder",
                       description="Write the finished runs of a `robustal export-runs` file into a results folder "
                                   "(created if needed). A run the folder already holds with the same rows is left "
                                   "as it is; one it holds with other results refuses the whole import before "
                                   "anything is written. Then `robustal study FILE --out DIR` runs only what is "
                                   "missing, and `robustal report DIR` shows every run with the machine that made "
                                   "it.")
    p.add_argument("file", metavar="FILE.json.gz", help="a file written by `robustal export-runs`")
    p.add_argument("--out", required=True, metavar="DIR", help="the results folder to merge the runs into")
    p.set_defaults(func=cmd_import)
