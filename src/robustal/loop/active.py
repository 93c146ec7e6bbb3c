"""The robust active-learning loop (the paper's Algorithm 1).

Random initial labeled set → warm-up training → stages: the acquisition function picks ``per_stage`` unlabeled
samples, the oracle labels them, the model trains on all labels (continuing from the previous stage's model and
optimizer, or from scratch), the best epoch by validation is kept, and clean and robust accuracy are measured on the
test split. Stages run until ``budget`` labels.

With a :class:`~robustal.storage.store.Store`, every finished stage is written (checkpoint first, then results in one
transaction), and running the same configuration again resumes after the last finished stage. Every random choice
comes from a generator derived from ``(seed, stage, purpose)``, so a resumed run ends exactly as an uninterrupted one.
A run's settings are a :class:`~robustal.loop.loop_config.LoopConfig`.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from robustal._runtime import derive_seed, make_generator, resolve_device
from robustal.acquisition import Selection, SelectionContext, create_acquisition
from robustal.data.dataset import Split, Splits
from robustal.engine.evaluation import evaluate
from robustal.engine.pool_training import Unlabeled
from robustal.engine.training import FitResult, fit, make_optimizer
from robustal.errors import ChanceLevelWarning, ConfigError, PoolWarning
from robustal.labeling.oracle import CallableOracle, DatasetOracle, Oracle
from robustal.loop.loop_config import LoopConfig
from robustal.loop.pseudo_labels import PseudoLabels, pseudo_label
from robustal.models.memory_format import apply_memory_format
from robustal.storage.schema import StageRecord
from robustal.storage.store import Store


@dataclass(frozen=True)
class StageResult:
    """A finished stage: its record (as stored) and the pool indices labeled at it."""

    record: StageRecord
    picked: torch.Tensor
    scores: torch.Tensor | None


@dataclass(frozen=True)
class Waiting:
    """A run stopped because the oracle has not answered: ``n`` labels of ``stage`` are awaited at ``where``."""

    stage: int
    n: int
    where: str


@dataclass
class RunResult:
    """All finished stages of a run, the model, the labeled pool indices, and what is awaited (if the run stopped
    before its budget because a person has labels to give)."""

    stages: list[StageRecord]
    model: nn.Module
    labeled: torch.Tensor
    waiting: Waiting | None = None


class _Awaited(Exception):
    """The oracle has not answered stage ``stage`` yet (internal: the loop stops and reports :class:`Waiting`)."""

    def __init__(self, stage: int, n: int):
        super().__init__(stage, n)
        self.stage, self.n = stage, n


class ActiveLearningLoop:
    """Runs the loop for one model and one set of splits.

    Args:
        model: The network (its initial weights are the run's; they are re-seeded from ``config.seed`` when
            ``reinit`` is given instead).
        splits: ``pool`` (its labels are the default oracle's), ``val`` and ``test``.
        config: A :class:`LoopConfig`.
        store: Where to write results and checkpoints and resume from (optional).
        name: The run's name in the store.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        reinit: A factory building a freshly initialised model; used for the initial weights (seeded from the run's
            seed, reproducibly) and for ``from_scratch``.
        progress: Show progress bars.
        on_stage: Called with each :class:`StageResult` as it finishes (progress, logging).
        meta: Extra facts stored with the run's configuration (dataset and model names); a resume must match them.
        oracle: Where labels come from (default: the pool's own labels,
            :class:`~robustal.labeling.oracle.DatasetOracle`).
            An oracle that has not answered yet stops the run with :attr:`RunResult.waiting` set; running again
            asks for the same samples and continues.
        tracker: Mirrors the run into an experiment tracker (:mod:`robustal.tracking.tracking`): the configuration when
            the run starts, every stage as it is stored, the status at the end.
        describe: What each stage checkpoint records of its model and data besides its weights (model name, data,
            classes, image shape: :mod:`robustal.reports.stored_model`), so that a copy of it away from its results
            folder (MLflow's) still says how to rebuild and evaluate the model.
    """

    def __init__(self, model: nn.Module | None, splits: Splits, config: LoopConfig, *, store: Store | None = None,
                 name: str = "run", device: str | torch.device = "auto",
                 reinit: Callable[[], nn.Module] | None = None, progress: bool = False,
                 on_stage: Callable[[StageResult], None] | None = None, meta: dict | None = None,
                 oracle: Oracle | None = None, tracker=None, describe: dict | None = None):
        if model is None and reinit is None:
            raise ValueError("Give a model or a reinit factory.")
        pool = len(splits.pool)
        config.check_pool(pool)
        if config.train.adversarial and config.train.epsilon is None:
            raise ConfigError("Adversarial training needs TrainConfig.epsilon (use TrainConfig.for_dataset(dataset)).")
        self.splits, self.config, self.store, self.name = splits, config, store, name
        self.device = resolve_device(device)
        self.reinit, self.progress, self.on_stage, self.meta = reinit, progress, on_stage, meta or {}
        self.oracle = oracle if oracle is not None else DatasetOracle(splits.pool.y)
        self.tracker = tracker
        self.describe = describe or {}
        self.label_of = torch.full((pool,), -1, dtype=torch.int64)  # labels given so far (-1: not labeled)
        #: The stage after the stored ones is redone from new weights (see :meth:`redo_last_stage`).
        self.redo = False
        self.acquisition = create_acquisition(config.acquisition, **config.acquisition_options)
        self.model = self._fresh_model() if reinit is not None else model
        self.acquisition.check(self.model)  # a function the model cannot serve: refused before any training
        self.model.to(self.device)
        # The layout is set once, before anything runs, so that selection, training and evaluation (resumed or not)
        # always see the model in the same layout.
        apply_memory_format(self.model, self.device, config.train.memory_format, config.train.precision)
        self._initial_state = copy.deepcopy(self.model.state_dict())
        self._at_chance = False  # did the last finished stage end at chance?
        self._last_stage = len(config.stage_sizes()) - 1

    @property
    def at_chance(self) -> bool:
        """Whether the model of the last finished stage is at chance level (no better than a constant prediction)."""
        return self._at_chance

    def _fresh_model(self, *keys: object) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.config.seed, "model-init", *keys))
            return self.reinit()

    def _new_weights(self, *keys: object) -> dict:
        """A freshly initialised model's state, seeded by the run's seed and ``keys``."""
        if self.reinit is not None:
            return self._fresh_model(*keys).state_dict()
        model = copy.deepcopy(self.model).cpu()  # a model given through the API: reset every layer that can be
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.config.seed, "model-init", *keys))
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        return model.state_dict()

    def _reinitialise(self, stage: int) -> torch.optim.Optimizer:
        """New weights (seeded by the run's seed and ``stage``) in place, and a new optimizer for them."""
        self.model.load_state_dict(self._new_weights("reinit", stage))
        return make_optimizer(self.model, self.config.train)

    def _teacher(self, stage: int) -> nn.Module:
        """A new model (weights seeded by the run's seed and ``stage``) for the stage's self-training teacher."""
        teacher = copy.deepcopy(self.model)
        teacher.load_state_dict(self._new_weights("teacher", stage))
        return teacher

    def _described(self, stage: int, record: StageRecord) -> dict:
        """``describe`` with how this stage was evaluated (attack, seed, accuracies), for a stage checkpoint."""
        if not self.describe:
            return {}
        attack = self.config.eval_attack
        return {**self.describe, "evaluation": {
            "run": self.name, "stage": stage, "attack": None if attack is None else asdict(attack),
            "seed": self._seed("eval", stage), "clean": record.clean, "robust": record.robust}}

    def _seed(self, *keys: object) -> int:
        return derive_seed(self.config.seed, *keys)

    def run(self) -> RunResult:
        """Run (or resume) all stages; returns every stage's record."""
        cfg = self.config
        sizes = cfg.stage_sizes()
        optimizer = make_optimizer(self.model, cfg.train)
        labeled = torch.empty(0, dtype=torch.int64)
        records: list[StageRecord] = []
        start_stage = 0
        if self.store is not None:
            status = self.store.start_run(self.name, self._store_config(), cfg.seed, device=self.device)
            for i, y in self.store.labels(self.name).items():
                self.label_of[i] = y
            done = self.store.stages(self.name)
            if done and self.redo:  # the stage after them trains from new weights: no checkpoint to read
                last = done[-1].stage
                picks = self.store.selections(self.name)
                labeled = torch.tensor([i for s in range(last + 1) for i in picks.get(s, [])], dtype=torch.int64)
                records, start_stage = done, last + 1
                self._at_chance = bool(done[-1].at_chance)
            elif done:
                last = done[-1].stage
                state = self.store.load_checkpoint(self.name, last)
                self.model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                picks = self.store.selections(self.name)
                labeled = torch.tensor([i for s in range(last + 1) for i in picks.get(s, [])], dtype=torch.int64)
                if not torch.equal(labeled, state["labeled"]):
                    raise ConfigError(f"Run {self.name!r}: checkpoint and results disagree on the labeled set; "
                                      "the output folder was modified by hand.")
                self._label(last, labeled)  # labels of stores written before labels were kept: from the oracle
                self.store.prune_checkpoints(self.name, last)
                records, start_stage = done, last + 1
                self._at_chance = bool(done[-1].at_chance)
            if status not in ("new", "finished"):  # resumable: only now, once its checkpoint has been read
                self.store.set_status(self.name, "running")
            if status == "finished" and (start_stage >= len(sizes) or cfg.stopped(records)):
                if self._track_start(records):  # it may have been run without tracking: mirror it whole
                    self._track_result(records)
                    self.tracker.finish("finished")
                return RunResult(records, self.model, labeled)
        self._track_start(records)
        try:
            for stage in range(start_stage, len(sizes)):
                if cfg.stopped(records):
                    break
                result, optimizer = self._stage(stage, sizes[stage], labeled, optimizer)
                labeled = torch.cat([labeled, result.picked])
                records.append(result.record)
                if self.store is not None:
                    self.store.save_checkpoint(self.name, stage, {
                        **self._described(stage, result.record), "model": self.model.state_dict(),
                        "optimizer": optimizer.state_dict(), "labeled": labeled, "stage": stage})
                    self.store.add_stage(self.name, result.record, result.picked, result.scores)
                    self.store.prune_checkpoints(self.name, stage)
                if self.tracker is not None:
                    self.tracker.log_stage(result.record)
                if self.on_stage is not None:
                    self.on_stage(result)
        except _Awaited as awaited:
            if self.store is not None:
                self.store.set_status(self.name, "waiting")
            if self.tracker is not None:
                self.tracker.finish("interrupted")
            where = self.oracle.awaited(awaited.stage, awaited.n)
            return RunResult(records, self.model, labeled, Waiting(awaited.stage, awaited.n, where))
        except BaseException as e:
            if self.store is not None:
                self.store.set_status(self.name, "interrupted")
            if self.tracker is not None:
                self.tracker.finish("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
        if self.store is not None:
            self.store.set_status(self.name, "finished")
        if self.tracker is not None:
            self._track_result(records)
            self.tracker.finish("finished")
        return RunResult(records, self.model, labeled)

    def redo_last_stage(self) -> int:
        """Train the last stored stage again, from new weights on the same labeled set (its picks and labels are
        kept, nothing is asked again): the way on when its checkpoint is lost or damaged (earlier stages' checkpoints
        are pruned, so the stage cannot continue from its predecessor's model). Call before :meth:`run`; returns the
        stage. Its stored row and checkpoint are removed now, and written again when :meth:`run` has trained it."""
        done = self.store.stages(self.name) if self.store is not None else []
        if not done:
            raise ConfigError(f"Run {self.name!r} has no finished stage to redo.")
        stage = done[-1].stage
        self.store.reopen_stage(self.name, stage)
        self.redo = True
        return stage

    def _track_start(self, records: list[StageRecord]) -> bool:
        """Start (or continue) the tracker's run with the stages stored so far (it skips those it has)."""
        if self.tracker is None:
            return False
        tags = {"robustal.out": str(self.store.root.resolve())} if self.store is not None else {}
        self.tracker.start(self.name, self._store_config(), tags)
        for record in records:
            self.tracker.log_stage(record)
        return True

    def _track_result(self, records: list[StageRecord]) -> None:
        """The finished run's final checkpoint (as stored) and model, with two pool images to export it on."""
        stored = self.store is not None and records
        checkpoint = self.store.checkpoint_path(self.name, records[-1].stage) if stored else None
        self.tracker.log_result(model=self.model, checkpoint=checkpoint, example=self.splits.pool.x[:2])

    def _store_config(self) -> dict:
        return {"loop": self.config.to_dict(), "model": type(self.model).__name__, "pool": len(self.splits.pool),
                "oracle": self.oracle.kind, **self.meta}

    def _label(self, stage: int, indices: torch.Tensor) -> torch.Tensor:
        """Labels of ``indices``: those already given (kept in the store), the rest from the oracle (and then kept);
        raises :class:`_Awaited` when the oracle has not answered yet."""
        missing = indices[self.label_of[indices] < 0]
        if len(missing):
            answers = self.oracle.labels(stage, missing)
            if answers is None:
                raise _Awaited(stage, len(missing))
            if self.store is not None:
                self.store.add_labels(self.name, stage, missing, answers)
            self.label_of[missing] = answers
        return self.label_of[indices]

    def _stage(self, stage: int, size: int, labeled: torch.Tensor,
               optimizer: torch.optim.Optimizer) -> tuple[StageResult, torch.optim.Optimizer]:
        """Select (stage 0: at random), label, train, evaluate; returns the result and the optimizer to go on with."""
        cfg = self.config
        t0 = time.perf_counter()
        pending = self.store.pending(self.name, stage) if self.store is not None else None
        if pending is not None:  # picked before, labels awaited: the same picks, never a new request
            selection = Selection(*pending)
        elif stage == 0:
            gen = make_generator(cfg.seed, "initial")
            selection = Selection(torch.randperm(len(self.splits.pool), generator=gen)[:size])
        else:
            ctx = SelectionContext(self.model, self.splits.pool.x, labeled, make_generator(cfg.seed, "select", stage),
                                   device=self.device, epsilon=cfg.train.epsilon)
            selection = self.acquisition.select(ctx, size)
        picked = selection.indices.to(torch.int64).cpu()
        if pending is None and self.store is not None:
            self.store.set_pending(self.name, stage, picked, selection.scores)
        self._label(stage, picked)
        t1 = time.perf_counter()
        all_labeled = torch.cat([labeled, picked])
        train = Split(self.splits.pool.x[all_labeled], self.label_of[all_labeled])
        unlabeled, pseudo = self._pool(stage, all_labeled, train)  # before a reset: the teacher may be the model
        if cfg.from_scratch and stage > 0:
            self.model.load_state_dict(self._initial_state)
            optimizer = make_optimizer(self.model, cfg.train)
        # The ε warm-up helps a model that has not learned yet: a fresh one, or (with recovery) one at chance.
        recovery = "warmup" if self._at_chance and cfg.chance_recovery != "none" else ""
        warm = stage == 0 or cfg.from_scratch or bool(recovery)
        train_cfg = cfg.train if warm else replace(cfg.train, epsilon_warmup=0)
        if unlabeled is not None:
            train_cfg = cfg.pool.train_config(train_cfg)
        result = fit(self.model, train, self.splits.val, train_cfg, optimizer=optimizer, device=self.device,
                     seed=self._seed("train", stage), progress=self.progress, desc=f"stage {stage} train",
                     unlabeled=unlabeled)
        if result.at_chance and cfg.chance_recovery == "reinit":
            result, optimizer, reinitialised = self._retry_from_scratch(stage, train, result, optimizer, unlabeled)
            recovery = "reinit" if reinitialised else recovery
        t2 = time.perf_counter()
        ev = evaluate(self.model, self.splits.test, cfg.eval_attack, device=self.device, seed=self._seed("eval", stage))
        t3 = time.perf_counter()
        self._at_chance = result.at_chance
        if result.at_chance:
            self._warn_at_chance(stage, len(all_labeled), result)
        record = StageRecord(stage=stage, labeled=len(all_labeled), clean=ev.clean, robust=ev.robust,
                             train_seconds=t2 - t1, select_seconds=t1 - t0, eval_seconds=t3 - t2,
                             best_epoch=result.best_epoch, val_score=result.best_score, val_clean=result.best_clean,
                             at_chance=result.at_chance, recovery=recovery,
                             pool_images=None if pseudo is None else len(pseudo.indices) if unlabeled else 0,
                             pseudo_accuracy=None if pseudo is None else pseudo.accuracy,
                             teacher_clean=None if pseudo is None else pseudo.teacher_clean)
        return StageResult(record, picked, selection.scores), optimizer

    def _pool(self, stage: int, labeled: torch.Tensor, train: Split) -> tuple[Unlabeled | None, PseudoLabels | None]:
        """The pool images stage ``stage`` trains on (with their pseudo-labels), if it uses the pool."""
        pool = self.config.pool
        if not pool.used_at(stage, self._last_stage):
            return None, None
        unlabeled = torch.ones(len(self.splits.pool), dtype=torch.bool)
        unlabeled[labeled] = False
        true_labels = self.splits.pool.y if isinstance(self.oracle, DatasetOracle) else None
        pseudo = pseudo_label(pool, pool_x=self.splits.pool.x, unlabeled=unlabeled.nonzero().squeeze(1), labeled=train,
                              val=self.splits.val, model=self.model if stage > 0 else None,
                              fresh_model=lambda: self._teacher(stage), train=self.config.train, device=self.device,
                              seed=self._seed("teacher", stage), true_labels=true_labels)
        if len(pseudo.indices) == 0:
            why = (f"its teacher is at chance level (validation clean accuracy {pseudo.teacher_clean:.3f})"
                   if pseudo.teacher_at_chance else
                   f"no pseudo-label reaches the confidence threshold {pool.confidence}")
            fix = ("lower the confidence threshold (--pool-confidence)" if not pseudo.teacher_at_chance else
                   "use the standard teacher (--teacher standard)" if pool.teacher == "model" else
                   "raise the teacher's epochs (--teacher-epochs)")
            warnings.warn(f"Run {self.name!r}, stage {stage}: the unlabeled pool is not used, as {why}; the stage "
                          f"trains on its {len(labeled)} labels alone ({fix}).", PoolWarning, stacklevel=2)
            return None, pseudo
        return Unlabeled(self.splits.pool.x[pseudo.indices], pseudo.labels,
                         pool.pool_batch(self.config.train.batch_size), pool.weight,
                         self.config.train.trades_beta), pseudo

    def _retry_from_scratch(self, stage: int, train: Split, first: FitResult, optimizer: torch.optim.Optimizer,
                            unlabeled: Unlabeled | None) -> tuple[FitResult, torch.optim.Optimizer, bool]:
        """Train the stage again from new weights (with the ε warm-up); keep whichever validates better."""
        kept = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(optimizer.state_dict()))
        new_optimizer = self._reinitialise(stage)
        train_cfg = self.config.train if unlabeled is None else self.config.pool.train_config(self.config.train)
        second = fit(self.model, train, self.splits.val, train_cfg, optimizer=new_optimizer,
                     device=self.device, seed=self._seed("train", stage, "reinit"), progress=self.progress,
                     desc=f"stage {stage} retrain", unlabeled=unlabeled)
        if (second.best_score, second.best_clean or 0.0) >= (first.best_score, first.best_clean or 0.0):
            return second, new_optimizer, True
        self.model.load_state_dict(kept[0])
        optimizer.load_state_dict(kept[1])
        return first, optimizer, False

    def _warn_at_chance(self, stage: int, labeled: int, result: FitResult) -> None:
        hint = {"none": "it continues as it is (chance_recovery='none')",
                "warmup": "the next stage trains with the epsilon warm-up",
                "reinit": "retraining from new weights did not help; the next stage trains with the epsilon warm-up"}
        warnings.warn(f"Run {self.name!r}, stage {stage} ({labeled} labels): validation clean accuracy "
                      f"{result.best_clean:.3f} is at chance level (predicting the majority class scores "
                      f"{result.chance_level:.3f}): the model has not learned yet; "
                      f"{hint[self.config.chance_recovery]}. The stage is flagged at_chance in the results.",
                      ChanceLevelWarning, stacklevel=2)


def run_active_learning(model: nn.Module, pool: Split, val: Split, test: Split, config: LoopConfig, *,
                        store: Store | None = None, name: str = "run", device: str | torch.device = "auto",
                        progress: bool = False,
                        oracle: Oracle | Callable[[torch.Tensor, torch.Tensor], object] | None = None) -> RunResult:
    """The loop on your own model and tensors.

    ``oracle``: where labels come from -- default the pool's labels; or a function ``fn(indices, images) ->
    labels`` (e.g. one that asks a person; returning None stops the run until it is run again), or an
    :class:`~robustal.labeling.oracle.Oracle`.

    Example:
        >>> pool = Split(x_pool, y_pool)            # uint8 (N, C, H, W) or float in [0, 1]; int64 labels
        >>> cfg = LoopConfig(acquisition="dre", initial=100, per_stage=100, budget=500,
        ...                  train=TrainConfig(mode="pgd", epsilon=0.3, epochs=5),
        ...                  eval_attack=AttackConfig("pgd", 0.3, 0.01, 50))
        >>> result = run_active_learning(my_model, pool, val, test, cfg)
        >>> [(s.labeled, s.clean, s.robust) for s in result.stages]
    """
    if oracle is not None and not isinstance(oracle, Oracle):
        oracle = CallableOracle(oracle, pool.x)
    loop = ActiveLearningLoop(model, Splits(pool, val, test), config, store=store, name=name, device=device,
                              progress=progress, oracle=oracle)
    return loop.run()
