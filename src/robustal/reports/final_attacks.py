"""The report's optional section on the final models under a stronger attack, read from the store's ``final_attacks``
table (written by ``robustal attack``, ``robustal run --final-attack`` and a study's ``[final_attack]``:
:mod:`robustal.loop.final_eval`) and from a legacy ``DIR/final-attacks.csv``.

The table gives one section per attack (AutoAttack standard, its fast version), with the machines the attacks ran on.
The legacy file (written by robustal 0.3's ``scripts/final_attacks.py``) has one row per run:
``run, n, clean, pgd, autoattack`` (other columns are ignored): clean, PGD (the run's own evaluation attack, the
paper's PGD-50 in its studies) and AutoAttack (standard) robust accuracy on the same first ``n`` test images. It may
be partial: runs not attacked yet are simply absent (or have empty cells), and the section says how many final
models it covers. A file that cannot be read leaves the section out with the reason
(:class:`~robustal.errors.ReportWarning`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robustal.errors import DataError
from robustal.reports.comparisons import LEVEL, paired, paired_table
from robustal.reports.results import RunResults
from robustal.reports.stats import format_mean_std, mean_std
from robustal.reports.tables import format_table
from robustal.storage.provenance import machine_label

#: The file's name in a results folder, and its columns.
FINAL_ATTACKS = "final-attacks.csv"
COLUMNS = ("run", "n", "clean", "pgd", "autoattack")
#: The report's copy of the store's final-attack rows (one per run and attack), and its columns.
ATTACK_ROWS = "attacks.csv"
ATTACK_ROW_COLUMNS = ("run", "attack", "version", "n", "clean", "pgd", "robust", "seconds", "machine")
#: Each final attack's name in the report's headings and columns, and its attacks in words.
ATTACK_LABELS = {"autoattack": ("AutoAttack", "AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square)"),
                 "autoattack-fast": ("AutoAttack-fast", "AutoAttack's fast version (APGD-CE, APGD-T only; not "
                                     "RobustBench's standard)")}


@dataclass(frozen=True)
class FinalAttack:
    """One run's final model under both attacks, on its first ``n`` test images."""

    run: str
    n: int
    clean: float
    pgd: float | None
    autoattack: float  # robust accuracy under the section's final attack (AutoAttack standard or fast)


@dataclass(frozen=True)
class AttackSource:
    """One section's rows: the final ``attack``'s rows by run, rows left out (empty cells), where they come from
    (Markdown), and per row the machine that attacked (empty for the legacy file)."""

    attack: str
    rows: dict[str, FinalAttack]
    incomplete: int
    source: str
    machines: dict[str, str]


def store_sources(stored: Sequence[dict], legacy: tuple[dict[str, FinalAttack], int] | None) -> list[AttackSource]:
    """The sections to write: one per attack of the store's ``final_attacks`` rows (:meth:`Store.final_attacks`),
    the legacy file's rows joining AutoAttack's where the table has no row of their run."""
    by_attack: dict[str, dict[str, dict]] = {}
    for row in stored:
        by_attack.setdefault(row["attack"], {})[row["run"]] = row
    table = f"the results store (results.db, table final_attacks; each row in [{ATTACK_ROWS}]({ATTACK_ROWS}))"
    out = []
    if legacy is not None and "autoattack" not in by_attack:
        out.append(AttackSource("autoattack", legacy[0], legacy[1], f"[{FINAL_ATTACKS}]({FINAL_ATTACKS})", {}))
    for attack, rows in sorted(by_attack.items()):
        finals = {run: FinalAttack(run, r["n"], r["clean"], r["pgd"], r["robust"]) for run, r in rows.items()}
        machines = {run: machine_label(r["provenance"]) for run, r in rows.items()}
        source, incomplete = table, 0
        if attack == "autoattack" and legacy is not None:
            extra = {run: a for run, a in legacy[0].items() if run not in finals}
            finals.update(extra)
            source, incomplete = f"{table} and [{FINAL_ATTACKS}]({FINAL_ATTACKS}) ({len(extra)} rows)", legacy[1]
        out.append(AttackSource(attack, finals, incomplete, source, machines))
    return out


def attack_rows_csv(stored: Sequence[dict]) -> str:
    """The store's final-attack rows (:meth:`Store.final_attacks`) as CSV text, one row per run and attack, sorted:
    the report writes it beside ``stages.csv`` so that the figures of its sections can be recomputed from the
    committed files, without the store."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ATTACK_ROW_COLUMNS)
    for r in sorted(stored, key=lambda r: (r["run"], r["attack"])):
        writer.writerow([r["run"], r["attack"], r["version"], r["n"], r["clean"],
                         "" if r["pgd"] is None else r["pgd"], r["robust"], round(r["seconds"], 1),
                         machine_label(r["provenance"])])
    return buf.getvalue()


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
                          incomplete: int, *, attack: str = "autoattack", source: str | None = None,
                          machines: dict[str, str] | None = None) -> list[str]:
    """The section for one (dataset, model) group under one final ``attack``: per training mode and function, PGD and
    the attack's robust accuracy (mean ± std over the attacked seeds) and their gap; then each function vs random
    paired by seed under both, and which attack each verdict rests on. ``source``: where the rows come from
    (Markdown); ``machines``: per run, the machine that attacked it."""
    short, long = ATTACK_LABELS.get(attack, (attack, attack))
    source = source or f"[{FINAL_ATTACKS}]({FINAL_ATTACKS})"
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
    title = "AutoAttack" if attack == "autoattack" else short
    lines = ["", f"### Final models under {title}", "",
             f"From {source} ({len(group)} of the {finished} finished runs' final models"
             + (f"; {incomplete} row(s) with an empty cell left out" if incomplete else "") + "): clean accuracy, "
             f"PGD robust accuracy (pgd: each run's own evaluation attack, as above) and {long} robust "
             f"accuracy on the same first {images} test images; mean ± std over the seeds attacked. Gap: PGD − "
             f"{short}, the robustness PGD overstates. Rank: among the functions of the training mode, by mean."
             + (f" Left out, not a finished run of this folder: {', '.join(unknown)}." if unknown else ""), ""]
    if machines:
        used: dict[str, int] = {}
        for r in group:
            if r.name in machines:
                used[machines[r.name]] = used.get(machines[r.name], 0) + 1
        lines[-1:-1] = ["", ("Attacked on " if len(used) == 1 else f"Attacked on {len(used)} different machines: ")
                        + "; ".join(f"{m} ({k} runs)" for m, k in used.items()) + "."]
    rows_pgd = all(attacks[r.name].pgd is not None for r in group)
    rows = []
    for mode in dict.fromkeys(m for m, _, _ in cells):
        functions = {a: rs for (m, a, ref), rs in cells.items() if m == mode and not ref}
        pgd = {a: mean_std([attacks[r.name].pgd if rows_pgd else 0.0 for r in rs])[0] for a, rs in functions.items()}
        aa = {a: mean_std([attacks[r.name].autoattack for r in rs])[0] for a, rs in functions.items()}
        rank_pgd = {a: i + 1 for i, a in enumerate(sorted(pgd, key=lambda a: -pgd[a]))}
        rank_aa = {a: i + 1 for i, a in enumerate(sorted(aa, key=lambda a: -aa[a]))}
        for reference in (False, True):  # the functions, then the mode's all-label references
            rows += [[mode, f"{acq} (reference)" if ref else acq, len(rs), *_means(rs, attacks),
                      None if ref or not rows_pgd else rank_pgd[acq], None if ref else rank_aa[acq],
                      _flagged(rs, attacks) if rows_pgd else None]
                     for (m, acq, ref), rs in cells.items() if m == mode and ref == reference]
    lines.append(format_table(["training", "acquisition", "runs", "clean", "PGD", short, "gap", "rank PGD",
                               f"rank {short}", "masking flags"], rows))
    if rows_pgd:
        lines += ["", _masking_note(group, attacks, short)]
    lines += _reference_shares(cells, attacks, short, rows_pgd)
    values = {key: {r.seed: (attacks[r.name].pgd if rows_pgd else None, attacks[r.name].autoattack) for r in rs}
              for key, rs in cells.items() if not key[2]}
    comparisons = paired([([mode, acq], v, values[(mode, "random", False)]) for (mode, acq, _), v in values.items()
                          if acq != "random" and (mode, "random", False) in values])
    if comparisons:
        lines += ["", "Each function vs random under both attacks, paired by seed (two-sided Wilcoxon signed-rank "
                  "test; the seeds both have attacked):", "",
                  *paired_table(comparisons, ["training", "acquisition"], ["PGD", short]),
                  "", _verdicts(comparisons, short, long)]
    pooled = paired([([mode, mode.split("+")[0], acq], v, values[(mode.split("+")[0], acq, False)])
                     for (mode, acq, _), v in values.items()
                     if "+" in mode and (mode.split("+")[0], acq, False) in values])
    if pooled:
        lines += ["", "Training on the unlabeled pool vs the same training without it, same function, paired by seed "
                  "under both attacks (two-sided Wilcoxon signed-rank test; the seeds both have attacked):", "",
                  *paired_table(pooled, ["training", "vs", "acquisition"], ["PGD", short])]
    return lines


def _reference_shares(cells: dict[tuple[str, str, bool], list[RunResults]], attacks: dict[str, FinalAttack],
                      short: str, rows_pgd: bool) -> list[str]:
    """Per training mode with an attacked all-label reference: the share of its robust accuracy the functions reach
    under each attack (the label budget's cost in robustness, which PGD alone may misstate)."""
    def mean(runs: list[RunResults], key: str) -> float:
        return mean_std([getattr(attacks[r.name], key) for r in runs])[0]

    out = []
    for (mode, acq, ref), rs in cells.items():
        if not ref:
            continue
        keys = (["pgd"] if rows_pgd else []) + ["autoattack"]
        base = {k: mean(rs, k) for k in keys}
        functions = {a: fs for (m, a, r), fs in cells.items() if m == mode and not r}
        if not functions or not all(base.values()):
            continue
        shares = {k: {a: mean(fs, k) / base[k] for a, fs in functions.items()} for k in keys}
        names = {"pgd": "PGD", "autoattack": short}
        parts = [f"{names[k]} {min(v.values()):.0%} to {max(v.values()):.0%} (best {max(v, key=v.get)})"
                 for k, v in shares.items()]
        out.append(f"- {mode}: the all-label reference {acq} ({len(rs)} runs: "
                   + ", ".join(f"{names[k]} {base[k]:.3f}" for k in keys) + "); the functions reach "
                   + "; ".join(parts) + " of its robust accuracy.")
    return ["", "Share of the all-label reference's robust accuracy, under each attack:", "", *out] if out else []


def _verdicts(comparisons, short: str, long: str) -> str:
    """Which attack each function's verdict against random rests on: higher than random (p < LEVEL) under PGD only,
    under the final attack only, under both, or under neither."""
    groups: dict[str, list[str]] = {"both": [], "pgd": [], "final": []}
    for row in comparisons:
        pgd, final = row.metrics
        wins = [c is not None and c.mean_diff > 0 and c.p < LEVEL for c in (pgd, final)]
        key = "both" if all(wins) else "pgd" if wins[0] else "final" if wins[1] else None
        if key:
            groups[key].append(" / ".join(row.lead))
    parts = [f"higher than random under both attacks: {', '.join(groups['both'])}" if groups["both"] else "",
             f"under PGD only, not under {short} (the PGD verdict does not hold under the stronger attack): "
             f"{', '.join(groups['pgd'])}" if groups["pgd"] else "",
             f"under {short} only: {', '.join(groups['final'])}" if groups["final"] else ""]
    said = "; ".join(p for p in parts if p) or f"no function is higher than random at p < {LEVEL} under either attack"
    return (f"Which attack each verdict rests on (p < {LEVEL}, uncorrected): {said}. The robustness claim rests on "
            f"{long}; PGD is the paper's attack, kept for comparison.")


def _gap_flag(attack: FinalAttack):
    """The PGD → final-attack gap check of :mod:`robustal.engine.masking` on a stored row (a gradient-masking sign)."""
    from robustal.engine.masking import autoattack_gap_check

    return autoattack_gap_check(attack.pgd, attack.autoattack)


def _flagged(rs: Sequence[RunResults], attacks: dict[str, FinalAttack]) -> str:
    """How many of the runs' final models the gap check flags, as ``k / n``."""
    return f"{sum(not _gap_flag(attacks[r.name]).passed for r in rs)} / {len(rs)}"


def _masking_note(group: Sequence[RunResults], attacks: dict[str, FinalAttack], short: str) -> str:
    """What the masking-flags column counts, and what a flag means."""
    flagged = [r for r in group if not _gap_flag(attacks[r.name]).passed]
    check = _gap_flag(attacks[group[0].name])
    text = (f"Masking flags: final models whose PGD robust accuracy exceeds {short}'s by more than "
            f"{check.threshold:.0%} of the images (robustal.engine.masking's PGD → AutoAttack gap check; `robustal "
            "evaluate --checks` runs the full checklist on one model). ")
    if not flagged:
        return text + "No model is flagged."
    meaning = _gap_flag(attacks[flagged[0].name]).meaning
    return text + f"{len(flagged)} of {len(group)} models are flagged: {meaning}"


def _means(rs: Sequence[RunResults], attacks: dict[str, FinalAttack]) -> list[str]:
    """clean, PGD, AutoAttack as mean ± std over ``rs``, and the mean gap PGD − AutoAttack."""
    rows = [attacks[r.name] for r in rs]
    pm = lambda vs: format_mean_std(*mean_std(vs), len(vs))
    if any(a.pgd is None for a in rows):  # runs without an evaluation attack (eval_steps = 0)
        return [pm([a.clean for a in rows]), None, pm([a.autoattack for a in rows]), None]
    gap = mean_std([a.pgd - a.autoattack for a in rows])[0]
    return [pm([a.clean for a in rows]), pm([a.pgd for a in rows]), pm([a.autoattack for a in rows]), f"{gap:+.3f}"]


__all__ = ["ATTACK_LABELS", "ATTACK_ROWS", "ATTACK_ROW_COLUMNS", "COLUMNS", "FINAL_ATTACKS", "AttackSource",
           "FinalAttack", "attack_rows_csv", "final_attacks_section", "read_final_attacks", "store_sources"]
