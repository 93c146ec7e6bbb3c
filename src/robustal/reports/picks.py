"""What each acquisition function picked, measured on the data: a section of ``robustal report``.

Two yardsticks, the same for every function, so that functions can be compared by what they chose and not only by
the accuracy that followed:

- the entropy distribution of the selected samples vs the whole pool, recomputed under each run's *final* model (its
  last stored checkpoint, loaded with ``weights_only=True``); the store's per-pick ``score`` is the entropy at
  selection time only for ``entropy`` and ``dre``, so it cannot be compared across functions;
- the class balance of the labeled set: how many labels the rarest and the most common class got. A function that
  starves a class can train a poor model without ever being at chance level.

Both load the dataset (and the entropies each final model), so the report computes them only when asked. A run whose
checkpoint is missing or damaged, or data that cannot be loaded, leaves that part out: ``report.md`` says why, and a
:class:`~robustal.errors.ReportWarning` says it on the terminal.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from pathlib import Path

from robustal.errors import CheckpointError, ConfigError, ReportWarning, StoreError
from robustal.reports.figures import file_slug, plot_entropies
from robustal.reports.results import RunResults, finished_cells
from robustal.reports.tables import format_table
from robustal.storage.store import Store


def selection_entropies(root: str | Path, run: RunResults, dataset=None, data_dir: str | Path | None = None,
                        factories: Collection[str] = ()):
    """Entropies (bits) of the whole pool and of the samples the function picked (stages ≥ 1), under the run's
    final model, recomputed from its last checkpoint. Returns ``(pool, selected)`` numpy arrays.

    A run of a user's model is rebuilt only when the person named its factory (``factories``, from ``--factory``):
    a results folder never makes robustal import code (:class:`~robustal.errors.ConfigError` otherwise)."""
    import torch

    from robustal.acquisition.inference import predict
    from robustal.acquisition.scores import entropy
    from robustal.data import load_dataset
    from robustal.loop.checkpoint import is_user_model, trusted_model_name
    from robustal.loop.experiment import model_factory

    named = run.model if is_user_model(run.model) and run.model in factories else None
    model_name = trusted_model_name(run.model, named, f"Run {run.name!r}")
    store = Store(root, create=False)
    dataset = dataset or load_dataset(run.config["dataset"], data_dir)
    model = model_factory(model_name, dataset)()
    state = store.load_checkpoint(run.name, run.final.stage)
    model.load_state_dict(state["model"])
    pool = dataset.splits().pool
    with torch.random.fork_rng(devices=[]):
        probs = predict(model, pool.x, batch_size=1024).probs
    h = entropy(probs)
    picks = store.selections(run.name)
    chosen = torch.tensor([i for stage, idx in picks.items() if stage > 0 for i in idx], dtype=torch.int64)
    return h.numpy(), h[chosen].numpy()


def class_counts(root: str | Path, run: RunResults, pool_labels, num_classes: int):
    """Labels per class among every sample the run labeled (the initial set included), as a numpy array.

    The labels are those the store holds (a person's, in a labeling project), else the pool's own."""
    import torch

    store = Store(root, create=False)
    picked = torch.tensor([i for idx in store.selections(run.name).values() for i in idx], dtype=torch.int64)
    labels = torch.as_tensor(pool_labels, dtype=torch.int64).clone()
    given = store.labels(run.name)
    if given:
        labels[torch.tensor(list(given))] = torch.tensor(list(given.values()))
    return torch.bincount(labels[picked], minlength=num_classes).numpy()


def picks_section(root: Path, runs: Sequence[RunResults], ds: str, model: str, out: Path, data_dir,
                  factories: Collection[str] = ()) -> list[str]:
    """The report's Markdown on what the functions picked in one (dataset, model) group, with the entropy figures.

    ``factories``: the user's model factories the person named (``report --factory``), see
    :func:`selection_entropies`."""
    import numpy as np

    from robustal.data import load_dataset

    cells = {k: v for k, v in finished_cells(runs).items() if k[:2] == (ds, model)}
    if not cells:
        return []
    first = next(iter(cells.values()))[0]
    try:
        dataset = load_dataset(first.config["dataset"], data_dir)
    except Exception as e:  # the data moved or is not cached here: the rest of the report stands
        reason = f"cannot load {first.config['dataset']!r} ({e})"
        warnings.warn(f"{ds} / {model}: the entropy distributions and class balance are left out of the report: "
                      f"{reason}", ReportWarning, stacklevel=2)
        return ["### What the functions picked", "", f"Skipped: {reason}.", ""]
    pool = dataset.splits().pool
    num_classes = dataset.num_classes
    lines = ["### Entropy of the selected samples vs the pool", "",
             "Entropies (bits) under each run's final model, recomputed from its last checkpoint; all seeds pooled. "
             "Pool: every pool sample; selected: the samples the function picked (stages ≥ 1).", ""]
    rows: list[list] = []
    balance: list[list] = []
    skipped: list[str] = []
    for mode in dict.fromkeys(k[2] for k in cells):
        data = {}
        for (_, _, m, acq), rs in cells.items():
            if m != mode:
                continue
            counts = [class_counts(root, r, pool.y, num_classes) for r in rs]
            balance.append([mode, acq, len(rs), int(counts[0].sum()), float(np.mean([c.min() for c in counts])),
                            int(min(c.min() for c in counts)), float(np.mean([c.max() for c in counts])),
                            int(max(c.max() for c in counts))])
            parts = []
            for r in rs:
                try:
                    parts.append(selection_entropies(root, r, dataset, factories=factories))
                except (StoreError, ConfigError) as e:  # a damaged checkpoint, an unnamed factory: say so
                    skipped.append(f"{r.name}: {e}")
                    hint = (" (or leave out what needs the final models with --no-entropy)"
                            if isinstance(e, CheckpointError) else "")
                    warnings.warn(f"{r.name}: left out of the report's entropy distributions: {e}{hint}",
                                  ReportWarning, stacklevel=2)
            if not parts:
                continue
            pool_h = np.concatenate([p for p, _ in parts])
            sel = np.concatenate([s for _, s in parts])
            data[acq] = (pool_h, sel)
            rows.append([mode, acq, float(pool_h.mean()), float(sel.mean()) if len(sel) else None,
                         float(np.median(sel)) if len(sel) else None, len(sel)])
        if not data:
            continue
        png = plot_entropies(data, f"{ds} / {model} / {mode}: entropy of selected vs pool",
                             out / f"entropy-{file_slug(ds, model, mode)}.png")
        lines += [f"![entropy {ds} {model} {mode}]({png.name})", ""]
    lines.append(format_table(["training", "acquisition", "pool mean", "selected mean", "selected median",
                               "selected n"], rows))
    if skipped:
        lines += ["", "Left out of the entropy distributions:", "", *(f"- {s}" for s in skipped)]
    lines += ["", "### Class balance of the labeled set", "",
              f"Labels per class among all the samples each run labeled, the random initial set included "
              f"({num_classes} classes: a balanced set of n labels has n/{num_classes} per class). Rarest and most "
              "common class: mean over seeds, and the extreme over seeds.", "",
              format_table(["training", "acquisition", "runs", "labels", "rarest class", "fewest in a run",
                            "most common class", "most in a run"], balance, floatfmt=".1f")]
    return lines + [""]


__all__ = ["class_counts", "picks_section", "selection_entropies"]
