"""Stored results read for reports: every run with its grid coordinates and stages, summaries per grid cell, and the
tidy per-stage CSV.

A run trained on the whole pool in one stage (``initial == budget ==`` the pool size) is an *all-label reference*
(:attr:`RunResults.is_reference`): it says how far training on every label goes, and is kept apart from the
active-learning runs (:func:`finished_cells`), which are compared with each other.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from robustal.reports.stats import mean_std, normalized_auc
from robustal.storage.outputs import atomic_write_bytes
from robustal.storage.schema import StageRecord
from robustal.storage.store import Store

CSV_FIELDS = ("run", "dataset", "model", "training", "acquisition", "seed", "status", "stage", "labeled", "clean",
              "robust", "train_seconds", "select_seconds", "eval_seconds", "best_epoch", "val_score", "val_clean",
              "at_chance", "recovery", "pool_images", "pseudo_accuracy", "teacher_clean")


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
    versions: dict = field(default_factory=dict)  # where it was computed (:mod:`robustal.storage.provenance`)

    @property
    def group(self) -> tuple[str, str]:
        return self.dataset, self.model

    @property
    def final(self) -> StageRecord:
        return self.stages[-1]

    @property
    def train_config(self) -> dict:
        """The stored training settings (``TrainConfig.to_dict``)."""
        return self.config.get("loop", {}).get("train", {})

    @property
    def eval_rule(self) -> str:
        """How the run's robust accuracy judged the attack's iterates (:data:`robustal.engine.attacks.RULES`): as
        stored; for a run stored before the rule was (robustal 0.2, and 0.3's first runs, paper-mnist), inferred from
        its training settings: a run that records ``validate_last`` was made after the any-iterate rule came in, one
        that does not is robustal 0.2's (last iterate). Runs from the few development commits that had the rule
        but not yet ``validate_last`` would read as last-iterate; no committed study holds one."""
        stored = (self.config.get("loop", {}).get("eval_attack") or {}).get("rule")
        if stored:
            return stored
        return "any-iterate" if "validate_last" in self.train_config else "last-iterate"

    @property
    def is_reference(self) -> bool:
        """Trained on every sample of the pool in one stage (``initial == budget ==`` the stored pool size)."""
        loop, pool = self.config.get("loop", {}), self.config.get("pool")
        return pool is not None and loop.get("initial") == loop.get("budget") == pool


def fit_steps(n: int, train: dict) -> int:
    """Optimizer steps of one fit on ``n`` samples under stored training settings: per epoch, one shuffled pass in
    batches (a last batch of one joins the previous), continued up to ``ceil(min_steps / epochs)`` batches
    (:func:`robustal.engine.training.fit`'s rule)."""
    epochs, size = int(train["epochs"]), int(train["batch_size"])
    batches = math.ceil(n / size)
    if batches > 1 and n - (batches - 1) * size == 1:
        batches -= 1
    return epochs * max(batches, math.ceil(int(train.get("min_steps") or 0) / epochs))


def optimizer_steps(run: RunResults) -> int:
    """The optimizer steps a run's stages were planned to take (a stage retrained from new weights at chance level
    took its steps twice: not counted)."""
    return sum(fit_steps(s.labeled, run.train_config) for s in run.stages)


def dataset_label(dataset: str) -> str:
    """The short name of a dataset entry in run names: the registered name, or an .npz file's stem."""
    return Path(dataset).stem if dataset.endswith(".npz") else dataset


def collect(root: str | Path, names: Sequence[str] | None = None) -> list[RunResults]:
    """The runs stored in ``root`` (only ``names``, in that order, when given), with their stages."""
    from robustal.engine.pool_training import training_label

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
                              training=training_label(loop.get("train", {}).get("mode", "?"),
                                                      (loop.get("pool") or {}).get("mode")),
                              acquisition=cfg.get("acquisition_label") or loop.get("acquisition", "?"),
                              seed=int(r["seed"]), status=r["status"], stages=store.stages(name), config=cfg,
                              versions=r["versions"]))
    return out


def stage_rows(runs: Sequence[RunResults]) -> list[dict]:
    """One dict per stage of every run, with :data:`CSV_FIELDS` as keys."""
    return [{"run": r.name, "dataset": r.dataset, "model": r.model, "training": r.training,
             "acquisition": r.acquisition, "seed": r.seed, "status": r.status, "stage": s.stage, "labeled": s.labeled,
             "clean": s.clean, "robust": s.robust, "train_seconds": s.train_seconds,
             "select_seconds": s.select_seconds, "eval_seconds": s.eval_seconds, "best_epoch": s.best_epoch,
             "val_score": s.val_score, "val_clean": s.val_clean, "at_chance": int(s.at_chance),
             "recovery": s.recovery, "pool_images": s.pool_images, "pseudo_accuracy": s.pseudo_accuracy,
             "teacher_clean": s.teacher_clean}
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
    """Mean ± std over seeds of one (dataset, model, training, acquisition) cell's finished runs; ``reference``: the
    cell's runs are all-label references."""

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
    reference: bool = False


def finished_cells(runs: Sequence[RunResults], *, references: bool = False
                   ) -> dict[tuple[str, str, str, str], list[RunResults]]:
    """Finished runs grouped by (dataset, model, training, acquisition), in the runs' order: the active-learning
    runs, or with ``references=True`` the all-label references only (never mixed in one cell)."""
    cells: dict[tuple[str, str, str, str], list[RunResults]] = {}
    for r in runs:
        if r.status == "finished" and r.stages and r.is_reference == references:
            cells.setdefault((r.dataset, r.model, r.training, r.acquisition), []).append(r)
    return cells


def run_auc(run: RunResults, key: str) -> float | None:
    """The normalized area under a run's ``key`` (``clean`` or ``robust``) accuracy-vs-labels curve (None: robust
    accuracy not measured at some stage)."""
    values = [getattr(s, key) for s in run.stages]
    return None if any(v is None for v in values) else normalized_auc([s.labeled for s in run.stages], values)


def summarize(runs: Sequence[RunResults]) -> list[Summary]:
    """Final accuracies and normalized AUCs per grid cell, over the finished runs' seeds: the active-learning cells,
    then the all-label references."""
    out = []
    for reference in (False, True):
        for (ds, model, mode, acq), rs in finished_cells(runs, references=reference).items():
            clean = [r.final.clean for r in rs]
            has_robust = all(s.robust is not None for r in rs for s in r.stages)
            robust = [r.final.robust for r in rs] if has_robust else None
            auc_c = [run_auc(r, "clean") for r in rs]
            auc_r = [run_auc(r, "robust") for r in rs] if has_robust else None
            out.append(Summary(ds, model, mode, acq, len(rs), rs[0].final.labeled, mean_std(clean),
                               mean_std(robust) if robust else None, mean_std(auc_c),
                               mean_std(auc_r) if auc_r else None, clean, robust, reference))
    return out


__all__ = ["CSV_FIELDS", "RunResults", "Summary", "collect", "finished_cells", "fit_steps", "optimizer_steps",
           "run_auc", "stage_rows", "summarize", "write_csv"]
