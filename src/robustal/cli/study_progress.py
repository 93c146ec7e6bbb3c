"""A study's progress by stage, with the names of the runs training now: a run of ten stages takes minutes, so a bar
of runs stands still (``0/4`` for minutes) while work is being done.

The store is the one place every executor's progress reaches: local workers write each finished stage to it, so a
thread reads the stage counts from it every few seconds; Ray runs reach it when they come back, whole. On a terminal
the bar shows ``stages done/total`` and ``now: RUN, ...``; elsewhere (a log file, a pipe) there is no bar and no
escape code, but a plain line at most once a minute when something changed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from robustal.cli.common import log, progress_bar

#: Seconds between two reads of the store, and between two plain progress lines when not on a terminal.
POLL_SECONDS, LINE_SECONDS = 2.0, 60.0


class StudyProgress:
    """Stages done of ``tasks`` (a study's :class:`~robustal.studies.executors.RunTask` list) in the store at ``out``.

    Attributes:
        total: Every stage of every task.
        done: Stages stored so far.
        running: The tasks training now (status running, updated since this progress started), in task order.
    """

    def __init__(self, out: str | Path, tasks, disable: bool = False, poll: float = POLL_SECONDS):
        self.out, self.order = Path(out), [t.name for t in tasks]
        self.stages = {t.name: len(t.spec.loop.stage_sizes()) for t in tasks}
        self.total = sum(self.stages.values())
        self.started, self.done, self.running = time.time(), 0, []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._last_line, self._line_done = 0.0, -1
        self.bar = progress_bar(self.total, "stages", disable=disable)
        self.quiet = disable
        self.refresh()
        self.bar.n = self.bar.initial = self.done  # the rate and ETA count only the stages done now
        self.bar.refresh()
        self._thread = threading.Thread(target=self._watch, args=(poll,), daemon=True, name="study-progress")
        self._thread.start()

    def _read(self) -> tuple[int, list[str]]:
        from robustal.storage.store import Store

        if not (self.out / "results.db").is_file():
            return 0, []
        rows = Store(self.out, create=False).progress()
        done = sum(min(rows[n][1], k) for n, k in self.stages.items() if n in rows)
        running = [n for n in self.order if n in rows and rows[n][0] == "running" and rows[n][2] >= self.started
                   and rows[n][1] < self.stages[n]]
        return done, running

    def refresh(self) -> None:
        """Read the store and show what it holds (called by the watcher thread, and as each run finishes)."""
        try:
            done, running = self._read()
        except Exception:  # noqa: BLE001 - a busy or half-written store: the next read will do
            return
        with self._lock:
            self.done, self.running = done, running
            self.bar.n = done
            shown = ", ".join(running[:3]) + (f" and {len(running) - 3} more" if len(running) > 3 else "")
            self.bar.set_postfix_str(f"now: {shown}" if running else "", refresh=False)
            self.bar.refresh()
            now = time.time()
            if (self.bar.disable and not self.quiet and done != self._line_done
                    and now - self._last_line >= LINE_SECONDS):
                self._last_line, self._line_done = now, done
                log(f"{done}/{self.total} stages" + (f"; now: {shown}" if running else ""))

    def _watch(self, poll: float) -> None:
        while not self._stop.wait(poll):
            self.refresh()

    def write(self, line: str) -> None:
        with self._lock:
            self.bar.write(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.bar.close()


__all__ = ["StudyProgress"]
