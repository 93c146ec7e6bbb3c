"""Tables, curves and statistics of stored results: ``robustal report DIR`` → ``DIR/report/report.md``.

Everything is read from the store (``DIR/results.db``, :mod:`robustal.reports.results`); the study's copy
(``DIR/study.toml``), when there is one, says which runs belong to the grid and in which order. The report holds,
per dataset and model:

- final clean and robust accuracy per acquisition function and training mode, mean ± std over seeds, with the
  all-label references (runs trained on the whole pool in one stage) as rows of their own, and each function's gap to
  the reference of its training mode;
- the area under the accuracy-vs-labels and robustness-vs-labels curves (trapezoid rule, divided by the label
  range, so it is a mean accuracy over the budget in [0, 1]);
- the references: their optimizer steps and the epoch each kept, which says whether more training would help;
- each function's mean rank among the functions of its training mode across seeds;
- how many runs were at chance level (the network predicting one class) at ~30 %, 50 % and 100 % of the budget;
- each function vs ``random`` by a two-sided Mann–Whitney U test across seeds and paired by seed (exact Wilcoxon
  signed-rank), on final accuracy and on the area under the curves, with the smallest p the seeds allow
  (:mod:`robustal.reports.comparisons`); each training mode vs the first for the same function;
- the curves (one PNG per dataset, model and training mode, the references as dotted lines:
  :mod:`robustal.reports.figures`);
- the final models under AutoAttack (standard, or its fast version), from the store's ``final_attacks`` table and a
  legacy ``DIR/final-attacks.csv`` (:mod:`robustal.reports.final_attacks`), with the machines that attacked;
- in its header, the machines that computed the runs (CPU, instruction set, threads, device), saying plainly when
  there were several (:mod:`robustal.storage.provenance`);
- what each function picked, measured on the data (:mod:`robustal.reports.picks`): the entropy distribution of the
  selected samples vs the whole pool, and the class balance of the labeled set;
- the attack each group's robust accuracy was measured under;
- ``stages.csv``: one row per stage of every run.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path

from robustal.errors import ConfigError, DataError, ReportWarning
from robustal.loop.stopping import StoppingRule
from robustal.reports.comparisons import mann_whitney_section, paired_sections, ranking_section, versus_section
from robustal.reports.figures import CURVES_CAPTION, file_slug, plot_curves
from robustal.reports.final_attacks import (
    ATTACK_ROWS,
    FINAL_ATTACKS,
    attack_rows_csv,
    final_attacks_section,
    read_final_attacks,
    store_sources,
)
from robustal.reports.picks import picks_section
from robustal.reports.pool_report import pool_section, stopping_section
from robustal.reports.results import (
    RunResults,
    Summary,
    collect,
    finished_cells,
    optimizer_steps,
    stage_rows,
    summarize,
    write_csv,
)
from robustal.reports.stats import format_mean_std, mean_std
from robustal.reports.tables import count, format_table
from robustal.storage.outputs import atomic_write_bytes

#: The rules of :data:`robustal.engine.attacks.RULES` in words.
RULE_TEXT = {"any-iterate": "an image counts as not robust once any iterate fools it",
             "last-iterate": "only the last iterate judged"}


def attack_text(attack: dict | None, rule: str | None = None) -> str:
    """A stored evaluation attack in words: ``PGD-50 (ε = 0.3, step 0.01, random start; an image counts as not
    robust once any iterate fools it)``; ``none``. ``rule``: the run's (:attr:`RunResults.eval_rule`)."""
    if not attack:
        return "none (clean accuracy only)"
    eps = f"ε = {attack.get('epsilon', float('nan')):.4g}"
    if attack.get("name") == "pgd":
        start = ", random start" if attack.get("random_start", True) else ""
        judged = f"; {RULE_TEXT[rule]}" if rule in RULE_TEXT else ""
        return f"PGD-{attack.get('steps')} ({eps}, step {attack.get('step_size', float('nan')):.4g}{start}{judged})"
    return f"{attack.get('name')} ({eps})"


def checkpoint_labels(labels: Sequence[int]) -> list[int]:
    """The stage label counts at which chance level is reported: those nearest 30 %, 50 % and 100 % of the budget
    (every stage's when there are at most four)."""
    if len(labels) <= 4:
        return list(labels)
    budget = labels[-1]
    picks = [min(labels, key=lambda n, f=f: (abs(n - f * budget), n)) for f in (0.3, 0.5, 1.0)]
    return list(dict.fromkeys(picks))


def chance_counts(runs: Sequence[RunResults], labels: Sequence[int]) -> list[int]:
    """How many of ``runs`` were at chance (stored ``at_chance`` flag) at each of ``labels``."""
    return [sum(any(s.at_chance for s in r.stages if s.labeled == n) for r in runs) for n in labels]


def _pm(ms: tuple[float, float] | None, n: int) -> str:
    return "-" if ms is None else format_mean_std(*ms, n)


def write_report(root: str | Path, out: str | Path | None = None, *, data_dir: str | Path | None = None,
                 entropies: bool = True, header: str = "", factories: Sequence[str] = (),
                 stopping: StoppingRule | None = None) -> Path:
    """Write ``report.md``, ``stages.csv`` and PNG figures for the results in ``root``; returns the report's path.

    Args:
        root: A study's (or run's) output folder.
        out: Where to write (default: ``root/report``).
        data_dir: The dataset cache, to recompute entropies.
        entropies: Recompute and plot the entropy distributions (loads each dataset and final model).
        header: Markdown put at the top (e.g. the commands that made the results).
        factories: User's model factories the person named (``--factory``): runs of those models are rebuilt for
            the entropy section; a run of any other user's model is left out of it, never imported.
        stopping: The stopping rule the report judges after the fact (default: :class:`StoppingRule`'s, the one
            ``robustal status`` recommends).
    """
    from robustal.studies.study_run import load_study_copy

    root = Path(root)
    if not (root / "results.db").is_file():
        raise ConfigError(f"{str(root)!r} holds no results.db; give the --out folder of a study or run.")
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    study = load_study_copy(root)
    names = [t.name for t in study.tasks()] if study is not None else None
    runs = collect(root, names)
    write_csv(stage_rows(runs), out / "stages.csv")
    summaries = summarize(runs)
    attacks = _final_attacks(root, out)
    finished = sum(r.status == "finished" for r in runs)
    expected = len(names) if names is not None else len(runs)
    lines = [f"# Report: {study.name if study else root.name}", ""]
    if header:
        lines += [header.rstrip(), ""]
    lines += [f"Results folder: `{root}`; {finished} of {count(expected, 'run')} finished"
              + (" (missing or unfinished runs are left out of the tables)." if finished < expected else "."), "",
              "Accuracies are on the test split: clean, and robust under the stored evaluation attack "
              "(see each run's configuration). Mean ± standard deviation over seeds. AUC: area under the "
              "accuracy-vs-labels curve (trapezoid rule) divided by the label range. Per-stage numbers: "
              "[stages.csv](stages.csv).", ""]
    lines += _machines(runs)
    for ds, model in dict.fromkeys((s.dataset, s.model) for s in summaries):
        cell = [s for s in summaries if (s.dataset, s.model) == (ds, model)]
        used = list(dict.fromkeys(attack_text(r.config.get("loop", {}).get("eval_attack"), r.eval_rule) for r in runs
                                  if (r.dataset, r.model) == (ds, model)))
        lines += [f"## {ds} / {model}", "", f"Robust accuracy under {' / '.join(used)}"
                  + (" (the runs differ: see stages.csv and each run's configuration)." if len(used) > 1 else "."),
                  "", *_final_table(cell)]
        lines += _references_section(runs, ds, model)
        lines += ranking_section(runs, ds, model)
        lines += _chance_section(runs, ds, model)
        lines += pool_section(runs, ds, model, out)
        lines += stopping_section(runs, ds, model, stopping)
        lines += mann_whitney_section(cell)
        lines += paired_sections(runs, ds, model)
        lines += versus_section(runs, ds, model)
        lines += ["", "### Curves", "", CURVES_CAPTION, ""]
        for mode in dict.fromkeys(s.training for s in cell if not s.reference):
            png = plot_curves(runs, ds, model, mode, out / f"curves-{file_slug(ds, model, mode)}.png")
            lines += [f"![{ds} {model} {mode}]({png.name})", ""]
        if isinstance(attacks, str):
            lines += ["### Final models under AutoAttack", "", f"Skipped: {attacks}", ""]
        else:
            for a in attacks:
                lines += [*final_attacks_section(runs, ds, model, a.rows, a.incomplete, attack=a.attack,
                                                 source=a.source, machines=a.machines), ""]
        if entropies:
            lines += picks_section(root, runs, ds, model, out, data_dir, factories)
    atomic_write_bytes(out / "report.md", ("\n".join(lines) + "\n").encode())
    return out / "report.md"


def _final_attacks(root: Path, out: Path):
    """The final attacks' sections (:class:`~robustal.reports.final_attacks.AttackSource`): the store's
    ``final_attacks`` rows (written beside the report as ``attacks.csv``) and ``root/final-attacks.csv`` (read, and
    copied beside the report); or why the file cannot be read (a :class:`~robustal.errors.ReportWarning` says it on
    the terminal too)."""
    from robustal.storage.store import Store

    path = root / FINAL_ATTACKS
    legacy = None
    if path.is_file():
        try:
            legacy = read_final_attacks(path)
        except DataError as e:
            warnings.warn(f"the section on the final models under AutoAttack is left out of the report: {e}",
                          ReportWarning, stacklevel=3)
            return str(e)
        if out.resolve() != root.resolve():
            atomic_write_bytes(out / FINAL_ATTACKS, path.read_bytes())  # the report links to it
    stored = Store(root, create=False).final_attacks()
    if stored:
        atomic_write_bytes(out / ATTACK_ROWS, attack_rows_csv(stored).encode())
    return store_sources(stored, legacy)


def _machines(runs: Sequence[RunResults]) -> list[str]:
    """The header's lines on the machines that computed the runs (:func:`robustal.storage.provenance.machine_lines`) and
    the library versions, each distinct set once."""
    from robustal.storage.provenance import machine_lines, version_label

    if not runs:
        return []
    versions = list(dict.fromkeys(version_label(r.versions) for r in runs))
    return [*machine_lines((r.name, r.versions) for r in runs), "",
            "Versions: " + " / ".join(v or "not recorded" for v in versions) + ".", ""]


def _final_table(cell: Sequence[Summary]) -> list[str]:
    """Final accuracy and AUCs per training mode: the functions, then the mode's all-label references, with each
    function's gap to the reference of its mode (the most robust, where a mode has several: the one trained long
    enough, when the others were stopped early)."""
    modes = list(dict.fromkeys(s.training for s in sorted(cell, key=lambda s: s.reference)))
    references: dict[str, Summary] = {}
    for s in cell:
        if s.reference and s.robust is not None:
            if s.training not in references or s.robust[0] > references[s.training].robust[0]:
                references[s.training] = s
    rows = []
    for mode in modes:
        ref = references.get(mode)
        for s in cell:
            if s.training == mode and not s.reference:
                gap = f"{s.robust[0] - ref.robust[0]:+.3f}" if ref is not None and s.robust is not None else None
                rows.append([s.training, s.acquisition, s.seeds, s.labels, _pm(s.clean, s.seeds),
                             _pm(s.robust, s.seeds), _pm(s.auc_clean, s.seeds), _pm(s.auc_robust, s.seeds), gap])
        rows += [[s.training, f"{s.acquisition} (reference)", s.seeds, s.labels, _pm(s.clean, s.seeds),
                  _pm(s.robust, s.seeds), None, None, None] for s in cell if s.training == mode and s.reference]
    headers = ["training", "acquisition", "seeds", "labels", "clean", "robust", "AUC clean", "AUC robust"]
    lines = ["### Final accuracy and area under the curves", ""]
    if references:
        lines += ["Reference rows: trained on every label of the pool in one stage (no curve, so no AUC). Gap to the "
                  "all-label reference: the function's mean robust accuracy minus the reference's, same training "
                  "mode, the most robust reference where a mode has several ("
                  + "; ".join(f"{m}: {r.acquisition}, {r.robust[0]:.3f}" for m, r in references.items()) + ").", ""]
        return [*lines, format_table([*headers, "gap to the all-label reference"], rows)]
    return [*lines, format_table(headers, [row[:-1] for row in rows])]


def _kept_epoch_sentence(mode: str, best: list[int], epochs: int) -> str:
    """Whether the references' kept (best-validating) epoch says that more training would help.

    A kept epoch late in the run means validation was still rising near the end: in paper-mnist, PGD references kept
    epoch 29 of 30 at the median (the last in 1 seed of 10), and 60 epochs lifted one seed's robust accuracy by 9
    points (scripts/reference_plateau.py). So a median in the last tenth counts as "still rising", like a last epoch
    kept in half the seeds. (Standard training's references kept epoch 26 of 30 at the median with validation clean
    accuracy of 0.993-0.998 at the kept epoch: a plateau, where the kept epoch is noise.)"""
    last = sum(b == epochs for b in best)
    median = statistics.median(best)
    kept = f"median kept epoch {median:g} of {epochs}, the last in {last} of {len(best)} seeds"
    if 2 * last >= len(best) or median >= 0.9 * epochs:
        return (f"{mode}: validation was still improving near the end ({kept}): more training might help; "
                "scripts/reference_plateau.py trains one seed longer to check.")
    if last:
        return (f"{mode}: validation peaked before the end in most seeds ({kept}): more training would likely help "
                "little.")
    return (f"{mode}: the best epoch was never the last (median {median:g}, latest {max(best)} of {epochs}): "
            "validation peaked before the end in every seed, so more epochs are unlikely to help.")


def _references_section(runs: Sequence[RunResults], ds: str, model: str) -> list[str]:
    """The all-label references: seeds, labels, optimizer steps (and an active-learning run's, same mode), the kept
    epoch over seeds, clean and robust accuracy."""
    refs = {k[2:]: rs for k, rs in finished_cells(runs, references=True).items() if k[:2] == (ds, model)}
    if not refs:
        return []
    al_steps: dict[str, list[int]] = {}
    for (d, m, mode, _), rs in finished_cells(runs).items():
        if (d, m) == (ds, model):
            al_steps.setdefault(mode, []).extend(optimizer_steps(r) for r in rs)
    rows, sentences = [], []
    for (mode, acq), rs in refs.items():
        train = rs[0].train_config
        epochs = int(train.get("epochs", 0))
        steps = sorted({optimizer_steps(r) for r in rs})
        best = [r.final.best_epoch for r in rs if r.final.best_epoch is not None]
        al = al_steps.get(mode)
        robust = [r.final.robust for r in rs]
        rows.append([mode, acq, len(rs), rs[0].final.labeled, epochs, " / ".join(map(str, steps)),
                     f"{statistics.median(al):g}" if al else None,
                     f"{min(best)} / {statistics.median(best):g} / {max(best)}" if best else None,
                     _pm(mean_std([r.final.clean for r in rs]), len(rs)),
                     None if None in robust else _pm(mean_std(robust), len(rs))])
        if best:
            sentences.append(_kept_epoch_sentence(mode, best, epochs))
    validated = dict.fromkeys("all" if v is None or v >= int(r.train_config.get("epochs", 0)) else f"the last {v}"
                              for rs in refs.values() for r in rs for v in [r.train_config.get("validate_last")])
    return ["", "### References: all labels", "",
            "Runs trained on every label of the pool in one stage, the best epoch by validation kept "
            f"(validated epochs: {', '.join(validated)}). Steps: "
            "the optimizer steps of one run (epochs × batches per epoch; a batch per ceil(n / batch size), a last "
            "batch of one joined to the previous, at least ceil(min_steps / epochs) per epoch); AL run steps: the "
            "median over the same mode's active-learning runs, all stages. Kept epoch: min / median / max over "
            "seeds.", "",
            format_table(["training", "reference", "seeds", "labels", "epochs", "steps", "AL run steps",
                          "kept epoch", "clean", "robust"], rows),
            "", *(f"- {s}" for s in sentences)]


def _chance_section(runs: Sequence[RunResults], ds: str, model: str) -> list[str]:
    """Per function and training mode: runs whose model was at chance level at ~30 %, 50 % and 100 % of the budget."""
    cells = {k: v for k, v in finished_cells(runs).items() if k[:2] == (ds, model)}
    if not cells:
        return []
    labels = checkpoint_labels([s.labeled for s in next(iter(cells.values()))[0].stages])
    rows = [[mode, acq, len(rs), *chance_counts(rs, labels),
             sum(any(s.at_chance for s in r.stages[1:]) for r in rs)] for (_, _, mode, acq), rs in cells.items()]
    return ["", "### Runs at chance level", "",
            "Runs whose model was no better than a constant prediction (validation clean accuracy at most 1.5 × the "
            "majority class's share: the network predicts one class), at each label count; the last column counts "
            "runs at chance at any stage after the first.", "",
            format_table(["training", "acquisition", "runs", *(f"at {n} labels" for n in labels),
                          "any stage ≥ 1"], rows)]


__all__ = ["attack_text", "chance_counts", "checkpoint_labels", "write_report"]
