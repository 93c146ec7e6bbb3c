"""The report's optional section on the final models under a stronger attack, read from ``DIR/final-attacks.csv``.

The file (written by ``scripts/final_attacks.py``, which attacks each run's final checkpoint) has one row per run:
``run, n, clean, pgd, autoattack`` (other columns are ignored): clean, PGD (the run's own evaluation attack, the
paper's PGD-50 in its studies) and AutoAttack (standard) robust accuracy on the same first ``n`` test images. It may
be partial: runs not attacked yet are simply absent (or have empty cells), and the section says how many final
models it covers. A file that cannot be read leaves the section out with the reason
(:class:`~robustal.errors.ReportWarning`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robustal.comparisons import paired, paired_table
from robustal.errors import DataError
from robustal.results import RunResults
from robustal.stats import format_mean_std, mean_std
from robustal.tables import format_table

#: The file's name in a results folder, and its columns.
FINAL_ATTACKS = "final-attacks.csv"
COLUMNS = ("run", "n", "clean", "pgd", "autoattack")


@dataclass(frozen=True)
class FinalAttack:
    """One run's final model under both attacks, on its first ``n`` test images."""

    run: str
    n: int
    clean: float
    pgd: float
    autoattack: float


def read_final_attacks(path: str | Path) -> tuple[dict[str, FinalAttack], int]:
    """The complete rows of ``path`` by run name, and how many rows had an empty cell (not attacked yet: left out).

    Raises :class:`~robustal.errors.DataError` naming the file, the line and the fix for a missing column, a value
    that is not a number (an accuracy outside [0, 1], a count below 1) or a run listed twice."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the header must name "
                                f"{', '.join(COLUMNS)}.")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot be read as CSV ({e}); write it with the columns {', '.join(COLUMNS)}.") \
            from None
    out: dict[str, FinalAttack] = {}
    lines: dict[str, int] = {}
    incomplete = 0
    for line, row in enumerate(rows, start=2):
        values = [(row.get(c) or "").strip() for c in COLUMNS]
        if not all(values):
            incomplete += 1
            continue
        run = values[0]
        if run in out:
            raise DataError(f"{path}, line {line}: run {run!r} is listed twice (first on line {lines[run]}); keep one "
                            "row per run.")
        try:
            n = int(values[1])
            accs = [float(v) for v in values[2:]]
        except ValueError:
            raise DataError(f"{path}, line {line}: n must be a whole number and clean, pgd, autoattack numbers; got "
                            f"{', '.join(values[1:])}.") from None
        if n < 1 or not all(0.0 <= a <= 1.0 for a in accs):
            raise DataError(f"{path}, line {line}: n must be at least 1 and the accuracies in [0, 1] (fractions, not "
                            f"percentages); got {', '.join(values[1:])}.")
        out[run] = FinalAttack(run, n, *accs)
        lines[run] = line
    return out, incomplete


def final_attacks_section(runs: Sequence[RunResults], ds: str, model: str, attacks: dict[str, FinalAttack],
                          incomplete: int) -> list[str]:
    """The section for one (dataset, model) group: per training mode and function, PGD and AutoAttack robust accuracy
    (mean ± std over the attacked seeds) and their gap; then each function vs random paired by seed under both."""
    group = [r for r in runs if r.group == (ds, model) and r.status == "finished" and r.name in attacks]
    if not group:
        return []
    finished = sum(r.group == (ds, model) and r.status == "finished" for r in runs)
    unknown = sorted(set(attacks) - {r.name for r in runs if r.status == "finished"})
    cells: dict[tuple[str, str, bool], list[RunResults]] = {}
    for r in group:
        cells.setdefault((r.training, r.acquisition, r.is_reference), []).append(r)
    sizes = sorted({attacks[r.name].n for r in group})
    images = " to ".join(map(str, dict.fromkeys([sizes[0], sizes[-1]])))
    lines = ["", "### Final models under AutoAttack", "",
             f"From [{FINAL_ATTACKS}]({FINAL_ATTACKS}) ({len(group)} of the {finished} finished runs' final models"
             + (f"; {incomplete} row(s) with an empty cell left out" if incomplete else "") + "): clean accuracy, "
             "PGD robust accuracy (pgd: each run's own evaluation attack, as above) and AutoAttack (standard) robust "
             f"accuracy on the same first {images} test images; mean ± std over the seeds attacked. Gap: PGD − "
             "AutoAttack, the robustness PGD overstates. Rank: among the functions of the training mode, by mean."
             + (f" Left out, not a finished run of this folder: {', '.join(unknown)}." if unknown else ""), ""]
    rows = []
    for mode in dict.fromkeys(m for m, _, _ in cells):
        functions = {a: rs for (m, a, ref), rs in cells.items() if m == mode and not ref}
        pgd = {a: mean_std([attacks[r.name].pgd for r in rs])[0] for a, rs in functions.items()}
        aa = {a: mean_std([attacks[r.name].autoattack for r in rs])[0] for a, rs in functions.items()}
        rank_pgd = {a: i + 1 for i, a in enumerate(sorted(pgd, key=lambda a: -pgd[a]))}
        rank_aa = {a: i + 1 for i, a in enumerate(sorted(aa, key=lambda a: -aa[a]))}
        for reference in (False, True):  # the functions, then the mode's all-label references
            rows += [[mode, f"{acq} (reference)" if ref else acq, len(rs), *_means(rs, attacks),
                      None if ref else rank_pgd[acq], None if ref else rank_aa[acq]]
                     for (m, acq, ref), rs in cells.items() if m == mode and ref == reference]
    lines.append(format_table(["training", "acquisition", "runs", "clean", "PGD", "AutoAttack", "gap", "rank PGD",
                               "rank AutoAttack"], rows))
    values = {key: {r.seed: (attacks[r.name].pgd, attacks[r.name].autoattack) for r in rs}
              for key, rs in cells.items() if not key[2]}
    comparisons = paired([([mode, acq], v, values[(mode, "random", False)]) for (mode, acq, _), v in values.items()
                          if acq != "random" and (mode, "random", False) in values])
    if comparisons:
        lines += ["", "Each function vs random under both attacks, paired by seed (two-sided Wilcoxon signed-rank "
                  "test; the seeds both have attacked):", "",
                  *paired_table(comparisons, ["training", "acquisition"], ["PGD", "AutoAttack"])]
    return lines


def _means(rs: Sequence[RunResults], attacks: dict[str, FinalAttack]) -> list[str]:
    """clean, PGD, AutoAttack as mean ± std over ``rs``, and the mean gap PGD − AutoAttack."""
    rows = [attacks[r.name] for r in rs]
    pm = lambda vs: format_mean_std(*mean_std(vs), len(vs))
    gap = mean_std([a.pgd - a.autoattack for a in rows])[0]
    return [pm([a.clean for a in rows]), pm([a.pgd for a in rows]), pm([a.autoattack for a in rows]), f"{gap:+.3f}"]


__all__ = ["COLUMNS", "FINAL_ATTACKS", "FinalAttack", "final_attacks_section", "read_final_attacks"]
