"""Adversarial training that also uses the unlabeled pool: robust self-training and the label-free consistency term.

An active-learning run holds thousands of images it never labels. Two ways to train on them, both from the
adversarial-robustness literature, are offered under ``pgd`` and ``trades`` training:

- ``self-training`` (robust self-training, Carmon et al., NeurIPS 2019): a *teacher* pseudo-labels the unlabeled
  images (:mod:`robustal.loop.pseudo_labels`), and adversarial training treats labeled and pseudo-labeled images alike,
  the pseudo-labeled ones weighted by :attr:`PoolConfig.weight`;
- ``consistency`` (UAT-OT, Uesato, Alayrac et al., NeurIPS 2019): no pseudo-labels; the labeled images get the
  training's own loss, and the unlabeled ones TRADES's robustness term β·KL(p(x) ‖ p(x_adv)) alone.

How batches mix: every optimizer step takes the usual batch of labeled images (the same batches, in the same
order, as training without the pool) plus ``round(batch_size · share / (1 − share))`` pool images, drawn from
shuffled passes over the unlabeled images. A stage's optimizer steps are those of training without the pool, so its
cost grows by the factor ``1 / (1 − share)`` (2 at Carmon's share of one half), never with the pool's size --
unless :attr:`PoolConfig.steps` sets a floor on a stage's steps with the pool: a setting, not the pool's size, again.

A pseudo-label is never a label: it lives in memory for one stage's training, is never stored as a label, never
exported and never counted; the store keeps only how many pool images were used and, where the true labels are known
(a study), how accurate the teacher and its pseudo-labels were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from robustal._validation import check_choice, check_float, check_int
from robustal.engine.attacks import AttackConfig, trades_adversary

if TYPE_CHECKING:  # training imports this module
    from robustal.engine.training import TrainConfig

#: How a run uses its unlabeled pool for training (``none``: it does not, the paper's setting).
POOL_MODES = ("none", "self-training", "consistency")
#: Who pseudo-labels the pool for ``self-training``: a model trained (standard training) on the stage's labels, or
#: the run's own model as the previous stage left it (the first stage, with no such model, uses ``standard``).
TEACHERS = ("standard", "model")
#: At which stages the pool is used: every stage, or only the last one (cheaper; the final model still uses it).
POOL_STAGES = ("all", "last")


@dataclass(frozen=True)
class PoolConfig:
    """How a run trains on its unlabeled pool (see the module docstring).

    Attributes:
        mode: ``none``, ``self-training`` or ``consistency`` (:data:`POOL_MODES`).
        share: The pool's share of each training batch, in [0, 1): 0.5 (Carmon et al.) adds as many pool images as
            there are labeled ones.
        weight: Weight of the pool images' loss against the labeled images' (1: alike, as Carmon et al.).
        teacher: ``standard`` or ``model`` (:data:`TEACHERS`), for ``self-training``.
        teacher_epochs: Epochs of the ``standard`` teacher's training on the stage's labels (best validation clean
            accuracy kept).
        confidence: Pseudo-labels whose teacher probability is below this are not used (0: all are, as Carmon).
        stages: ``all`` or ``last`` (:data:`POOL_STAGES`).
        steps: At least this many optimizer steps in a stage that trains on the pool (0: the steps of its labels
            alone, ``TrainConfig.min_steps`` included). The pool holds thousands of images where the labels are
            hundreds: at 1 000 labels a stage's 100 steps show each of 7 000 pool images about twice, where training
            on all of it once took 30 epochs. The cost of such a stage is bounded by this setting.
    """

    mode: str = "none"
    share: float = 0.5
    weight: float = 1.0
    teacher: str = "standard"
    teacher_epochs: int = 30
    confidence: float = 0.0
    stages: str = "all"
    steps: int = 0

    def __post_init__(self) -> None:
        caller = "PoolConfig"
        check_choice(self.mode, "mode", caller, POOL_MODES)
        check_choice(self.teacher, "teacher", caller, TEACHERS)
        check_choice(self.stages, "stages", caller, POOL_STAGES)
        check_float(self.share, "share", caller, min_value=0, max_value=1, max_inclusive=False)
        check_float(self.weight, "weight", caller, min_value=0)
        check_float(self.confidence, "confidence", caller, min_value=0, max_value=1, max_inclusive=False)
        check_int(self.teacher_epochs, "teacher_epochs", caller, min_value=1)
        check_int(self.steps, "steps", caller, min_value=0)
        if self.enabled and self.share == 0:
            from robustal.errors import ConfigError

            raise ConfigError(f"A pool share of 0 adds no pool image to a batch, so pool mode {self.mode!r} would "
                              "train on the labels alone: give a share in (0, 1) (--pool-share), or leave the pool out "
                              "(--pool-training none).")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def used_at(self, stage: int, last_stage: int) -> bool:
        """Whether stage ``stage`` (of a run whose last stage is ``last_stage``) trains on the pool."""
        return self.enabled and (self.stages == "all" or stage == last_stage)

    def train_config(self, train: TrainConfig) -> TrainConfig:
        """``train`` for a stage that trains on the pool: its ``min_steps`` raised to :attr:`steps`."""
        return train if self.steps <= train.min_steps else replace(train, min_steps=self.steps)

    def pool_batch(self, batch_size: int) -> int:
        """Pool images added to a batch of ``batch_size`` labeled ones (at least one when the share is positive)."""
        return 0 if self.share == 0 else max(1, round(batch_size * self.share / (1 - self.share)))

    def to_dict(self) -> dict:
        return asdict(self)


def training_label(mode: str, pool_mode: str | None) -> str:
    """The name of a run's training in reports and run names: ``pgd``, or ``pgd+self-training`` with the pool."""
    return mode if pool_mode in (None, "none") else f"{mode}+{pool_mode}"


@dataclass(frozen=True)
class Unlabeled:
    """One stage's pool images for :func:`robustal.engine.training.fit`.

    Attributes:
        x: uint8 images ``(m, C, H, W)`` (m ≥ 1).
        targets: Pseudo-labels ``(m,)`` for ``self-training``; None for ``consistency``.
        per_batch: Pool images added to each labeled batch.
        weight: Their loss's weight.
        beta: Weight of the KL robustness term (the training's TRADES β) for ``consistency`` and under ``trades``.
    """

    x: torch.Tensor
    targets: torch.Tensor | None
    per_batch: int
    weight: float = 1.0
    beta: float = 6.0

    def __post_init__(self) -> None:
        if len(self.x) == 0:
            raise ValueError("Unlabeled needs at least one pool image.")
        if self.targets is not None and len(self.targets) != len(self.x):
            raise ValueError(f"Unlabeled: {len(self.targets)} targets for {len(self.x)} images.")

    def batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Endless index batches of ``per_batch``: shuffled passes over the pool images, a batch may span two."""
        m = len(self.x)
        buffer = torch.empty(0, dtype=torch.int64)
        while True:
            while len(buffer) < self.per_batch:
                buffer = torch.cat([buffer, torch.randperm(m, generator=generator)])
            yield buffer[:self.per_batch]
            buffer = buffer[self.per_batch:]


def _kl_rows(logits_adv: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p(x) ‖ p(x_adv)) ``(n,)``, in fp32."""
    return F.kl_div(F.log_softmax(logits_adv.float(), 1), F.softmax(logits.float(), 1), reduction="none").sum(1)


def _trades_adversary(model: nn.Module, x: torch.Tensor, attack: AttackConfig,
                      generator: torch.Generator | None) -> torch.Tensor:
    """TRADES's KL-maximising adversary, found in eval mode as the authors do."""
    was_training = model.training
    model.eval()
    x_adv = trades_adversary(model, x, epsilon=attack.epsilon, step_size=attack.step_size, steps=attack.steps,
                             generator=generator)
    model.train(was_training)
    return x_adv


def pool_loss(model: nn.Module, mode: str, x: torch.Tensor, y: torch.Tensor, xu: torch.Tensor,
              unlabeled: Unlabeled, tu: torch.Tensor | None, attack: AttackConfig,
              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of one mixed batch: labeled ``(x, y)`` and pool images ``xu`` (with pseudo-labels ``tu``, or None).

    Args:
        mode: The training mode, ``pgd`` or ``trades``.
        attack: The (epoch's) training attack.

    Returns:
        The loss, and the logits of the labeled images (for the training accuracy).
    """
    n, m, w, beta = len(x), len(xu), unlabeled.weight, unlabeled.beta
    weights = torch.cat([torch.ones(n, device=x.device), torch.full((m,), w, device=x.device)])
    if tu is not None:  # self-training: pseudo-labeled images are trained on like labeled ones, weighted
        xs, ys = torch.cat([x, xu]), torch.cat([y, tu])
        if mode == "pgd":
            logits = model(attack.run(model, xs, ys, generator=generator))
            loss = (F.cross_entropy(logits.float(), ys, reduction="none") * weights).sum() / (n + m)
            return loss, logits[:n]
        x_adv = _trades_adversary(model, xs, attack, generator)
        logits, logits_adv = model(xs), model(x_adv)
        rows = F.cross_entropy(logits.float(), ys, reduction="none") + beta * _kl_rows(logits_adv, logits)
        return (rows * weights).sum() / (n + m), logits_adv[:n]
    # consistency: the labeled images' own loss; TRADES's robustness term alone on the pool images
    xu_adv = _trades_adversary(model, xu, attack, generator)
    if mode == "pgd":
        logits = model(attack.run(model, x, y, generator=generator))
        kl = _kl_rows(model(xu_adv), model(xu))
        return F.cross_entropy(logits.float(), y) + beta * w * kl.mean(), logits
    x_adv = _trades_adversary(model, x, attack, generator)
    xs, xs_adv = torch.cat([x, xu]), torch.cat([x_adv, xu_adv])
    logits, logits_adv = model(xs), model(xs_adv)
    kl = (_kl_rows(logits_adv, logits) * weights).sum() / (n + m)
    return F.cross_entropy(logits[:n].float(), y) + beta * kl, logits_adv[:n]


__all__ = ["POOL_MODES", "POOL_STAGES", "TEACHERS", "PoolConfig", "Unlabeled", "pool_loss", "training_label"]
