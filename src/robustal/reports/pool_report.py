"""The report's sections on training with the unlabeled pool and on when to stop labeling.

- The pool: per training mode that used it and function, the teacher's validation clean accuracy and its
  pseudo-labels' accuracy at the first and last stage (how much of the pool's help is noise), and one figure per
  training mode with its curves with and without the pool (the all-label references as lines).
- Stopping: the stopping rule (:mod:`robustal.loop.stopping`) applied after the fact to every finished run: at how many
  labels it would have stopped, the robust accuracy that would have cost against the run's last stage, and whether it
  stopped where the run's test robustness levels off (:func:`robustal.loop.stopping.levels_off_stage`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from robustal.loop.stopping import StoppingRule, levels_off_stage
from robustal.reports.figures import file_slug, plot_curves
from robustal.reports.results import RunResults, finished_cells
from robustal.reports.stats import mean_std
from robustal.reports.tables import format_table


def _mean(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return "-" if not known else "{:.3f} ± {:.3f}".format(*mean_std(known)) if len(known) > 1 else f"{known[0]:.3f}"


def pool_section(runs: Sequence[RunResults], ds: str, model: str, out: Path) -> list[str]:
    """Teacher and pseudo-label accuracy per pool mode and function; curves with and without the pool."""
    cells = {k[2:]: rs for k, rs in finished_cells(runs).items() if k[:2] == (ds, model) and "+" in k[2]}
    if not cells:
        return []
    rows = []
    for (mode, acq), rs in cells.items():
        first = [r.stages[0] for r in rs]
        last = [r.final for r in rs]
        rows.append([mode, acq, len(rs), _mean([s.teacher_clean for s in first]),
                     _mean([s.teacher_clean for s in last]), _mean([s.pseudo_accuracy for s in first]),
                     _mean([s.pseudo_accuracy for s in last]),
                     round(statistics.mean(s.pool_images or 0 for s in last))])
    lines = ["", "### Training on the unlabeled pool", "",
             "Self-training's teacher (validation clean accuracy) and its pseudo-labels (accuracy against the pool's "
             "true labels) at the first and the last stage, mean ± std over seeds; pool images: the unlabeled images "
             "trained on at the last stage. Pseudo-labels are never stored or counted as labels; the label counts "
             "are the true labels only. A consistency run has no teacher ('-').", "",
             format_table(["training", "acquisition", "runs", "teacher (first)", "teacher (last)",
                           "pseudo-labels (first)", "pseudo-labels (last)", "pool images (last)"], rows)]
    modes = list(dict.fromkeys(m for d, mo, m, _ in finished_cells(runs) if (d, mo) == (ds, model)))
    for plain in dict.fromkeys(m.split("+")[0] for m, _ in cells):
        group = [m for m in modes if m.split("+")[0] == plain]
        if len(group) < 2:  # the pool's runs alone: the report's own curves of that mode show them already
            continue
        path = plot_curves(runs, ds, model, group, out / f"curves-pool-{file_slug(ds, model, plain)}.png")
        lines += ["", f"![{ds} {model} {plain} with and without the pool]({path.name})"]
    return lines


def stopping_section(runs: Sequence[RunResults], ds: str, model: str,
                     rule: StoppingRule | None = None) -> list[str]:
    """Where the stopping rule would have stopped each finished run, and the robust accuracy that cost."""
    rule = rule or StoppingRule()
    cells = {k[2:]: rs for k, rs in finished_cells(runs).items() if k[:2] == (ds, model)}
    rows = []
    for (mode, acq), rs in cells.items():
        stops = [rule.stop_stage([s.val_score for s in r.stages]) for r in rs]
        at = [r.stages[i] if i is not None else r.final for r, i in zip(rs, stops, strict=True)]
        lost = [r.final.robust - s.robust for r, s in zip(rs, at, strict=True)
                if r.final.robust is not None and s.robust is not None]
        if len(rs[0].stages) <= rule.patience:
            continue
        # Where each run's test robustness levels off, and whether the rule stopped within one stage of it (a rule
        # that never fires stops at the budget).
        levels = [levels_off_stage([s.robust for s in r.stages], rule.min_gain) for r in rs]
        levelled = [(r, i, stop) for r, i, stop in zip(rs, levels, stops, strict=True) if i is not None]
        near = sum(abs((len(r.stages) - 1 if stop is None else stop) - i) <= 1 for r, i, stop in levelled)
        rows.append([mode, acq, len(rs), sum(i is not None and i < len(r.stages) - 1 for r, i in zip(rs, stops,
                                                                                                       strict=True)),
                     _label_count(statistics.median(s.labeled for s in at)), rs[0].final.labeled,
                     _mean(lost) if lost else "-", max(lost) if lost else None, len(levelled),
                     _label_count(statistics.median(r.stages[i].labeled for r, i, _ in levelled)) if levelled else "-",
                     f"{near} of {len(levelled)}" if levelled else "-"])
    if not rows:
        return []
    return ["", "### When to stop labeling", "",
            f"The stopping rule ({rule.describe()}; "
            + ("`robustal status` recommends it" if rule == StoppingRule() else "given to `robustal report`")
            + ", `--stop-gain` applies it to a run), "
            "applied after the fact to each finished run: the runs it would have stopped before the budget, the "
            "median label count it stops at (the budget where it never fires), and the test robust accuracy that "
            "stopping there loses against the run's last stage (mean ± std, and the worst run). What it is judged "
            f"against: where a run's test robust accuracy levels off -- the first stage after which it never rises "
            f"by more than {100 * rule.min_gain:g} point(s) again (runs whose curve still rises at the budget do not "
            "count) -- the runs that level off, their median label count there, and in how many of them the rule "
            "stopped within one stage of it.", "",
            format_table(["training", "acquisition", "runs", "stopped early", "median labels at stop", "budget",
                          "robust lost", "worst", "levelled", "median labels at levelling", "stop within a stage"],
                         rows, floatfmt=".3f")]


def _label_count(median: float) -> int | str:
    """A median label count as the table shows it: an integer, or halfway between two (``450.5``)."""
    return int(median) if float(median).is_integer() else f"{median:.1f}"


__all__ = ["pool_section", "stopping_section"]
