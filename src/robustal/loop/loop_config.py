"""The settings of one active-learning run (:class:`LoopConfig`), checked when it is built.

Kept apart from the loop that runs them (:mod:`robustal.loop.active`), so that what a run is asked to do, and what
is refused before it starts, reads in one place, apart from how its stages run. ``robustal.loop`` re-exports
:class:`LoopConfig` (and ``robustal.loop.active`` still names it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from robustal._validation import check_choice, check_int
from robustal.acquisition import create_acquisition
from robustal.engine.attacks import AttackConfig
from robustal.engine.pool_training import PoolConfig
from robustal.engine.training import TrainConfig
from robustal.errors import ConfigError
from robustal.loop.stopping import StoppingRule
from robustal.storage.schema import StageRecord

#: The largest seed: seeds are stored in SQLite and seed NumPy and torch, and 32 bits suit all three.
MAX_SEED = 2**32 - 1
#: What the loop does about a model at chance level (see :attr:`LoopConfig.chance_recovery`).
CHANCE_RECOVERIES = ("none", "warmup", "reinit")


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one active-learning run.

    Attributes:
        acquisition: Registered acquisition function name (see ``robustal.acquisition.list_acquisitions``).
        acquisition_options: Keyword options for it (e.g. ``{"bins": 50}`` for ``dre``).
        initial: Size of the random initial labeled set.
        per_stage: Samples labeled per stage (the last stage takes what is left of the budget).
        budget: Total number of labels, initial set included.
        train: How each stage trains (``TrainConfig.epsilon`` must be set for ``pgd``).
        eval_attack: The attack of the per-stage robust accuracy (None: clean accuracy only).
        from_scratch: Re-initialise model and optimizer at each stage instead of continuing.
        chance_recovery: What to do about a model at chance level (validation clean accuracy no better than a
            constant prediction, see :attr:`robustal.engine.training.FitResult.at_chance`). Every such stage is flagged
            in the store and warned about (:class:`~robustal.errors.ChanceLevelWarning`); ``warmup`` also trains the
            next stage with the ε warm-up, as for a fresh model; ``reinit`` does that, and trains a stage that ends
            at chance once more from freshly initialised weights and optimizer, keeping the better of the two by
            validation.
        seed: Seeds the initial set, the model's initialisation, training, selection and evaluation.
        pool: Training on the unlabeled pool images too (:mod:`robustal.engine.pool_training`; default: not).
        stop: End the run before its budget once this :class:`~robustal.loop.stopping.StoppingRule` says labeling has
            stopped paying (None: run to the budget).
    """

    acquisition: str = "dre"
    acquisition_options: dict = field(default_factory=dict)
    initial: int = 100
    per_stage: int = 100
    budget: int = 1000
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_attack: AttackConfig | None = None
    from_scratch: bool = False
    chance_recovery: str = "reinit"
    seed: int = 0
    pool: PoolConfig = field(default_factory=PoolConfig)
    stop: StoppingRule | None = None

    def __post_init__(self) -> None:
        caller = "LoopConfig"
        if isinstance(self.pool, dict):
            object.__setattr__(self, "pool", PoolConfig(**self.pool))
        if isinstance(self.stop, dict):
            object.__setattr__(self, "stop", StoppingRule(**self.stop))
        if self.pool.enabled and not self.train.adversarial:
            raise ConfigError(f"Training on the unlabeled pool (pool mode {self.pool.mode!r}) is for adversarial "
                              f"training; the training mode is {self.train.mode!r}: use pgd or trades (--training), "
                              "or leave the pool out (--pool-training none).")
        check_choice(self.chance_recovery, "chance_recovery", caller, CHANCE_RECOVERIES)
        check_int(self.initial, "initial", caller, min_value=1)
        check_int(self.per_stage, "per_stage", caller, min_value=1)
        check_int(self.budget, "budget", caller, min_value=1)
        check_int(self.seed, "seed", caller, min_value=0, max_value=MAX_SEED)
        if self.initial > self.budget:
            raise ConfigError(f"The initial labeled set ({self.initial}) is larger than the budget ({self.budget}); "
                              "lower the initial set (--initial) or raise the budget (--budget).")
        create_acquisition(self.acquisition, **self.acquisition_options)  # unknown name or bad option: fail now

    def check_pool(self, pool_size: int) -> None:
        """Refuse a budget larger than the pool (before any output is written)."""
        if self.budget > pool_size:
            raise ConfigError(f"The budget ({self.budget}) is larger than the pool ({pool_size} samples); "
                              f"lower --budget to at most {pool_size}.")
        if self.pool.enabled and self.budget >= pool_size:
            raise ConfigError(f"Training on the unlabeled pool (pool mode {self.pool.mode!r}) needs unlabeled images, "
                              f"but the budget ({self.budget}) labels the whole pool ({pool_size} samples): lower "
                              "--budget or leave the pool out (--pool-training none).")

    def stage_sizes(self) -> list[int]:
        """Labels added at each stage: ``[initial, per_stage, ..., remainder]`` summing to ``budget``."""
        sizes, total = [self.initial], self.initial
        while total < self.budget:
            sizes.append(min(self.per_stage, self.budget - total))
            total += sizes[-1]
        return sizes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train"] = self.train.to_dict()
        return d

    def stopped(self, records: list[StageRecord]) -> bool:
        """Whether the stopping rule (if any) says the stages so far are enough."""
        return self.stop is not None and self.stop.stop_stage([r.val_score for r in records]) is not None


__all__ = ["CHANCE_RECOVERIES", "MAX_SEED", "LoopConfig"]
