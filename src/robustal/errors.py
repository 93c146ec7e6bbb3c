"""Exceptions for problems the user can fix. The CLI prints their message and exits non-zero, with no traceback."""

from __future__ import annotations

import difflib


class RobustalError(Exception):
    """Base class for user-facing errors: bad input, bad data, bad configuration."""


class ConfigError(RobustalError, ValueError):
    """An argument or configuration value is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A name is not in a registry; the message lists the valid names and the nearest match."""

    def __init__(self, kind: str, name: str, choices: list[str]):
        self.kind, self.name, self.choices = kind, name, choices
        close = nearest(name, choices)
        hint = f" Did you mean {close!r}?" if close else ""
        super().__init__(f"Unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(choices)}.")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class DataError(RobustalError):
    """A dataset file is missing, corrupt, truncated or of the wrong shape."""


class ChecksumError(DataError):
    """A downloaded or cached file does not have its published checksum."""


class StoreError(RobustalError):
    """The results store cannot be used as asked (e.g. resuming with a different configuration)."""


class CheckpointError(StoreError):
    """A finished stage's checkpoint is missing or cannot be read. The message says to restore it or to train the
    stage again, never to delete results: in a labeling project those are a person's labels. ``run``, ``stage``,
    ``path`` and ``problem`` let a command give its own way to redo the stage."""

    def __init__(self, run: str, stage: int, path, problem: str):
        self.run, self.stage, self.path, self.problem = run, stage, path, problem
        super().__init__(f"Run {run!r}: the checkpoint of its finished stage {stage}, {path}, {problem}. Restore "
                         "that file from a backup if you have one; or run the run again into another --out (the "
                         "results here stay as they are).")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``kill``) turned into an interrupt by the CLI, so a terminated command ends as a
    Ctrl-C does: runs marked interrupted, trackers closed, and the resume hint printed."""


def raise_terminated(signum, frame) -> None:
    """The SIGTERM handler of the CLI and of a study's workers: raise :class:`Terminated`."""
    raise Terminated()


class FactoryWarning(UserWarning):
    """A checkpoint or run of a user's model is rebuilt with another factory than the one recorded with it."""


class AnswersWarning(UserWarning):
    """Answers were read, but something in them deserves a look (one task annotated with several classes: the
    latest annotation is used)."""


class ChanceLevelWarning(UserWarning):
    """A stage ended with a model no better than a constant prediction (adversarial training that has not started
    to learn); the stage's ``at_chance`` flag is stored and the report counts such runs."""


class ReproducibilityWarning(UserWarning):
    """A run resumes under another numeric environment (device, thread count, torch version): its remaining stages
    will not be bit for bit those of an uninterrupted run."""


class ReportWarning(UserWarning):
    """Part of a report could not be made (a run's checkpoint missing or damaged, its data not loadable, a user's
    factory not named with ``--factory``): the report is written without that part and says why in ``report.md``;
    the warning says it on the terminal too."""


class TrackingWarning(UserWarning):
    """The experiment tracker could not record something (the run goes on: the results store keeps everything, and
    running the same command again mirrors what is missing)."""


def nearest(name: str, choices: list[str]) -> str | None:
    """The closest of ``choices`` to ``name``: a case-insensitive match first (``DRE`` → ``dre``), else the closest
    by difflib's ratio if any is reasonably close."""
    folded = [c for c in choices if c.casefold() == str(name).casefold()]
    if folded:
        return folded[0]
    matches = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    return matches[0] if matches else None


class PoolWarning(UserWarning):
    """A stage could not use the unlabeled pool as configured (its teacher at chance level, no pseudo-label above the
    confidence threshold): it trains on its labels alone, and the stage's ``pool_images`` is stored as 0."""


#: robustal's warnings that a terminal shows as one plain line (``robustal CMD: warning: ...``), not in Python's
#: file-and-line form.
PLAIN_WARNINGS = (ChanceLevelWarning, ReproducibilityWarning, ReportWarning, TrackingWarning, FactoryWarning,
                  AnswersWarning, PoolWarning)


def show_plain_warnings(command: str) -> None:
    """Show robustal's own warnings (:data:`PLAIN_WARNINGS`: a stage at chance level, a resume under another
    environment, a part of a report left out...) as one plain line each, ``robustal COMMAND: warning: ...``, not in
    Python's file-and-line form; other libraries' warnings are shown as usual. Used by the CLI and by a study's
    worker processes. Calling it again replaces the earlier hook instead of stacking on it."""
    import sys
    import warnings

    default = getattr(warnings.showwarning, "robustal_default", warnings.showwarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PLAIN_WARNINGS):
            print(f"robustal {command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    show.robustal_default = default
    warnings.showwarning = show
