"""The report's comparisons across seeds: each function against ``random`` unpaired (Mann–Whitney U) and paired by
seed (Wilcoxon signed-rank), on final accuracy and on the area under the curves; DRE against each other function;
each training mode against the first; and each function's mean rank among the functions of its mode.

Every test table says the smallest p its seeds can give (``min p``): with few seeds an exact test cannot reach
p < 0.05 however large the difference, and the table says which rows are in that case. All-label references are
never compared here (:func:`robustal.reports.results.finished_cells` keeps them apart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustal.reports.results import RunResults, Summary, finished_cells, run_auc
from robustal.reports.stats import (
    PairedComparison,
    compare,
    compare_paired,
    holm,
    mean_ranks,
    smallest_p_mann_whitney,
    smallest_p_signed_rank,
)
from robustal.reports.tables import format_table

#: The significance level the report's sentences refer to.
LEVEL = 0.05

#: The project's own function (DRE): the report also sets it against every other function of its training mode, the
#: paper's claim that it beats them all (:func:`versus_section`).
PROJECT_FUNCTION = "dre"


@dataclass(frozen=True)
class PairedRow:
    """One paired comparison: the row's leading cells, the seeds both sides have, and per metric the comparison
    (None where a side has no value for that metric)."""

    lead: list[str]
    pairs: int
    metrics: list[PairedComparison | None]


def paired(comparisons: Sequence[tuple[list[str], Mapping[int, Sequence[float | None]],
                                       Mapping[int, Sequence[float | None]]]]) -> list[PairedRow]:
    """For each ``(leading cells, metric values by seed, baseline's metric values by seed)``, every metric compared
    on the seeds both have (rows with fewer than 2 such seeds are left out)."""
    rows = []
    for lead, by_seed, base in comparisons:
        seeds = sorted(set(by_seed) & set(base))
        if len(seeds) < 2:
            continue
        metrics: list[PairedComparison | None] = []
        for j in range(len(by_seed[seeds[0]])):
            x, y = [by_seed[s][j] for s in seeds], [base[s][j] for s in seeds]
            metrics.append(None if None in x or None in y else compare_paired(x, y))
        rows.append(PairedRow(list(lead), len(seeds), metrics))
    return rows


def smallest_p(c: PairedComparison) -> float:
    """The smallest p the signed-rank test can give ``c``'s non-zero differences."""
    return smallest_p_signed_rank(c.higher + c.lower)


def reach_note(out_of_reach: Sequence[tuple[str, float]], total: int, why: str) -> list[str]:
    """The sentence (and a blank line) put above a test table when some rows cannot reach p < :data:`LEVEL`:
    ``out_of_reach`` holds each such row's name and smallest attainable p."""
    if not out_of_reach:
        return []
    least = sorted({p for _, p in out_of_reach})
    span = f"{least[0]:.3f}" + (f" to {least[-1]:.3f}" if len(least) > 1 else "")
    if len(out_of_reach) == total:
        which = f"No row of this table can reach p < {LEVEL} with its seeds (min p {span}; {why})"
    else:
        which = (f"{len(out_of_reach)} of {total} rows cannot reach p < {LEVEL} with their seeds ({why}): "
                 + ", ".join(f"{name} (min p {p:.3f})" for name, p in out_of_reach))
    return [f"{which}, however large the difference: there a p-value is no evidence either way; it takes more "
            "seeds.", ""]


def paired_table(rows: Sequence[PairedRow], lead_headers: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """A paired table's lines: per metric the mean difference, in how many seeds higher / lower, the exact p and the
    smallest p those pairs allow; above it, which rows cannot reach p < :data:`LEVEL`."""
    headers = [*lead_headers, "pairs"]
    for m in metrics:
        headers += [f"Δ {m}", "higher / lower", f"p {m}", "min p"]
    body, out_of_reach = [], []
    for row in rows:
        cells: list[object] = [*row.lead, row.pairs]
        for c in row.metrics:
            cells += [None] * 4 if c is None else [f"{c.mean_diff:+.3f}", f"{c.higher} / {c.lower}", c.p,
                                                   smallest_p(c)]
        body.append(cells)
        least = [smallest_p(c) for c in row.metrics if c is not None]
        if least and max(least) >= LEVEL:
            out_of_reach.append((" / ".join(row.lead), max(least)))
    why = "min p = 2 / 2^k for k seeds with a non-zero difference"
    return [*reach_note(out_of_reach, len(rows), why), format_table(headers, body)]


def _finals(run: RunResults) -> tuple[float, float | None]:
    return run.final.clean, run.final.robust


def _aucs(run: RunResults) -> tuple[float | None, float | None]:
    return run_auc(run, "clean"), run_auc(run, "robust")


def mann_whitney_section(cell: Sequence[Summary]) -> list[str]:
    """Each function vs random across seeds (unpaired), per training mode of one (dataset, model) group."""
    lines = ["", "### Each function vs random (two-sided Mann–Whitney U across seeds, exact where the seeds allow; "
             "Â12 = P(function > random))", "",
             "min p: the smallest p the exact test can give these numbers of seeds, n against m: 2 / C(n + m, n).", ""]
    rows, out_of_reach = [], []
    functions = [s for s in cell if not s.reference]
    for mode in dict.fromkeys(s.training for s in functions):
        base = next((s for s in functions if s.training == mode and s.acquisition == "random"), None)
        if base is None:
            continue
        for s in functions:
            if s.training != mode or s.acquisition == "random":
                continue
            c = compare(s.final_clean, base.final_clean)
            r = (compare(s.final_robust, base.final_robust)
                 if s.final_robust is not None and base.final_robust is not None else None)
            least = smallest_p_mann_whitney(s.seeds, base.seeds)
            rows.append([mode, s.acquisition, f"{s.seeds} vs {base.seeds}", least, c.u, c.p, c.a12,
                         r and r.u, r and r.p, r and r.a12])
            if least >= LEVEL:
                out_of_reach.append((f"{mode} / {s.acquisition}", least))
    if not rows:
        return [*lines, "No `random` runs to compare with."]
    return [*lines, *reach_note(out_of_reach, len(rows), "n against m seeds: 2 / C(n + m, n)"),
            format_table(["training", "acquisition", "seeds", "min p", "U clean", "p clean", "Â12 clean", "U robust",
                          "p robust", "Â12 robust"], rows)]


def paired_sections(runs: Sequence[RunResults], ds: str, model: str) -> list[str]:
    """Each function minus random, seed by seed (runs of one seed share the initial labeled set and the initial
    weights, so the per-seed difference is free of that source of variance), on final accuracy and on the area under
    the curves; which functions beat random on both robust measures; then, where the grid has several training
    modes, each mode minus the first for the same function and seed."""
    cells = {(mode, acq): rs for (d, m, mode, acq), rs in finished_cells(runs).items() if (d, m) == (ds, model)}
    against = [(mode, acq) for mode, acq in cells if acq != "random" and (mode, "random") in cells]

    def by_seed(key, values):
        return {r.seed: values(r) for r in cells[key]}

    finals = paired([([mode, acq], by_seed((mode, acq), _finals), by_seed((mode, "random"), _finals))
                     for mode, acq in against])
    aucs = paired([([mode, acq], by_seed((mode, acq), _aucs), by_seed((mode, "random"), _aucs))
                   for mode, acq in against])
    lines = []
    if finals:
        lines += ["", "### Each function vs random, paired by seed (two-sided Wilcoxon signed-rank test, exact up "
                  "to 20 pairs)", "",
                  "Runs with the same seed start from the same random labeled set and the same initial weights; the "
                  "difference function − random is taken seed by seed (higher / lower: in how many seeds; equal "
                  "seeds are left out of the test). min p: the smallest p the exact test can give those seeds.", "",
                  "#### Final accuracy", "", *paired_table(finals, ["training", "acquisition"], ["clean", "robust"]),
                  "", "#### Area under the curves", "",
                  "The normalized area under each run's accuracy-vs-labels curve (its mean accuracy over the budget), "
                  "function − random seed by seed.", "",
                  *paired_table(aucs, ["training", "acquisition"], ["AUC clean", "AUC robust"]),
                  "", *_beats_random(finals, aucs)]
    modes = list(dict.fromkeys(mode for mode, _ in cells))

    def base(mode: str) -> str:  # a mode with the pool (pgd+self-training) against the same mode without it
        plain = mode.split("+")[0]
        return plain if plain != mode and plain in modes else modes[0]

    rows = paired([([mode, base(mode), acq], by_seed((mode, acq), _finals), by_seed((base(mode), acq), _finals))
                   for mode, acq in cells if mode != base(mode) and (base(mode), acq) in cells])
    if rows:
        lines += ["", f"### Each training mode vs {modes[0]}, same function, paired by seed (two-sided Wilcoxon "
                  "signed-rank test)", "",
                  f"The difference mode − {modes[0]} for the same function and seed (a mode trained on the unlabeled "
                  "pool: against the same mode without it): the same initial labeled set and initial weights, then "
                  "each mode's own training and picks.", "",
                  *paired_table(rows, ["training", "vs", "acquisition"], ["clean", "robust"])]
    return lines


def _beats_random(finals: Sequence[PairedRow], aucs: Sequence[PairedRow]) -> list[str]:
    """One sentence: the functions higher than random with p < :data:`LEVEL` on both final robust accuracy and its
    area under the curve, with what they do to clean accuracy; then whether each stays below the level after Holm's
    correction for the number of functions compared with random in its training mode (per measure)."""
    auc_by = {tuple(r.lead): r.metrics[1] for r in aucs}
    tested = [(row, row.metrics[1], auc_by.get(tuple(row.lead))) for row in finals]
    tested = [(row, robust, auc) for row, robust, auc in tested if robust and auc]
    if not tested:
        return []
    adjusted: dict[tuple[str, ...], tuple[float, float]] = {}
    for mode in dict.fromkeys(row.lead[0] for row, _, _ in tested):
        family = [(row, robust, auc) for row, robust, auc in tested if row.lead[0] == mode]
        for (row, _, _), p_robust, p_auc in zip(family, holm([r.p for _, r, _ in family]),
                                                holm([a.p for _, _, a in family]), strict=True):
            adjusted[tuple(row.lead)] = (p_robust, p_auc)
    winners, survivors = [], []
    for row, robust, auc in tested:
        if robust.mean_diff > 0 and auc.mean_diff > 0 and robust.p < LEVEL and auc.p < LEVEL:
            clean = row.metrics[0]
            name = " / ".join(row.lead)
            p_robust, p_auc = adjusted[tuple(row.lead)]
            winners.append(f"{name} (robust {robust.mean_diff:+.3f}, p = {robust.p:.3f}; AUC robust "
                           f"{auc.mean_diff:+.3f}, p = {auc.p:.3f}; clean {clean.mean_diff:+.3f}, p = {clean.p:.3f}; "
                           f"Holm-adjusted p = {p_robust:.3f} and {p_auc:.3f})")
            if p_robust < LEVEL and p_auc < LEVEL:
                survivors.append(name)
    if not winners:
        return [f"No function is higher than random on both final robust accuracy and its area under the curve with "
                f"p < {LEVEL} (paired, {len(finals)} compared)."]
    families = {row.lead[0]: sum(r.lead[0] == row.lead[0] for r, _, _ in tested) for row, _, _ in tested}
    counted = ", ".join(f"{k} under {mode}" for mode, k in families.items())
    held = (f"After Holm's correction for the functions compared with random ({counted}), p < {LEVEL} on both "
            f"holds for: {', '.join(survivors)}." if survivors else
            f"After Holm's correction for the functions compared with random ({counted}), none of them stays below "
            f"p < {LEVEL} on both: at this number of seeds the differences may be luck of the many comparisons.")
    held += (" The correction is for picking winners among many; a single comparison chosen before the runs (the "
             "paper's DRE against random, say) is judged by its own p.")
    return [f"Higher than random on both final robust accuracy and its area under the curve, p < {LEVEL} paired "
            f"(each test on its own): {'; '.join(winners)}.", "", held]


def versus_section(runs: Sequence[RunResults], ds: str, model: str,
                   function: str = PROJECT_FUNCTION) -> list[str]:
    """``function`` minus each other function of its training mode, seed by seed, on final accuracy (positive:
    ``function`` ahead); nothing where the group has no finished run of ``function``."""
    cells = {k[2:]: rs for k, rs in finished_cells(runs).items() if k[:2] == (ds, model)}

    def by_seed(key):
        return {r.seed: _finals(r) for r in cells[key]}

    rows = paired([([mode, acq], by_seed((mode, function)), by_seed((mode, acq)))
                   for mode, acq in cells if acq != function and (mode, function) in cells])
    if not rows:
        return []
    return ["", f"### {function} vs each other function, paired by seed (two-sided Wilcoxon signed-rank test)", "",
            f"The difference {function} − the function in the row, seed by seed, on the seeds both finished "
            f"(positive: {function} ahead; higher / lower: in how many seeds {function} is higher / lower).", "",
            *paired_table(rows, ["training", "vs"], ["clean", "robust"])]


def ranking_section(runs: Sequence[RunResults], ds: str, model: str) -> list[str]:
    """Per training mode, each function's mean rank over the seeds where every function of the mode finished (rank
    1: the highest final accuracy of that seed), for robust and clean accuracy, best robust rank first."""
    cells = {k[2:]: rs for k, rs in finished_cells(runs).items() if k[:2] == (ds, model)}
    rows, notes = [], []
    for mode in dict.fromkeys(m for m, _ in cells):
        functions = {acq: {r.seed: r.final for r in rs} for (m, acq), rs in cells.items() if m == mode}
        if len(functions) < 2:
            continue
        seeds, clean = mean_ranks({a: {s: f.clean for s, f in fs.items()} for a, fs in functions.items()})
        if not seeds:
            notes.append(f"{mode}: no seed where all {len(functions)} functions finished, so no ranking.")
            continue
        measured = all(f.robust is not None for fs in functions.values() for s, f in fs.items() if s in seeds)
        robust = mean_ranks({a: {s: fs[s].robust for s in seeds} for a, fs in functions.items()})[1] if measured \
            else {}
        order = sorted(functions, key=lambda a: (robust.get(a, clean[a]), clean[a]))
        rows += [[mode, a, f"{len(seeds)} ({len(functions)} functions)", robust.get(a), clean[a]] for a in order]
    if not rows and not notes:
        return []
    lines = ["", "### Ranking of the functions", "",
             "In each seed, the functions of one training mode ranked by final accuracy (1 = the highest; ties share "
             "their average rank), then the mean over the seeds where every function of that mode finished (seeds "
             "column); sorted by mean robust rank.", ""]
    if rows:
        lines.append(format_table(["training", "acquisition", "seeds", "mean rank robust", "mean rank clean"], rows,
                                  floatfmt=".2f"))
    return lines + [line for note in notes for line in ("", note)]


__all__ = ["LEVEL", "PROJECT_FUNCTION", "PairedRow", "mann_whitney_section", "paired", "paired_sections",
           "paired_table", "ranking_section", "reach_note", "smallest_p", "versus_section"]
