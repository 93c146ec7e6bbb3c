"""Worker processes die with the process that started them.

A study's local workers write into the results folder that their parent holds locked. Killed with SIGKILL, the
parent cannot stop them, and they would go on writing without the lock, beside a rerun that the free lock lets
in. Each worker therefore (1) asks Linux to send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
and (2) everywhere, watches its parent from a daemon thread and exits as soon as it has gone (its parent pid
changes: it was re-parented).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

#: Seconds between two looks at the parent (the portable fallback).
WATCH_INTERVAL = 0.5
#: ``PR_SET_PDEATHSIG`` of <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> bool:
    """Ask Linux for SIGKILL when the parent dies; False where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    event = threading.Event()
    while not event.wait(WATCH_INTERVAL):
        if os.getppid() != parent:
            os._exit(1)  # no cleanup that could write: the parent, which held the folder's lock, is gone


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when ``parent`` (the pid that started it) ends, even by SIGKILL."""
    _parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    threading.Thread(target=_watch, args=(parent,), name="robustal-lifeline", daemon=True).start()


__all__ = ["WATCH_INTERVAL", "die_with_parent"]
