"""Command-line interface: a thin layer over the Python API. ``robustal --help`` lists the commands.

One module per command group (``train``, ``run``/``demo``, ``study``/``report``, ``attack``, ``select``/``retrain``/
``retrain-study``, ``export-runs``/``import-runs``), each with a ``register(sub)`` that adds its parsers; shared
options live in :mod:`.common`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

from robustal.errors import RobustalError, Terminated, raise_terminated, show_plain_warnings

DESCRIPTION = """\
robustal: robust active learning. Train classifiers that are accurate and adversarially robust
from few labels: adversarial (PGD or TRADES) training at every stage of the active-learning loop, and
acquisition functions (DRE by default) that pick which samples to label next.
"""

EPILOG = """\
examples:
  robustal demo                                   # small comparison on the offline digits data
  robustal train --dataset digits --training pgd  # one model, clean and robust accuracy
  robustal run --dataset mnist --training pgd --acquisition dre --budget 1000 --out runs/mnist
  robustal select --model m.pt --metric dre --n 500 --out picks.csv  # then: robustal retrain (docs/retrain.md)
"""


def build_parser() -> argparse.ArgumentParser:
    from robustal import __version__
    from robustal.cli import archive, attack, evaluate, label, retrain, run, study, train

    parser = argparse.ArgumentParser(prog="robustal", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"robustal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (train, evaluate, run, study, attack, archive, retrain, label):
        module.register(sub)
    parser.set_defaults(_commands=sub.choices)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that an unknown option of a command is reported with that command's usage (not
    the top-level one), as ``robustal CMD: error: unrecognized arguments: ...``."""
    args, unknown = parser.parse_known_args(argv)
    commands = vars(args).pop("_commands", {})
    if unknown:
        command = commands.get(args.command, parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as e:  # --help, --version, or a bad option (argparse has printed why)
        return int(e.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    show_plain_warnings(args.command)
    with _sigterm_as_interrupt():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command, with robustal's errors as one line each and interrupts as a resume hint."""
    try:
        return args.func(args)
    except RobustalError as e:
        print(f"robustal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a command that stopped reading (| head): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        out = getattr(args, "out", None)
        how = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"\nrobustal {args.command}: {how}." + (f" Finished stages are saved in {out}; run the same "
              "command again to resume." if out else ""), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`~robustal.errors.Terminated` (outside the main thread, where
    no handler can be set, nothing changes); the previous handler comes back after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
