"""The report's figures: accuracy-vs-labels curves per training mode (with the all-label references as lines) and the
entropy distributions of what each function picked. PNG files only (matplotlib's Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robustal.reports.results import RunResults, finished_cells

#: What :func:`plot_curves` draws, said under the curves in the report.
CURVES_CAPTION = ("Each line is a function's mean accuracy over its finished runs' seeds at each label count (random "
                  "dashed); the shaded band is ± one standard deviation over those seeds (the sample standard "
                  "deviation, n − 1; no band for a single seed). A dotted horizontal line is an all-label reference "
                  "of the same training mode: its mean over seeds, with its label count in the legend.")

#: Colours of the all-label references' lines (dark, apart from the functions' tab20 colours).
REFERENCE_COLORS = ("black", "dimgray", "saddlebrown", "indigo")


#: matplotlib's note, logged when building its font cache (a fresh machine) takes over 5 s: not robustal's output.
FONT_CACHE_NOTE = "Matplotlib is building the font cache"


def _drop_font_cache_note(record) -> bool:
    return not str(record.msg).startswith(FONT_CACHE_NOTE)


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed); its font-cache note stays out of
    robustal's output (a study's or report's log)."""
    import logging

    fonts = logging.getLogger("matplotlib.font_manager")
    if _drop_font_cache_note not in fonts.filters:
        fonts.addFilter(_drop_font_cache_note)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_slug(*parts: str) -> str:
    """A file-name-safe join of ``parts`` (figure names)."""
    return "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts)


def plot_curves(runs: Sequence[RunResults], dataset: str, model: str, training: str | Sequence[str],
                path: Path) -> Path:
    """Clean and robust accuracy vs labels, one line per function: the mean over seeds with a band of ± one sample
    standard deviation; each all-label reference of the mode a dotted horizontal line at its mean
    (:data:`CURVES_CAPTION`). Several training modes (``pgd`` and ``pgd+self-training``) share one figure, each
    line labelled with its mode."""
    import numpy as np

    plt = pyplot()
    modes = [training] if isinstance(training, str) else list(training)

    def named(key: tuple) -> str:
        return key[3] if len(modes) == 1 else f"{key[3]}, {key[2]}"

    cells = {named(k): v for k, v in finished_cells(runs).items() if k[:2] == (dataset, model) and k[2] in modes}
    references = {named(k): v for k, v in finished_cells(runs, references=True).items()
                  if k[:2] == (dataset, model) and k[2] in modes}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    palette = plt.get_cmap("tab20").colors  # 12 functions: tab10 would repeat colours
    for i, (acq, rs) in enumerate(cells.items()):
        n = min(len(r.stages) for r in rs)
        labels = [s.labeled for s in rs[0].stages[:n]]
        for ax, name in zip(axes, ("clean", "robust"), strict=True):
            vals = np.array([[getattr(s, name) if getattr(s, name) is not None else np.nan for s in r.stages[:n]]
                             for r in rs], dtype=float)
            if np.isnan(vals).all():
                continue
            mean, std = vals.mean(0), vals.std(0, ddof=1) if len(rs) > 1 else np.zeros(n)
            color = palette[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            random = acq.split(", ")[0] == "random"
            ax.plot(labels, mean, marker="o", ms=3, label=acq, lw=2.5 if random else 1.5, ls="--" if random else "-",
                    color=color)
            ax.fill_between(labels, mean - std, mean + std, color=color, alpha=0.12)
    for i, (acq, rs) in enumerate(references.items()):
        for ax, name in zip(axes, ("clean", "robust"), strict=True):
            vals = [getattr(r.final, name) for r in rs]
            if any(v is None for v in vals):
                continue
            ax.axhline(float(np.mean(vals)), ls=":", lw=1.8, color=REFERENCE_COLORS[i % len(REFERENCE_COLORS)],
                       label=f"{acq} ({rs[0].final.labeled} labels)")
    for ax, title in zip(axes, ("clean accuracy", "robust accuracy"), strict=True):
        ax.set_xlabel("labeled samples")
        ax.set_ylabel(title)
        ax.set_title(f"{dataset} / {model} / {' vs '.join(modes)}: {title}")
        ax.grid(alpha=0.3)
    for ax in reversed(axes):  # on the robust panel, unless robust accuracy was not measured
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2, loc="best")
            break
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_entropies(data: dict[str, tuple], title: str, path: Path) -> Path:
    """Per function, density histograms of the pool's entropies and the selected samples' entropies (bits), on one
    shared bin grid; both axes labelled, one legend for the figure."""
    import math

    import numpy as np

    plt = pyplot()
    names = list(data)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows + 0.7), squeeze=False)
    hi = max(float(np.max(p)) for p, _ in data.values()) or 1.0
    bins = np.linspace(0, hi, 31)
    for ax, name in zip(axes.flat, names, strict=False):
        pool, sel = data[name]
        ax.hist(pool, bins=bins, density=True, alpha=0.5, label="pool (all samples)", color="tab:gray")
        if len(sel):
            ax.hist(sel, bins=bins, density=True, alpha=0.6, label="selected", color="tab:red")
        ax.set_title(name, fontsize=13)
        ax.set_xlabel("entropy under the final model (bits)", fontsize=11)
        ax.set_ylabel("density", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    height = fig.get_figheight()  # above the panels: the title, then the legend (inches from the top)
    fig.suptitle(title, fontsize=14, y=1 - 0.08 / height, va="top")
    fig.legend(handles, labels, loc="upper center", ncol=2, fontsize=11, bbox_to_anchor=(0.5, 1 - 0.4 / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["CURVES_CAPTION", "REFERENCE_COLORS", "file_slug", "plot_curves", "plot_entropies", "pyplot"]
