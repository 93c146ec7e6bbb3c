"""The teacher of robust self-training: it pseudo-labels a stage's unlabeled pool images.

A ``standard`` teacher is a freshly initialised copy of the run's model trained (standard training, the best
validation clean accuracy kept) on the stage's labels; a ``model`` teacher is the run's own model as the previous
stage left it. Carmon et al. used a standard-trained teacher: it is more accurate than a robust model at the same
labels, and its errors are what robust training on the pseudo-labels inherits. The teacher's validation clean
accuracy and, where the pool's true labels are known (a study), the pseudo-labels' accuracy are returned for the
store: they say how much of the pool's help is noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from robustal.acquisition.inference import predict
from robustal.data.dataset import Split
from robustal.engine.evaluation import evaluate
from robustal.engine.pool_training import PoolConfig
from robustal.engine.training import TrainConfig, chance_level, fit, is_at_chance


@dataclass(frozen=True)
class PseudoLabels:
    """A stage's use of the pool.

    Attributes:
        indices: Pool indices of the unlabeled images trained on (``self-training``: those whose pseudo-label is
            confident enough).
        labels: Their pseudo-labels (None for ``consistency``).
        teacher_clean: The teacher's validation clean accuracy (None without a teacher or validation split).
        accuracy: The pseudo-labels' accuracy against the true labels, where those are known.
        teacher_at_chance: The teacher is no better than a constant prediction (its pseudo-labels are not used).
    """

    indices: torch.Tensor
    labels: torch.Tensor | None
    teacher_clean: float | None = None
    accuracy: float | None = None
    teacher_at_chance: bool = False


def teacher_config(train: TrainConfig, pool: PoolConfig) -> TrainConfig:
    """The ``standard`` teacher's training: the run's optimizer, batches and augmentation, standard training for
    ``pool.teacher_epochs`` epochs, every epoch validated."""
    return replace(train, mode="standard", epochs=pool.teacher_epochs, validate_last=None)


def pseudo_label(pool: PoolConfig, *, pool_x: torch.Tensor, unlabeled: torch.Tensor, labeled: Split,
                 val: Split | None, model: nn.Module | None, fresh_model: Callable[[], nn.Module],
                 train: TrainConfig, device: torch.device | str, seed: int,
                 true_labels: torch.Tensor | None = None) -> PseudoLabels:
    """The pool images (and pseudo-labels) one stage trains on.

    Args:
        pool: The run's :class:`PoolConfig` (``self-training`` or ``consistency``).
        pool_x: The whole pool's uint8 images.
        unlabeled: Pool indices without a label.
        labeled: The stage's labeled images (the ``standard`` teacher trains on them).
        val: The validation split (the teacher's best epoch and accuracy).
        model: The run's model as the previous stage left it (the ``model`` teacher); None at the first stage.
        fresh_model: Builds a newly initialised model, seeded by the caller, on ``device`` (the ``standard`` teacher).
        train: The run's training settings (the teacher borrows its optimizer, batches and augmentation).
        true_labels: The pool's true labels, where known (a study): the pseudo-labels' accuracy is measured.
    """
    if pool.mode == "consistency":
        return PseudoLabels(unlabeled, None)
    if pool.teacher == "model" and model is not None:
        teacher = model
    else:
        teacher = fresh_model()
        fit(teacher, labeled, val, teacher_config(train, pool), device=device, seed=seed)
    teacher_clean = evaluate(teacher, val, device=device).clean if val is not None and len(val) else None
    if teacher_clean is not None and is_at_chance(teacher_clean, chance_level(val.y)):
        return PseudoLabels(unlabeled[:0], unlabeled[:0], teacher_clean, None, teacher_at_chance=True)
    with torch.no_grad():
        probs = predict(teacher, pool_x[unlabeled], device=device).probs
    confidence, labels = probs.max(1)
    keep = confidence >= pool.confidence
    indices, labels = unlabeled[keep], labels[keep]
    accuracy = None
    if true_labels is not None and len(indices):
        accuracy = float((labels == true_labels[indices]).float().mean())
    return PseudoLabels(indices, labels, teacher_clean, accuracy)


__all__ = ["PseudoLabels", "pseudo_label", "teacher_config"]
