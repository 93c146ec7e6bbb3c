"""The training engine lives in :mod:`robustal.engine.training`; this module keeps the public import path."""
from robustal.engine.training import (
    AUGMENTATIONS,
    CHANCE_FACTOR,
    OPTIMIZERS,
    PRECISIONS,
    TRAINING_MODES,
    FitResult,
    TrainConfig,
    augment_batch,
    chance_level,
    fit,
    is_at_chance,
    make_optimizer,
)

__all__ = ["AUGMENTATIONS", "CHANCE_FACTOR", "FitResult", "OPTIMIZERS", "PRECISIONS", "TRAINING_MODES", "TrainConfig",
           "augment_batch", "chance_level", "fit", "is_at_chance", "make_optimizer"]
