"""Tables, curves and statistics of stored results: ``robustal report DIR`` → ``DIR/report/report.md``.

Everything is read from the store (``DIR/results.db``); the study's copy (``DIR/study.toml``), when there is one,
says which runs belong to the grid and in which order. The report holds, per dataset and model:

- final clean and robust accuracy per acquisition function and training mode, mean ± std over seeds;
- the area under the accuracy-vs-labels and robustness-vs-labels curves (trapezoid rule, divided by the label
  range, so it is a mean accuracy over the budget in [0, 1]);
- the curves (one PNG per dataset, model and training mode);
- what each function picked, measured on the data (:mod:`robustal.picks`): the entropy distribution of the
  selected samples vs the whole pool, and the class balance of the labeled set;
- how many runs were at chance level (the network predicting one class) at ~30 %, 50 % and 100 % of the budget;
- each function vs ``random`` by a two-sided Mann–Whitney U test on final robust and clean accuracy across seeds,
  exact for small samples (:mod:`robustal.stats`), with the Vargha–Delaney Â12 effect size (the probability that
  the function beats random; 0.5: no difference);
- each function vs ``random`` paired by seed (runs of one seed share the initial labeled set and weights): the mean
  per-seed difference, in how many seeds the function is higher and lower, and the exact Wilcoxon signed-rank p;
- where the grid has several training modes, each mode vs the first one for the same function, paired by seed;
- the attack each group's robust accuracy was measured under;
- ``stages.csv``: one row per stage of every run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robustal.outputs import atomic_write_bytes
from robustal.stats import compare, compare_paired, mean_std, normalized_auc
from robustal.store import StageRecord, Store

CSV_FIELDS = ("run", "dataset", "model", "training", "acquisition", "seed", "status", "stage", "labeled", "clean",
              "robust", "train_seconds", "select_seconds", "eval_seconds", "best_epoch", "val_score", "val_clean",
              "at_chance", "recovery")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = ".3f") -> str:
    """A Markdown table; floats formatted with ``floatfmt``, None as ``-``."""

    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


# --- reading the store ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResults:
    """One stored run with its grid coordinates."""

    name: str
    dataset: str
    model: str
    training: str
    acquisition: str
    seed: int
    status: str
    stages: list[StageRecord]
    config: dict

    @property
    def group(self) -> tuple[str, str]:
        return self.dataset, self.model

    @property
    def final(self) -> StageRecord:
        return self.stages[-1]


def collect(root: str | Path, names: Sequence[str] | None = None) -> list[RunResults]:
    """The runs stored in ``root`` (only ``names``, in that order, when given), with their stages."""
    from robustal.study import dataset_label

    store = Store(root, create=False)
    runs = {r["name"]: r for r in store.runs()}
    order = [n for n in names if n in runs] if names is not None else list(runs)
    out = []
    for name in order:
        r = runs[name]
        cfg = r["config"]
        loop = cfg.get("loop", {})
        out.append(RunResults(name=name, dataset=dataset_label(str(cfg.get("dataset", "?"))),
                              model=str(cfg.get("model_name", cfg.get("model", "?"))),
                              training=loop.get("train", {}).get("mode", "?"),
                              acquisition=cfg.get("acquisition_label") or loop.get("acquisition", "?"),
                              seed=int(r["seed"]), status=r["status"], stages=store.stages(name), config=cfg))
    return out


def stage_rows(runs: Sequence[RunResults]) -> list[dict]:
    """One dict per stage of every run, with :data:`CSV_FIELDS` as keys."""
    return [{"run": r.name, "dataset": r.dataset, "model": r.model, "training": r.training,
             "acquisition": r.acquisition, "seed": r.seed, "status": r.status, "stage": s.stage, "labeled": s.labeled,
             "clean": s.clean, "robust": s.robust, "train_seconds": s.train_seconds,
             "select_seconds": s.select_seconds, "eval_seconds": s.eval_seconds, "best_epoch": s.best_epoch,
             "val_score": s.val_score, "val_clean": s.val_clean, "at_chance": int(s.at_chance),
             "recovery": s.recovery}
            for r in runs for s in r.stages]


def write_csv(rows: Sequence[dict], path: Path) -> Path:
    """The tidy per-stage CSV, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_FIELDS})
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


@dataclass(frozen=True)
class Summary:
    """Mean ± std over seeds of one (dataset, model, training, acquisition) cell's finished runs."""

    dataset: str
    model: str
    training: str
    acquisition: str
    seeds: int
    labels: int
    clean: tuple[float, float]
    robust: tuple[float, float] | None
    auc_clean: tuple[float, float]
    auc_robust: tuple[float, float] | None
    final_clean: list[float]
    final_robust: list[float] | None


def finished_cells(runs: Sequence[RunResults]) -> dict[tuple[str, str, str, str], list[RunResults]]:
    """Finished runs grouped by (dataset, model, training, acquisition), in the runs' order."""
    cells: dict[tuple[str, str, str, str], list[RunResults]] = {}
    for r in runs:
        if r.status == "finished" and r.stages:
            cells.setdefault((r.dataset, r.model, r.training, r.acquisition), []).append(r)
    return cells


def summarize(runs: Sequence[RunResults]) -> list[Summary]:
    """Final accuracies and normalized AUCs per grid cell, over the finished runs' seeds."""
    out = []
    for (ds, model, mode, acq), rs in finished_cells(runs).items():
        clean = [r.final.clean for r in rs]
        has_robust = all(s.robust is not None for r in rs for s in r.stages)
        robust = [r.final.robust for r in rs] if has_robust else None
        auc_c = [normalized_auc([s.labeled for s in r.stages], [s.clean for s in r.stages]) for r in rs]
        auc_r = ([normalized_auc([s.labeled for s in r.stages], [s.robust for s in r.stages]) for r in rs]
                 if has_robust else None)
        out.append(Summary(ds, model, mode, acq, len(rs), rs[0].final.labeled, mean_std(clean),
                           mean_std(robust) if robust else None, mean_std(auc_c),
                           mean_std(auc_r) if auc_r else None, clean, robust))
    return out


# --- figures --------------------------------------------------------------------------------------------------------
#: What :func:`plot_curves` draws, said under the curves in the report.
CURVES_CAPTION = ("Each line is a function's mean accuracy over its finished runs' seeds at each label count (random "
                  "dashed); the shaded band is ± one standard deviation over those seeds (the sample standard "
                  "deviation, n − 1; no band for a single seed).")

def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_slug(*parts: str) -> str:
    """A file-name-safe join of ``parts`` (figure names)."""
    return "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts)


def plot_curves(runs: Sequence[RunResults], dataset: str, model: str, training: str, path: Path) -> Path:
    """Clean and robust accuracy vs labels, one line per function: the mean over seeds with a band of ± one sample
    standard deviation (:data:`CURVES_CAPTION`)."""
    import numpy as np

    plt = pyplot()
    cells = {k[3]: v for k, v in finished_cells(runs).items() if k[:3] == (dataset, model, training)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    palette = plt.get_cmap("tab20").colors  # 12 functions: tab10 would repeat colours
    for i, (acq, rs) in enumerate(cells.items()):
        n = min(len(r.stages) for r in rs)
        labels = [s.labeled for s in rs[0].stages[:n]]
        for ax, key in zip(axes, ("clean", "robust"), strict=True):
            vals = np.array([[getattr(s, key) if getattr(s, key) is not None else np.nan for s in r.stages[:n]]
                             for r in rs], dtype=float)
            if np.isnan(vals).all():
                continue
            mean, std = vals.mean(0), vals.std(0, ddof=1) if len(rs) > 1 else np.zeros(n)
            color = palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            ax.plot(labels, mean, marker="o", ms=3, label=acq, lw=1.5 if acq != "random" else 2.5,
                    ls="--" if acq == "random" else "-", color=color)
            ax.fill_between(labels, mean - std, mean + std, color=color, alpha=0.12)
    for ax, title in zip(axes, ("clean accuracy", "robust accuracy"), strict=True):
        ax.set_xlabel("labeled samples")
        ax.set_ylabel(title)
        ax.set_title(f"{dataset} / {model} / {training}: {title}")
        ax.grid(alpha=0.3)
    for ax in reversed(axes):  # on the robust panel, unless robust accuracy was not measured
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2, loc="best")
            break
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attack_text(attack: dict | None) -> str:
    """A stored evaluation attack in words: ``PGD-50 (ε = 0.3, step 0.01, random start)``; ``none``."""
    if not attack:
        return "none (clean accuracy only)"
    eps = f"ε = {attack.get('epsilon', float('nan')):.4g}"
    if attack.get("name") == "pgd":
        start = ", random start" if attack.get("random_start", True) else ""
        return f"PGD-{attack.get('steps')} ({eps}, step {attack.get('step_size', float('nan')):.4g}{start})"
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


# --- the report -----------------------------------------------------------------------------------------------------
def _pm(ms: tuple[float, float] | None) -> str:
    return "-" if ms is None else f"{ms[0]:.3f} ± {ms[1]:.3f}"


def write_report(root: str | Path, out: str | Path | None = None, *, data_dir: str | Path | None = None,
                 entropies: bool = True, header: str = "", factories: Sequence[str] = ()) -> Path:
    """Write ``report.md``, ``stages.csv`` and PNG figures for the results in ``root``; returns the report's path.

    Args:
        root: A study's (or run's) output folder.
        out: Where to write (default: ``root/report``).
        data_dir: The dataset cache, to recompute entropies.
        entropies: Recompute and plot the entropy distributions (loads each dataset and final model).
        header: Markdown put at the top (e.g. the commands that made the results).
        factories: User's model factories the person named (``--factory``): runs of those models are rebuilt for
            the entropy section; a run of any other user's model is left out of it, never imported.
    """
    from robustal.errors import ConfigError
    from robustal.study import load_study_copy

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
    finished = sum(r.status == "finished" for r in runs)
    expected = len(names) if names is not None else len(runs)
    lines = [f"# Report: {study.name if study else root.name}", ""]
    if header:
        lines += [header.rstrip(), ""]
    lines += [f"Results folder: `{root}`; {finished} of {expected} runs finished"
              + (" (missing or unfinished runs are left out of the tables)." if finished < expected else "."), "",
              "Accuracies are on the test split: clean, and robust under the stored evaluation attack "
              "(see each run's configuration). Mean ± standard deviation over seeds. AUC: area under the "
              "accuracy-vs-labels curve (trapezoid rule) divided by the label range. Per-stage numbers: "
              "[stages.csv](stages.csv).", ""]
    groups = list(dict.fromkeys((s.dataset, s.model) for s in summaries))
    for ds, model in groups:
        cell = [s for s in summaries if (s.dataset, s.model) == (ds, model)]
        attacks = list(dict.fromkeys(attack_text(r.config.get("loop", {}).get("eval_attack")) for r in runs
                                     if (r.dataset, r.model) == (ds, model)))
        lines += [f"## {ds} / {model}", "", f"Robust accuracy under {' / '.join(attacks)}"
                  + (" (the runs differ: see stages.csv and each run's configuration)." if len(attacks) > 1 else "."),
                  "", "### Final accuracy and area under the curves", ""]
        lines.append(format_table(
            ["training", "acquisition", "seeds", "labels", "clean", "robust", "AUC clean", "AUC robust"],
            [[s.training, s.acquisition, s.seeds, s.labels, _pm(s.clean), _pm(s.robust), _pm(s.auc_clean),
              _pm(s.auc_robust)] for s in cell]))
        lines += _chance_section(runs, ds, model)
        lines += ["", "### Each function vs random (two-sided Mann–Whitney U across seeds, exact where the seeds "
                  "allow; Â12 = P(function > random))", ""]
        rows = []
        for mode in dict.fromkeys(s.training for s in cell):
            base = next((s for s in cell if s.training == mode and s.acquisition == "random"), None)
            if base is None:
                continue
            for s in cell:
                if s.training != mode or s.acquisition == "random":
                    continue
                c = compare(s.final_clean, base.final_clean)
                r = (compare(s.final_robust, base.final_robust)
                     if s.final_robust is not None and base.final_robust is not None else None)
                rows.append([mode, s.acquisition, s.seeds, c.u, c.p, c.a12, r and r.u, r and r.p, r and r.a12])
        if rows:
            lines.append(format_table(["training", "acquisition", "seeds", "U clean", "p clean", "Â12 clean",
                                       "U robust", "p robust", "Â12 robust"], rows))
        else:
            lines.append("No `random` runs to compare with.")
        lines += _paired_section(runs, ds, model)
        lines += ["", "### Curves", "", CURVES_CAPTION, ""]
        for mode in dict.fromkeys(s.training for s in cell):
            png = plot_curves(runs, ds, model, mode, out / f"curves-{file_slug(ds, model, mode)}.png")
            lines += [f"![{ds} {model} {mode}]({png.name})", ""]
        if entropies:
            from robustal.picks import picks_section  # loads data and models: only when asked

            lines += picks_section(root, runs, ds, model, out, data_dir, factories)
    atomic_write_bytes(out / "report.md", ("\n".join(lines) + "\n").encode())
    return out / "report.md"


def _paired_rows(comparisons: Sequence[tuple[list, dict, dict]]) -> list[list]:
    """Rows of paired comparisons: for each ``(leading cells, runs by seed, baseline runs by seed)``, the pairs, the
    mean per-seed difference, in how many seeds higher / lower and the Wilcoxon p, for clean and robust accuracy."""
    rows = []
    for lead, by_seed, base in comparisons:
        seeds = sorted(set(by_seed) & set(base))
        if len(seeds) < 2:
            continue
        c = compare_paired([by_seed[s].final.clean for s in seeds], [base[s].final.clean for s in seeds])
        row = [*lead, c.pairs, f"{c.mean_diff:+.3f}", f"{c.higher} / {c.lower}", c.p]
        if all(by_seed[s].final.robust is not None and base[s].final.robust is not None for s in seeds):
            r = compare_paired([by_seed[s].final.robust for s in seeds], [base[s].final.robust for s in seeds])
            row += [f"{r.mean_diff:+.3f}", f"{r.higher} / {r.lower}", r.p]
        else:
            row += [None, None, None]
        rows.append(row)
    return rows


_PAIRED_COLUMNS = ["pairs", "Δ clean", "higher / lower", "p clean", "Δ robust", "higher / lower", "p robust"]


def _paired_section(runs: Sequence[RunResults], ds: str, model: str) -> list[str]:
    """Each function minus random, run by run for the same seed: runs of one seed share the initial labeled set and
    the initial weights, so the per-seed difference is free of that source of variance. Then, where the grid has
    several training modes, each mode minus the first for the same function and seed."""
    cells = {(mode, acq): {r.seed: r for r in rs} for (d, m, mode, acq), rs in finished_cells(runs).items()
             if (d, m) == (ds, model)}
    rows = _paired_rows([([mode, acq], by_seed, cells[(mode, "random")]) for (mode, acq), by_seed in cells.items()
                         if acq != "random" and (mode, "random") in cells])
    lines = []
    if rows:
        lines += ["", "### Each function vs random, paired by seed (two-sided Wilcoxon signed-rank test, exact up "
                  "to 20 pairs)", "",
                  "Runs with the same seed start from the same random labeled set and the same initial weights; the "
                  "difference function − random is taken seed by seed (higher / lower: in how many seeds; equal "
                  "seeds are left out of the test).", "",
                  format_table(["training", "acquisition", *_PAIRED_COLUMNS], rows)]
    modes = list(dict.fromkeys(mode for mode, _ in cells))
    rows = _paired_rows([([mode, modes[0], acq], by_seed, cells[(modes[0], acq)])
                         for (mode, acq), by_seed in cells.items() if mode != modes[0] and (modes[0], acq) in cells])
    if rows:
        lines += ["", f"### Each training mode vs {modes[0]}, same function, paired by seed (two-sided Wilcoxon "
                  "signed-rank test)", "",
                  f"The difference mode − {modes[0]} for the same function and seed: the same initial labeled set "
                  "and initial weights, then each mode's own training and picks.", "",
                  format_table(["training", "vs", "acquisition", *_PAIRED_COLUMNS], rows)]
    return lines


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


__all__ = ["CSV_FIELDS", "CURVES_CAPTION", "RunResults", "Summary", "attack_text", "chance_counts",
           "checkpoint_labels", "collect", "file_slug", "finished_cells", "format_table", "plot_curves", "pyplot",
           "stage_rows", "summarize", "write_csv", "write_report"]
