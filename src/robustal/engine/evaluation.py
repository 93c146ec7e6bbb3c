"""Clean and robust accuracy. Robust accuracy attacks only the points still classified correctly, and counts an image
as not robust as soon as any iterate of the attack misclassifies it (:meth:`AttackConfig.robust`: the worst case
over iterates, as AutoAttack counts; never weaker than judging the last iterate only, and cheaper, since a fooled
image leaves the attack's batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from robustal._runtime import make_generator
from robustal.data.dataset import Dataset, Split, to_float
from robustal.engine.attacks import AttackConfig
from robustal.models.base import frozen

#: PGD-50 with random start, as in the paper's evaluation.
EVAL_STEPS = 50


def eval_step_size(epsilon: float, paper_step: float, steps: int) -> float:
    """The PGD step of a ``steps``-step evaluation: the paper's step for PGD-50 (and more), else ``2.5·ε/steps``.

    Fewer steps of the paper's small step make a weak attack (PGD-20 at 0.01 travels 0.2 < ε = 0.3, weaker than the
    training attack's 2.5·ε/k), so a reduced-step evaluation takes Madry et al.'s step, and never a smaller one.
    """
    return paper_step if steps >= EVAL_STEPS else max(paper_step, 2.5 * epsilon / steps)


def paper_attack(dataset: Dataset, steps: int = EVAL_STEPS, name: str = "pgd") -> AttackConfig:
    """The paper's evaluation attack for ``dataset``: PGD-50 with its ε and step (0.3/0.01 MNIST, 8/255 CIFAR);
    fewer steps get a larger step (:func:`eval_step_size`)."""
    return AttackConfig(name=name, epsilon=dataset.epsilon, step_size=eval_step_size(dataset.epsilon,
                        dataset.step_size, steps), steps=steps, random_start=True)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy on clean inputs and under attack (None when no attack was run), over ``n`` samples."""

    clean: float
    robust: float | None
    n: int


class RobustTest(Protocol):
    """What :func:`robust_mask` needs of an attack: :meth:`AttackConfig.robust`'s signature (an
    :class:`AttackConfig`, or an attack with options it lacks, such as Square's query count)."""

    def robust(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor: ...


def accuracy_masks(model: nn.Module, data: Split, attack: RobustTest | None = None, *, batch_size: int = 500,
                   device: torch.device | str = "cpu", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per image of ``data``: whether ``model`` classifies it correctly, and (if ``attack`` is given) whether it
    withstands the attack -- two ``(n,)`` bool tensors on ``device``; an image misclassified clean is not robust.

    The loop of :func:`evaluate` (which counts these masks): the same batches, the same generator, so the masks of
    one ``seed`` give exactly :func:`evaluate`'s accuracies. The model runs in eval mode with parameter gradients off;
    its mode and flags are restored afterwards.
    """
    n = len(data)
    gen = make_generator(seed, "evaluate", device=device)
    correct = torch.zeros(n, dtype=torch.bool, device=device)
    robust = torch.zeros(n, dtype=torch.bool, device=device) if attack is not None else None
    with frozen(model):
        for start in range(0, n, batch_size):
            x = to_float(data.x[start:start + batch_size], device)
            y = data.y[start:start + batch_size].to(device)
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            correct[start:start + len(y)] = ok
            if robust is not None and ok.any():
                index = start + torch.nonzero(ok).squeeze(1)
                robust[index] = attack.robust(model, x[ok], y[ok], generator=gen)
    return correct, robust


def robust_mask(model: nn.Module, data: Split, attack: RobustTest, *, batch_size: int = 500,
                device: torch.device | str = "cpu", seed: int = 0) -> torch.Tensor:
    """Whether each image of ``data`` withstands ``attack``: ``(n,)`` bool, False where it is misclassified clean.

    Its mean is :func:`evaluate`'s robust accuracy for the same ``seed``; masks of several attacks combine per image
    (:func:`robustal.engine.masking.best_known`)."""
    return accuracy_masks(model, data, attack, batch_size=batch_size, device=device, seed=seed)[1]


def evaluate(model: nn.Module, data: Split, attack: AttackConfig | None = None, *, batch_size: int = 500,
             device: torch.device | str = "cpu", seed: int = 0) -> EvalResult:
    """Clean accuracy of ``model`` on ``data`` and, if ``attack`` is given, robust accuracy under it.

    The model runs in eval mode with parameter gradients off; its mode and flags are restored afterwards.
    """
    return from_masks(*accuracy_masks(model, data, attack, batch_size=batch_size, device=device, seed=seed))


def from_masks(correct: torch.Tensor, robust: torch.Tensor | None) -> EvalResult:
    """The :class:`EvalResult` of :func:`accuracy_masks`'s masks (NaN accuracies for no images)."""
    n = len(correct)
    if n == 0:
        return EvalResult(float("nan"), float("nan") if robust is not None else None, 0)
    return EvalResult(int(correct.sum()) / n, int(robust.sum()) / n if robust is not None else None, n)
