"""Test selection for retraining: rank new unlabeled inputs with a metric, label the top n, fine-tune, compare.

The workflow of a tester with a deployed model (``robustal train --train-size K --save model.pt``, then
``robustal select`` and ``robustal retrain``):

- **Original training data** are the first ``train_size`` samples of the dataset's training set (the pool), as
  recorded in the checkpoint by ``robustal train --train-size K`` (a checkpoint without it was trained on the whole
  pool). A different ``train_size`` can be declared for checkpoints made elsewhere.
- **The new unlabeled set** is the rest of the pool, ``pool[train_size:]``. Selected indices are indices into the
  dataset's training set (so they lie in ``[train_size, len(pool))``); their labels come from the dataset (the
  oracle). The test split is never selected from: it measures clean and robust accuracy before and after.
- **Any acquisition function is a test-selection metric**: it sees the model, the pool images and, as "labeled", the
  original training data (k-center measures distances to it).
- **Fine-tuning** trains the checkpoint's weights on original + selected samples with a fresh optimizer, keeping the
  epoch with the best validation score (:func:`~robustal.training.fit`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from robustal._runtime import make_generator
from robustal.acquisition import Selection, SelectionContext, create_acquisition
from robustal.attacks import AttackConfig
from robustal.checkpoint import Checkpoint
from robustal.data import Dataset
from robustal.data.dataset import Split
from robustal.errors import ConfigError, DataError
from robustal.evaluation import EvalResult, evaluate
from robustal.outputs import atomic_write_bytes
from robustal.training import FitResult, TrainConfig, fit

CSV_COLUMNS = ("rank", "index", "score")


def resolve_train_size(checkpoint: Checkpoint, pool_size: int, override: int | None = None) -> int:
    """The number of leading pool samples that are the original training data; at least one must stay unlabeled."""
    k = override if override is not None else checkpoint.train_size
    if k is None:
        k = pool_size
    if not 0 <= k <= pool_size:
        raise ConfigError(f"train size {k} is outside [0, {pool_size}] (the training set has {pool_size} samples).")
    if k == pool_size:
        raise ConfigError(f"The model was trained on the whole training set ({pool_size} samples), so no new "
                          "unlabeled samples remain to select from. Train it on part of the data with "
                          "`robustal train --train-size K --save ...`, or declare how many leading samples it was "
                          "trained on with --train-size.")
    return k


def select_samples(model: nn.Module, pool: Split, train_size: int, metric: str, n: int, *, seed: int = 0,
                   device: torch.device | str = "cpu", options: dict | None = None,
                   epsilon: float | None = None) -> Selection:
    """Rank ``pool[train_size:]`` with the acquisition function ``metric`` and return its top ``n`` (pool indices).

    The original training data ``pool[:train_size]`` count as labeled (k-center measures distances to them).
    ``epsilon`` is the L∞ budget for functions that attack the model (``robust-boundary``): the dataset's.
    """
    acquisition = create_acquisition(metric, **(options or {}))
    ctx = SelectionContext(model, pool.x, torch.arange(train_size), make_generator(seed, "test-selection", metric),
                           device=device, epsilon=epsilon)
    model.eval()
    return acquisition.select(ctx, n)


def selection_csv(selection: Selection) -> str:
    """CSV text with columns ``rank,index,score`` (rank from 1; score empty where the metric has none)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    scores = selection.scores.tolist() if selection.scores is not None else [None] * len(selection.indices)
    for rank, (index, score) in enumerate(zip(selection.indices.tolist(), scores, strict=True), start=1):
        writer.writerow([rank, index, "" if score is None or math.isnan(score) else repr(float(score))])
    return buf.getvalue()


def write_selection(path: str | Path, selection: Selection) -> None:
    """Write :func:`selection_csv` to ``path`` atomically."""
    atomic_write_bytes(Path(path), selection_csv(selection).encode())


def read_selection(path: str | Path, pool_size: int, train_size: int, n: int | None = None) -> torch.Tensor:
    """Pool indices of a selection CSV in rank order (the first ``n`` if given), validated.

    Raises:
        DataError: Missing file, no ``index`` column, a non-integer or duplicate index, or an index outside the new
            unlabeled set ``[train_size, pool_size)``.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"Selection file {path} is a directory; give the CSV written by robustal select --out.")
    if not path.is_file():
        raise DataError(f"Selection file {path} not found. Write one with: robustal select ... --out {path}")
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else []
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({e}).") from None
    if "index" not in columns:
        raise DataError(f"{path}: needs an 'index' column (robustal select writes rank,index,score); "
                        f"found {', '.join(columns) or 'no rows'}.")
    try:
        ranked = sorted(rows, key=lambda r: int(r["rank"])) if "rank" in columns else rows
        indices = [int(r["index"]) for r in ranked]
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: rank and index must be integers ({e}).") from None
    if n is not None:
        if n < 1 or n > len(indices):
            raise ConfigError(f"--n {n} must lie in [1, {len(indices)}] (the file has {len(indices)} picks).")
        indices = indices[:n]
    bad = [i for i in indices if not train_size <= i < pool_size]
    if bad:
        raise DataError(f"{path}: {len(bad)} indices are outside the new unlabeled set [{train_size}, {pool_size}) "
                        f"(e.g. {bad[0]}). Indices refer to the dataset's training set; the first {train_size} are "
                        "the model's original training data.")
    if len(set(indices)) != len(indices):
        raise DataError(f"{path}: indices repeat; each sample can be selected once.")
    return torch.tensor(indices, dtype=torch.int64)


def retrain(model: nn.Module, dataset: Dataset, train_size: int, selected: torch.Tensor, config: TrainConfig, *,
            device: torch.device | str = "cpu", seed: int = 0, progress: bool = False,
            warmup: bool = False) -> FitResult:
    """Fine-tune ``model`` on the original training data ``pool[:train_size]`` plus ``pool[selected]``.

    The epoch with the best validation score (robust accuracy under adversarial training) is kept; see :func:`fit`.
    The model has been trained already, so the ε warm-up of ``config`` applies only with ``warmup=True``.
    """
    splits = dataset.splits()
    index = torch.cat([torch.arange(train_size), selected.to(torch.int64).cpu()])
    config = config.for_dataset(dataset)
    if not warmup:
        config = replace(config, epsilon_warmup=0)
    return fit(model, splits.pool.subset(index), splits.val, config, device=device, seed=seed,
               progress=progress, desc="retrain")


@dataclass(frozen=True)
class RetrainOutcome:
    """Clean/robust test accuracy before and after fine-tuning on ``n_selected`` selected samples."""

    before: EvalResult
    after: EvalResult
    n_selected: int
    fit: FitResult


def select_and_retrain(checkpoint: Checkpoint, dataset: Dataset, metric: str, n: int, config: TrainConfig,
                       attack: AttackConfig | None, *, train_size: int, seed: int = 0,
                       device: torch.device | str = "cpu", before: EvalResult | None = None) -> RetrainOutcome:
    """One trial of a study: fresh model from ``checkpoint``, select ``n`` with ``metric``, retrain, evaluate."""
    splits = dataset.splits()
    model = checkpoint.build(dataset, device)
    if before is None:
        before = evaluate(model, splits.test, attack, device=device, seed=seed)
    selection = select_samples(model, splits.pool, train_size, metric, n, seed=seed, device=device,
                               epsilon=config.for_dataset(dataset).epsilon)
    result = retrain(model, dataset, train_size, selection.indices, config, device=device, seed=seed)
    after = evaluate(model, splits.test, attack, device=device, seed=seed)
    return RetrainOutcome(before, after, n, result)


STUDY_COLUMNS = ("metric", "size", "seed", "clean_before", "robust_before", "clean_after", "robust_after",
                 "best_epoch", "seconds")


def read_study_rows(path: Path) -> list[dict]:
    """Rows of a study's results CSV (empty when the file does not exist), checked to be a study's rows."""
    if not path.is_file():
        return []
    hint = "It was changed by hand or by another program; move it away (or use another --out) to start again."
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable results CSV ({e}). {hint}") from None
    missing = [c for c in STUDY_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)} of a retrain-study results file. {hint}")
    for i, row in enumerate(rows, start=2):
        try:
            int(row["size"]), int(row["seed"]), float(row["clean_after"])
        except (TypeError, ValueError):
            raise DataError(f"{path}, row {i}: size, seed and clean_after must be numbers; got {row['size']!r}, "
                            f"{row['seed']!r}, {row['clean_after']!r}. {hint}") from None
    return rows


#: The settings a retrain study's trials were made with, beside its results: a rerun must match them.
SETTINGS_FILE = "settings.json"


def study_settings(checkpoint: Checkpoint, dataset: Dataset, config: TrainConfig, attack: AttackConfig | None,
                   train_size: int) -> dict:
    """What a retrain study's results depend on: the checkpoint's bytes, the data, the training and the attack."""
    import hashlib
    import json
    from dataclasses import asdict

    digest = hashlib.sha256(checkpoint.path.read_bytes()).hexdigest() if checkpoint.path else None
    settings = {"checkpoint_sha256": digest, "data_fingerprint": dataset.fingerprint(), "train_size": train_size,
                "train": config.to_dict(), "attack": asdict(attack) if attack is not None else None}
    return json.loads(json.dumps(settings))


def check_study_settings(out: Path, settings: dict) -> None:
    """Write ``out/settings.json`` for a new study; refuse a rerun whose settings differ from the stored ones."""
    import json

    from robustal.errors import StoreError
    from robustal.store import config_diff

    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise StoreError(f"{path} cannot be read ({e}); move it away or use another --out.") from None
        diff = config_diff(stored, settings) if isinstance(stored, dict) else ["not a settings file"]
        if diff:
            raise StoreError(f"{out} holds retrain-study trials made under other settings ({'; '.join(diff)}). "
                             "Nothing was run or changed. Rerun with the same settings, or write to another --out.")
    elif (out / "results.csv").is_file():
        raise StoreError(f"{out / 'results.csv'} has no {SETTINGS_FILE} beside it (an earlier robustal wrote it), so "
                         "its trials cannot be checked against these settings; write to another --out.")
    else:
        atomic_write_bytes(path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())


def _rows_csv(rows: Sequence[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=STUDY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def retrain_study(checkpoint: Checkpoint, dataset: Dataset, metrics: Sequence[str], sizes: Sequence[int],
                  seeds: Sequence[int], config: TrainConfig, attack: AttackConfig | None, out: str | Path, *,
                  train_size: int, device: torch.device | str = "cpu",
                  on_trial: Callable[[dict], None] | None = None) -> list[dict]:
    """Every metric × size × seed: select, retrain from the checkpoint, evaluate; results in ``out/results.csv``.

    The CSV is rewritten atomically after each trial, and trials already in it are skipped, so an interrupted
    study resumes; ``out/settings.json`` records what the trials depend on (checkpoint, data, training, attack), and
    a rerun under other settings is refused before any work. Returns all rows (strings as read back for resumed
    ones, numbers for new ones).
    """
    for m in metrics:
        create_acquisition(m)  # unknown names fail before any work
    out = Path(out)
    path = out / "results.csv"
    rows = read_study_rows(path)
    check_study_settings(out, study_settings(checkpoint, dataset, config, attack, train_size))
    done = {(r["metric"], int(r["size"]), int(r["seed"])) for r in rows}
    splits = dataset.splits()
    before: dict[int, EvalResult] = {}  # per seed: "before" and "after" are measured with the same seed
    for size in sizes:
        for metric in metrics:
            for seed in seeds:
                if (metric, size, seed) in done:
                    continue
                t0 = time.perf_counter()
                if seed not in before:
                    before[seed] = evaluate(checkpoint.build(dataset, device), splits.test, attack, device=device,
                                            seed=seed)
                o = select_and_retrain(checkpoint, dataset, metric, size, config, attack, train_size=train_size,
                                       seed=seed, device=device, before=before[seed])
                row = {"metric": metric, "size": size, "seed": seed, "clean_before": o.before.clean,
                       "robust_before": o.before.robust, "clean_after": o.after.clean,
                       "robust_after": o.after.robust, "best_epoch": o.fit.best_epoch,
                       "seconds": round(time.perf_counter() - t0, 1)}
                rows.append(row)
                atomic_write_bytes(path, _rows_csv(rows))
                if on_trial is not None:
                    on_trial(row)
    return rows


def _mean_std(values: list[float]) -> str:
    from robustal.stats import mean_std

    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.4f} ± {std:.4f}"


def study_table(rows: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """Markdown table: per metric and size, mean ± std (over seeds) of clean and robust accuracy after retraining."""
    from robustal.report import format_table

    def num(v) -> float | None:
        return None if v in (None, "", "None") else float(v)

    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((str(r["metric"]), int(r["size"])), []).append(r)
    order = list(metrics) if metrics else []
    keys = sorted(groups, key=lambda k: (k[1], order.index(k[0]) if k[0] in order else len(order), k[0]))
    table = []
    for metric, size in keys:
        g = groups[(metric, size)]
        robust = [x for x in (num(r["robust_after"]) for r in g) if x is not None]
        table.append([metric, size, len(g), _mean_std([float(r["clean_after"]) for r in g]), _mean_std(robust)])
    text = format_table(["metric", "selected", "seeds", "clean after", "robust after"], table)
    per_seed = {int(r["seed"]): r for r in rows}  # the checkpoint before fine-tuning, measured with each seed
    if per_seed:
        robust = [x for x in (num(r["robust_before"]) for r in per_seed.values()) if x is not None]
        text += (f"\n\nBefore retraining (mean ± std over seeds {sorted(per_seed)}): clean "
                 f"{_mean_std([float(r['clean_before']) for r in per_seed.values()])}, robust {_mean_std(robust)}.")
    return text
