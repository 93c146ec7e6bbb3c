"""Acquisition functions that need input gradients: EGL and DFAL.

Both run the model in eval mode with parameter gradients off (:func:`robustal.models.base.frozen`), so each sample's
input gradient is independent of the rest of its batch and ``autograd.grad(f[:, c].sum(), x)`` yields every
sample's gradient for class ``c`` in one backward pass: C passes per batch, never one per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustal._validation import check_float, check_int
from robustal.acquisition.base import Acquisition, ScoreAcquisition, SelectionContext, register_acquisition
from robustal.data.dataset import to_float
from robustal.engine.attacks import deepfool
from robustal.models.base import frozen


def expected_gradient_length(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                             device: torch.device | str = "cpu") -> torch.Tensor:
    """EGL score ``Σ_c p_c · ‖∇_x CE(f(x), c)‖₂`` of each image (Settles et al. 2008, on the input gradient).

    ``∇_x CE(f(x), c) = −∇_x log p_c(x)``; for each batch, C backward passes of ``log p[:, c].sum()`` give all of
    the batch's per-sample, per-class gradients. The probabilities ``p`` weigh the norms and are not differentiated.

    Args:
        x: uint8 or float images ``(n, C, H, W)``.

    Returns:
        ``(n,)`` float32 scores on the CPU.
    """
    scores = []
    with frozen(model):
        for start in range(0, len(x), batch_size):
            xb = to_float(x[start:start + batch_size], device).requires_grad_(True)
            logp = F.log_softmax(model(xb).float(), 1)  # (b, classes)
            p = logp.detach().exp()
            classes = logp.shape[1]
            score = torch.zeros(len(xb), device=xb.device)
            for c in range(classes):
                (g,) = torch.autograd.grad(logp[:, c].sum(), xb, retain_graph=c < classes - 1)
                score += p[:, c] * g.flatten(1).norm(dim=1)
            scores.append(score.cpu())
    return torch.cat(scores) if scores else torch.empty(0)


@register_acquisition("egl")
def egl_acquisition() -> Acquisition:
    """Highest expected gradient length Σ_c p_c·‖∇_x loss(x, c)‖ (Settles et al. 2008)."""
    return ScoreAcquisition(lambda ctx: expected_gradient_length(ctx.model, ctx.pool_x[ctx.unlabeled],
                                                                 batch_size=ctx.batch_size, device=ctx.device))


def deepfool_distances(model: nn.Module, x: torch.Tensor, *, attempts: int = 10, overshoot: float = 0.02,
                       max_iter: int = 50, num_classes_limit: int = 10, batch_size: int = 1024,
                       device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norm of the DeepFool perturbation that flips each prediction, with restarts.

    A sample whose prediction has not flipped after one DeepFool run starts another from the last point reached,
    up to ``attempts`` runs (the reference: 10), unless the run did not move it at all (a vanishing gradient).

    Returns:
        ``(norms, flipped)`` on the CPU: ``‖x_adv − x‖₂`` ``(n,)`` and whether the prediction changed ``(n,)``.
    """
    norms, flips = [], []
    for start in range(0, len(x), batch_size):
        x0 = to_float(x[start:start + batch_size], device)
        x_adv = x0
        flipped = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
        todo = torch.arange(len(x0), device=x0.device)
        for _ in range(attempts):
            _, f, adv = deepfool(model, x_adv[todo], overshoot=overshoot, max_iter=max_iter,
                                 num_classes_limit=num_classes_limit)
            moved = (adv != x_adv[todo]).flatten(1).any(1)
            x_adv = x_adv.clone()
            x_adv[todo] = adv
            flipped[todo[f]] = True
            todo = todo[~f & moved]
            if not len(todo):
                break
        norms.append((x_adv - x0).flatten(1).norm(dim=1).cpu())
        flips.append(flipped.cpu())
    if not norms:
        return torch.empty(0), torch.zeros(0, dtype=torch.bool)
    return torch.cat(norms), torch.cat(flips)


class DeepFoolActiveLearning(Acquisition):
    """DFAL (Ducoffe & Precioso 2018): the smallest DeepFool perturbations, on a random subset of the pool.

    ``min(candidate_factor·n, unlabeled)`` candidates are drawn with the selection's generator and ranked ascending
    by the L2 norm of the perturbation that flips their prediction; samples that could not be flipped come last
    (score ``inf``); equal norms go to the lower pool index.

    Args:
        candidate_factor: Candidates per pick (the reference: 10).
        attempts: DeepFool runs per sample before it counts as unflippable (the reference: 10).
        overshoot, max_iter, num_classes_limit: DeepFool's (see :func:`robustal.engine.attacks.deepfool`).
    """

    def __init__(self, candidate_factor: int = 10, attempts: int = 10, overshoot: float = 0.02, max_iter: int = 50,
                 num_classes_limit: int = 10):
        self.candidate_factor = check_int(candidate_factor, "candidate_factor", "dfal", min_value=1)
        self.attempts = check_int(attempts, "attempts", "dfal", min_value=1)
        self.overshoot = check_float(overshoot, "overshoot", "dfal", min_value=0)
        self.max_iter = check_int(max_iter, "max_iter", "dfal", min_value=1)
        self.num_classes_limit = check_int(num_classes_limit, "num_classes_limit", "dfal", min_value=2)

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        available = len(ctx.unlabeled)
        m = min(self.candidate_factor * n, available)
        candidates = torch.randperm(available, generator=ctx.generator)[:m].sort().values
        norms, flipped = deepfool_distances(ctx.model, ctx.pool_x[ctx.unlabeled[candidates]], attempts=self.attempts,
                                            overshoot=self.overshoot, max_iter=self.max_iter,
                                            num_classes_limit=self.num_classes_limit, batch_size=ctx.batch_size,
                                            device=ctx.device)
        key = torch.where(flipped, norms, torch.inf)
        order = torch.sort(key, stable=True).indices[:n]
        return candidates[order], key[order]


@register_acquisition("dfal")
def dfal_acquisition(candidate_factor: int = 10, attempts: int = 10, overshoot: float = 0.02, max_iter: int = 50,
                     num_classes_limit: int = 10) -> Acquisition:
    """Smallest DeepFool perturbation norm, on a random subset of 10·n candidates (Ducoffe & Precioso 2018)."""
    return DeepFoolActiveLearning(candidate_factor, attempts, overshoot, max_iter, num_classes_limit)
