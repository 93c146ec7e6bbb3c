"""Test selection for retraining: rank new unlabeled inputs with a metric, label the top n, fine-tune, compare.

The workflow of a tester with a deployed model (``robustal train --train-size K --save model.pt``, then
``robustal select`` and ``robustal retrain``):

- **Original training data** are the training-set samples the checkpoint records: the first ``train_size``
  (``robustal train --train-size K``), an active-learning run's labeled set (``selected``, ``run --save``), or both
  (``retrain --save``: the first K and the picks). A checkpoint that records neither was trained on the whole pool;
  ``--train-size K`` declares the first K for it, or for data other than its own (:func:`resolve_training_set`).
- **The new unlabeled set** is the rest of the pool. Selected indices are indices into the dataset's training set;
  their labels come from the dataset (the oracle), or from a person who filled in the picks CSV's ``label`` column
  (:mod:`robustal.reports.picks_csv`). The test split is never selected from: it measures clean and robust accuracy
  before and after.
- **Any acquisition function is a test-selection metric**: it sees the model, the pool images and, as "labeled", the
  original training data (k-center measures distances to it).
- **Fine-tuning** trains the checkpoint's weights on original + selected samples with a fresh optimizer, keeping the
  epoch with the best validation score (:func:`~robustal.engine.training.fit`).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from robustal._runtime import make_generator
from robustal.acquisition import Selection, SelectionContext, create_acquisition
from robustal.data import Dataset
from robustal.data.dataset import Split
from robustal.engine.attacks import AttackConfig
from robustal.engine.evaluation import EvalResult, evaluate
from robustal.engine.training import FitResult, TrainConfig, fit
from robustal.errors import ConfigError, DataError
from robustal.loop.checkpoint import Checkpoint
from robustal.storage.outputs import atomic_write_bytes


def trained_indices(trained: int | torch.Tensor) -> torch.Tensor:
    """Sorted pool indices of the model's original training data: ``trained`` itself, or the first K for an int."""
    if isinstance(trained, int):
        return torch.arange(trained)
    return torch.as_tensor(trained, dtype=torch.int64).unique()


@dataclass(frozen=True)
class TrainingSet:
    """The model's original training data in the pool: the first ``prefix`` samples and ``extra`` more (a run's
    labeled set, or earlier picks); ``indices`` sorted. The new unlabeled set is the rest of the pool."""

    indices: torch.Tensor
    prefix: int
    extra: int
    pool_size: int

    @property
    def n_new(self) -> int:
        return self.pool_size - len(self.indices)

    def describe(self) -> str:
        """"the first 600 training samples" / "150 training samples recorded in the checkpoint" / ..."""
        if not self.extra:
            return f"the first {self.prefix} training samples"
        if not self.prefix:
            return f"{self.extra} training samples recorded in the checkpoint"
        return f"the first {self.prefix} and {self.extra} more training samples recorded in the checkpoint"


def resolve_training_set(checkpoint: Checkpoint, pool_size: int, override: int | None = None,
                         recorded: bool = True) -> TrainingSet:
    """The checkpoint's original training data in a pool of ``pool_size``, as recorded (``train_size`` and/or
    ``selected``); ``override`` (``--train-size K``) declares the first K for a checkpoint that records nothing, or
    for data other than its own (``recorded`` False), and must agree with what it records otherwise.

    Raises:
        ConfigError: ``override`` contradicts the record, or is missing for other data; the record does not fit
            the pool; no unlabeled sample remains.
    """
    where = f"Checkpoint {checkpoint.path}"
    has_record = checkpoint.train_size is not None or checkpoint.selected is not None
    if not recorded:
        if override is None:
            raise ConfigError(f"{where} was made on other data than these (its fingerprint differs), so the training "
                              "samples it records do not apply to them. Give --train-size K to declare that the model "
                              "was trained on the first K samples of these data, or give its own data.")
        k, extra = override, []
    elif has_record:
        k, extra = checkpoint.train_size or 0, list(checkpoint.selected or [])
        if override is not None and (override != k or extra):
            what = (f"the first {k} training samples" if not extra else
                    f"{len(extra)} training samples it lists" + (f" beside the first {k}" if k else ""))
            raise ConfigError(f"--train-size {override}: {where} records that the model was trained on {what}; a "
                              "different size would rank samples it has seen, or leave out samples it has not. "
                              "Leave --train-size out.")
    else:  # an earlier robustal's checkpoint of a model trained on the whole training set, or declared
        k, extra = (override if override is not None else pool_size), []
    if not 0 <= k <= pool_size or any(not 0 <= i < pool_size for i in extra):
        raise ConfigError(f"{where}: its training samples (train size {k}, largest index "
                          f"{max(extra, default=k - 1)}) do not fit the training set of {pool_size} samples. Use the "
                          "data it was trained on.")
    indices = torch.cat([torch.arange(k), torch.tensor(extra, dtype=torch.int64)]).unique()
    training = TrainingSet(indices, k, len(indices) - k, pool_size)
    if training.n_new == 0:
        if extra:
            raise ConfigError(f"{where}: the model was trained on all {pool_size} samples of the training set, so "
                              "no new unlabeled samples remain to select from.")
        raise ConfigError(f"The model was trained on the whole training set ({pool_size} samples), so no new "
                          "unlabeled samples remain to select from. Train it on part of the data with "
                          "`robustal train --train-size K --save ...`" + (
                              "." if has_record and recorded else
                              ", or declare how many leading samples it was trained on with --train-size."))
    return training


def select_samples(model: nn.Module, pool: Split, trained: int | torch.Tensor, metric: str, n: int, *, seed: int = 0,
                   device: torch.device | str = "cpu", options: dict | None = None,
                   epsilon: float | None = None) -> Selection:
    """Rank the pool samples the model was not trained on with the acquisition function ``metric`` and return its
    top ``n`` (pool indices).

    ``trained``: the original training data, the first K (an int) or these pool indices; they count as labeled
    (k-center measures distances to them) and are never picked. ``epsilon`` is the L∞ budget for functions that
    attack the model (``robust-boundary``): the dataset's.
    """
    acquisition = create_acquisition(metric, **(options or {}))
    acquisition.check(model)
    ctx = SelectionContext(model, pool.x, trained_indices(trained), make_generator(seed, "test-selection", metric),
                           device=device, epsilon=epsilon)
    model.eval()
    return acquisition.select(ctx, n)


def retrain(model: nn.Module, dataset: Dataset, trained: int | torch.Tensor, selected: torch.Tensor,
            config: TrainConfig, *, labels: torch.Tensor | None = None, device: torch.device | str = "cpu",
            seed: int = 0, progress: bool = False, warmup: bool = False) -> FitResult:
    """Fine-tune ``model`` on its original training data (the first ``trained`` pool samples, or these indices)
    plus ``pool[selected]``, labeled by the dataset or, where given, by ``labels`` (a person's, one per pick).

    The epoch with the best validation score (robust accuracy under adversarial training) is kept; see :func:`fit`.
    The model has been trained already, so the ε warm-up of ``config`` applies only with ``warmup=True``.
    """
    splits = dataset.splits()
    original = splits.pool.subset(trained_indices(trained))
    picked = splits.pool.subset(selected.to(torch.int64).cpu())
    if labels is not None:
        if labels.shape != picked.y.shape:
            raise ConfigError(f"{len(labels)} labels for {len(picked)} selected samples; give one label per pick.")
        picked = Split(picked.x, labels.to(torch.int64).cpu())
    train = Split(torch.cat([original.x, picked.x]), torch.cat([original.y, picked.y]))
    config = config.for_dataset(dataset)
    if not warmup:
        config = replace(config, epsilon_warmup=0)
    return fit(model, train, splits.val, config, device=device, seed=seed, progress=progress, desc="retrain")


@dataclass(frozen=True)
class RetrainOutcome:
    """Clean/robust test accuracy before and after fine-tuning on ``n_selected`` selected samples."""

    before: EvalResult
    after: EvalResult
    n_selected: int
    fit: FitResult


def select_and_retrain(checkpoint: Checkpoint, dataset: Dataset, metric: str, n: int, config: TrainConfig,
                       attack: AttackConfig | None, *, train_size: int | torch.Tensor, seed: int = 0,
                       device: torch.device | str = "cpu", before: EvalResult | None = None) -> RetrainOutcome:
    """One trial of a study: fresh model from ``checkpoint``, select ``n`` with ``metric``, retrain, evaluate.
    ``train_size``: the original training data, the first K or these pool indices."""
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
                   train_size: int | torch.Tensor) -> dict:
    """What a retrain study's results depend on: the checkpoint's bytes, the data, the original training data (the
    first K, or a digest of the indices), the training and the attack."""
    import hashlib
    import json
    from dataclasses import asdict

    digest = hashlib.sha256(checkpoint.path.read_bytes()).hexdigest() if checkpoint.path else None
    trained = trained_indices(train_size)
    settings = {"checkpoint_sha256": digest, "data_fingerprint": dataset.fingerprint(),
                "train": config.to_dict(), "attack": asdict(attack) if attack is not None else None}
    if torch.equal(trained, torch.arange(len(trained))):
        settings["train_size"] = len(trained)
    else:
        settings["trained_sha256"] = hashlib.sha256(trained.numpy().tobytes()).hexdigest()
    return json.loads(json.dumps(settings))


def check_study_settings(out: Path, settings: dict) -> None:
    """Write ``out/settings.json`` for a new study; refuse a rerun whose settings differ from the stored ones."""
    import json

    from robustal.errors import StoreError
    from robustal.storage.schema import config_diff

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
                  train_size: int | torch.Tensor, device: torch.device | str = "cpu",
                  on_trial: Callable[[dict], None] | None = None) -> list[dict]:
    """Every metric × size × seed: select, retrain from the checkpoint, evaluate; results in ``out/results.csv``.

    The CSV is rewritten atomically after each trial, and trials already in it are skipped, so an interrupted
    study resumes; ``out/settings.json`` records what the trials depend on (checkpoint, data, training, attack), and
    a rerun under other settings is refused before any work. Returns all rows (strings as read back for resumed
    ones, numbers for new ones).
    """
    model = checkpoint.build(dataset)
    for m in metrics:
        create_acquisition(m).check(model)  # unknown names, or a model without what a metric needs: before any work
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
    from robustal.reports.stats import format_mean_std, mean_std

    if not values:
        return "-"
    return format_mean_std(*mean_std(values), len(values), digits=4)


def _num(v) -> float | None:
    return None if v in (None, "", "None") else float(v)


def study_table(rows: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """Markdown tables: per metric and size, mean ± std (over seeds) of clean and robust accuracy after retraining;
    then each metric vs ``random``, and the project's DRE vs each other metric (the paper's claim d), paired by seed
    (:func:`paired_table`)."""
    from robustal.reports.comparisons import PROJECT_FUNCTION
    from robustal.reports.tables import format_table

    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((str(r["metric"]), int(r["size"])), []).append(r)
    order = list(metrics) if metrics else []
    keys = sorted(groups, key=lambda k: (k[1], order.index(k[0]) if k[0] in order else len(order), k[0]))
    table = []
    for metric, size in keys:
        g = groups[(metric, size)]
        robust = [x for x in (_num(r["robust_after"]) for r in g) if x is not None]
        table.append([metric, size, len(g), _mean_std([float(r["clean_after"]) for r in g]), _mean_std(robust)])
    text = format_table(["metric", "selected", "seeds", "clean after", "robust after"], table)
    per_seed = {int(r["seed"]): r for r in rows}  # the checkpoint before fine-tuning, measured with each seed
    if per_seed:
        robust = [x for x in (_num(r["robust_before"]) for r in per_seed.values()) if x is not None]
        text += (f"\n\nBefore retraining (mean ± std over seeds {sorted(per_seed)}): clean "
                 f"{_mean_std([float(r['clean_before']) for r in per_seed.values()])}, robust {_mean_std(robust)}.")
    paired = paired_table(rows, [k[0] for k in keys])
    if paired:
        text += ("\n\nEach metric vs random, paired by seed (a seed fixes the checkpoint's evaluation and the "
                 "fine-tuning's randomness; the selections differ): mean difference after retraining, in how many "
                 "seeds higher / lower, and the two-sided exact Wilcoxon signed-rank p (equal seeds left out).\n\n"
                 + paired)
    versus = paired_table(rows, [k[0] for k in keys], against=PROJECT_FUNCTION, against_first=True)
    if versus:
        text += (f"\n\nEach metric vs {PROJECT_FUNCTION}, paired by seed in the same way, as the study report does: "
                 f"{PROJECT_FUNCTION} − the metric in the row after retraining (positive: {PROJECT_FUNCTION} ahead; "
                 f"higher / lower: in how many seeds {PROJECT_FUNCTION} is higher / lower).\n\n" + versus)
    return text


def paired_table(rows: Sequence[dict], metrics: Sequence[str], against: str = "random", *,
                 against_first: bool = False) -> str:
    """Each metric minus ``against`` after retraining, seed by seed, per selection size: clean and robust accuracy
    (mean difference, seeds higher / lower, exact Wilcoxon p). ``against_first``: ``against`` minus each metric
    instead (the report's convention for DRE against the others: positive, ``against`` ahead). Empty without
    ``against`` rows."""
    from robustal.reports.stats import compare_paired
    from robustal.reports.tables import format_table

    by: dict[tuple[str, int], dict[int, dict]] = {}
    for r in rows:
        by.setdefault((str(r["metric"]), int(r["size"])), {})[int(r["seed"])] = r
    table = []
    for size in sorted({k[1] for k in by}):
        base = by.get((against, size))
        if base is None:
            continue
        for metric in dict.fromkeys(metrics):
            runs = by.get((metric, size))
            seeds = sorted(set(runs or {}) & set(base)) if metric != against else []
            if len(seeds) < 2:
                continue
            row = [metric, size, len(seeds)]
            for key in ("clean_after", "robust_after"):
                x, y = [_num(runs[s][key]) for s in seeds], [_num(base[s][key]) for s in seeds]
                if None in x or None in y:
                    row += [None, None, None]
                    continue
                c = compare_paired(y, x) if against_first else compare_paired(x, y)
                row += [f"{c.mean_diff:+.4f}", f"{c.higher} / {c.lower}", c.p]
            table.append(row)
    if not table:
        return ""
    return format_table(["metric", "selected", "pairs", "Δ clean", "higher / lower", "p clean", "Δ robust",
                         "higher / lower", "p robust"], table, floatfmt=".4f")
