"""Batched L∞ attacks on tensors: PGD (Madry et al. 2018) and FGSM (Goodfellow et al. 2015).

Inputs are float images in [0, 1]; adversarial examples stay in [0, 1] and within ε of the input. Gradients are taken
with ``torch.autograd.grad`` with respect to the input only, so no parameter gradients build up, and every random
start comes from an explicit generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robustal._registry import Registry
from robustal._validation import check_choice, check_float, check_int
from robustal.models.base import frozen

Attack = Callable[..., torch.Tensor]
ATTACKS: Registry[Attack] = Registry("attack")


#: How an attack's iterates are judged (:meth:`AttackConfig.robust`): ``any-iterate`` -- an image fooled by any
#: point the attack tries is not robust (robustal's, as AutoAttack counts) -- or ``last-iterate`` (robustal 0.2's and
#: the paper's reference code: only the attack's last point is judged; every image runs every step).
RULES = ("any-iterate", "last-iterate")


@dataclass(frozen=True)
class AttackConfig:
    """An L∞ attack: ``name`` from :data:`ATTACKS`, budget ``epsilon``, ``steps`` of ``step_size``; ``rule``: how
    robust accuracy judges its iterates (:data:`RULES`)."""

    name: str = "pgd"
    epsilon: float = 0.3
    step_size: float = 0.01
    steps: int = 50
    random_start: bool = True
    rule: str = "any-iterate"

    def __post_init__(self) -> None:
        ATTACKS.get(self.name)
        check_choice(self.rule, "rule", "AttackConfig", RULES)
        check_float(self.epsilon, "epsilon", "AttackConfig", min_value=0, max_value=1)
        check_float(self.step_size, "step_size", "AttackConfig", min_value=0, max_value=1)
        check_int(self.steps, "steps", "AttackConfig", min_value=1)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """Adversarial examples for ``(x, y)`` under this configuration."""
        return ATTACKS.get(self.name)(model, x, y, epsilon=self.epsilon, step_size=self.step_size, steps=self.steps,
                                      random_start=self.random_start, generator=generator)

    def robust(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Whether each of ``(x, y)`` withstands this attack, ``(n,)`` bool. Under the ``any-iterate`` rule an image
        fooled by any point PGD tries counts as not robust (:func:`pgd_robust`; AutoAttack and Square count the same
        way internally); otherwise (and for the other attacks): whether the adversarial example the attack returns is
        still classified ``y``."""
        if self.name == "pgd" and self.rule == "any-iterate":
            return pgd_robust(model, x, y, epsilon=self.epsilon, step_size=self.step_size, steps=self.steps,
                              random_start=self.random_start, generator=generator)
        x_adv = self.run(model, x, y, generator)
        with torch.no_grad():
            return model(x_adv).argmax(1) == y


def _project(x_adv: torch.Tensor, x: torch.Tensor, epsilon: float) -> torch.Tensor:
    return torch.minimum(torch.maximum(x_adv, x - epsilon), x + epsilon).clamp_(0, 1)


def _random_start(x: torch.Tensor, epsilon: float, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.empty_like(x).uniform_(-epsilon, epsilon, generator=generator)
    return (x + noise).clamp_(0, 1)


def _input_grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():  # attacks work inside a caller's no_grad block too
        x_adv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


@ATTACKS.register("pgd")
def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent: ``steps`` signed-gradient ascent steps on the cross-entropy, projected to the ε-ball.

    Args:
        model: Maps ``(n, C, H, W)`` images in [0, 1] to logits; used in whatever mode it is in.
        x: Clean images, float in [0, 1].
        y: Labels ``(n,)``.
        random_start: Start from a uniform point of the ε-ball (drawn from ``generator``) instead of ``x``.

    Returns:
        Adversarial images with ``‖x_adv − x‖∞ ≤ epsilon`` in [0, 1], detached.
    """
    x = x.detach()
    x_adv = _random_start(x, epsilon, generator) if random_start else x.clone()
    for _ in range(steps):
        grad = _input_grad(model, x_adv, y)
        x_adv = _project(x_adv + step_size * grad.sign(), x, epsilon)
    return x_adv.detach()


def pgd_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float, steps: int,
               random_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD that stops on fooled images: ``(n,)`` bool, True where every iterate -- the start, each of the ``steps``
    steps, and the last -- is still classified ``y``.

    The worst case over iterates, as AutoAttack counts: an image counts as not robust as soon as any point PGD
    reaches misclassifies it, and it leaves the batch then. The forward pass that gives each step's gradient also
    judges that iterate, so an image that withstands the attack costs what it costs under :func:`pgd` (plus the last
    iterate's forward pass, which judging the last iterate needs anyway), and a fooled one costs less. For the same
    start the trajectory of every image is :func:`pgd`'s, so this is never weaker than judging the last iterate only.
    Run the model in eval mode (:func:`frozen`), so that an image's trajectory does not depend on its batch.
    """
    x = x.detach()
    x_adv = _random_start(x, epsilon, generator) if random_start else x.clone()
    robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
    active = torch.arange(len(x), device=x.device)
    for step in range(steps + 1):
        ya = y[active]
        with torch.enable_grad():
            xa = x_adv.detach().requires_grad_(step < steps)
            logits = model(xa)
            fooled = logits.argmax(1) != ya
            if step < steps:
                (grad,) = torch.autograd.grad(F.cross_entropy(logits, ya, reduction="sum"), xa)
        robust[active[fooled]] = False
        if step == steps:
            break
        keep = ~fooled
        active = active[keep]
        if not len(active):
            break
        x_adv = _project(xa.detach()[keep] + step_size * grad[keep].sign(), x[active], epsilon)
    return robust


@ATTACKS.register("fgsm")
def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float | None = None,
         steps: int = 1, random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``step_size`` (default ε), optionally from a random start."""
    x = x.detach()
    x_adv = _random_start(x, epsilon, generator) if random_start else x.clone()
    grad = _input_grad(model, x_adv, y)
    return _project(x_adv + (epsilon if step_size is None else step_size) * grad.sign(), x, epsilon).detach()


def trades_adversary(model: nn.Module, x: torch.Tensor, *, epsilon: float, step_size: float, steps: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """TRADES's inner maximisation (Zhang et al. 2019): PGD on ``KL(p(x) ‖ p(x_adv))`` within the ε-ball.

    Needs no labels: it pushes the prediction away from the clean one. It starts from ``x + 0.001·N(0, 1)`` (drawn
    from ``generator``), as the authors' code does, and runs the model in whatever mode it is in (the caller puts it
    in eval mode, as the authors do).

    Returns:
        Images with ``‖x_adv − x‖∞ ≤ epsilon`` in [0, 1], detached.
    """
    x = x.detach()
    with torch.no_grad():
        p_clean = F.softmax(model(x).float(), 1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_adv = _project(x + 0.001 * noise, x, epsilon)
    for _ in range(steps):
        with torch.enable_grad():
            x_adv = x_adv.detach().requires_grad_(True)
            loss = F.kl_div(F.log_softmax(model(x_adv).float(), 1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = _project(x_adv.detach() + step_size * grad.sign(), x, epsilon)
    return x_adv.detach()


def list_attacks(pattern: str = "*") -> list[str]:
    """Registered attack names matching ``pattern``."""
    return ATTACKS.names(pattern)


def _deepfool_batch(model: nn.Module, x0: torch.Tensor, overshoot: float, max_iter: int,
                    k_limit: int, clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepFool on one batch (model already frozen); returns ``(x_adv, flipped)``."""
    n = len(x0)
    with torch.no_grad():
        logits = model(x0)
    k = min(k_limit, logits.shape[1])
    # Candidate classes per sample, most likely first; column 0 is the prediction (equal logits: lower class).
    classes = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]  # (n, k)
    label = classes[:, 0]
    x_adv = x0.clone()
    r_tot = torch.zeros_like(x0)
    flipped = torch.zeros(n, dtype=torch.bool, device=x0.device)
    active = torch.arange(n, device=x0.device)
    for it in range(max_iter + 1):
        if it:  # has the last step flipped anything? (the first pass is the prediction itself)
            with torch.no_grad():
                done = model(x_adv[active]).argmax(1) != label[active]
            flipped[active[done]] = True
            active = active[~done]
        if it == max_iter or not len(active):
            break
        xa = x_adv[active].requires_grad_(True)
        f = model(xa).gather(1, classes[active])  # (b, k) logits of the candidate classes
        diffs = f[:, 1:] - f[:, :1]  # (b, k-1): f_k − f_label < 0 until the prediction flips
        grads = [torch.autograd.grad(diffs[:, j].sum(), xa, retain_graph=j < k - 2)[0] for j in range(k - 1)]
        w = torch.stack(grads, 1).flatten(2)  # (b, k-1, D): ∇(f_k − f_label), every sample at once
        if clip:  # step within the box: drop the components that would push a pixel at 0 or 1 outside
            xf = x_adv[active].flatten(1).unsqueeze(1)  # (b, 1, D)
            w = torch.where(((xf <= 0) & (w < 0)) | ((xf >= 1) & (w > 0)), 0, w)
        w_norm = w.norm(dim=2)
        # Distance to each linearised boundary; a class whose gradient difference vanishes is out of reach.
        pert = torch.where(w_norm > 0, diffs.detach().abs() / w_norm, torch.inf)
        best, target = pert.min(1)
        movable = torch.isfinite(best)  # a zero gradient cannot move: give up on that sample
        rows = torch.arange(len(target), device=x0.device)
        r = ((best + 1e-4) / w_norm[rows, target]).unsqueeze(1) * w[rows, target]  # (b, D)
        idx, r = active[movable], r[movable]
        r_tot[idx] += r.view(-1, *x0.shape[1:])
        x_adv[idx] = x0[idx] + (1 + overshoot) * r_tot[idx]
        if clip:  # keep r_tot in step with the clipped point, so no clipped-away "debt" builds up
            x_adv[idx] = x_adv[idx].clamp_(0, 1)
            r_tot[idx] = (x_adv[idx] - x0[idx]) / (1 + overshoot)
        active = idx
    return x_adv, flipped


def deepfool(model: nn.Module, x: torch.Tensor, *, overshoot: float = 0.02, max_iter: int = 50,
             num_classes_limit: int = 10, clip: bool = True,
             batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched L2 DeepFool (Moosavi-Dezfooli et al. 2016): a small perturbation that changes the prediction.

    Each step linearises the model around the current point and moves to the nearest boundary between the predicted
    class and one of the ``num_classes_limit`` classes most likely at the start; the point is
    ``x + (1 + overshoot)·r_tot`` (``r_tot`` the sum of the steps). The model runs in eval mode with parameter
    gradients off (:func:`frozen`), so one ``autograd.grad`` per candidate class gives every sample's input gradient;
    samples drop out of the batch as soon as their prediction flips, or when their gradient vanishes.

    With ``clip`` (the default) the images stay in [0, 1]: the point is clipped after each step, and each step is
    taken within the box -- gradient components that would push a pixel already at 0 (or 1) further out are zeroed
    before the nearest boundary is computed. Clipping alone wastes most of each step on images with many saturated
    pixels (MNIST: 7.5 steps on average instead of 2.2 in our benchmark).

    Args:
        model: Maps images in [0, 1] to logits.
        x: Float images in [0, 1] ``(n, C, H, W)``.
        overshoot: Relative overshoot past the boundary (0.02 as in the paper).
        max_iter: Most linearisation steps per sample.
        num_classes_limit: Only the top-k classes (by the initial logits) are candidate targets.
        clip: Keep the images in [0, 1] (see above); ``False`` gives the original, unconstrained DeepFool.
        batch_size: Samples per batch (default: all at once).

    Returns:
        ``(norms, flipped, x_adv)``: L2 norms ``‖x_adv − x‖`` ``(n,)``, whether the prediction changed ``(n,)`` bool,
        and the perturbed images (detached). Where ``flipped`` is False, ``x_adv`` is the last point reached.
    """
    check_float(overshoot, "overshoot", "deepfool", min_value=0)
    check_int(max_iter, "max_iter", "deepfool", min_value=1)
    check_int(num_classes_limit, "num_classes_limit", "deepfool", min_value=2)
    x = x.detach()
    if batch_size is None:
        batch_size = max(1, len(x))
    check_int(batch_size, "batch_size", "deepfool", min_value=1)
    advs, flips = [], []
    with frozen(model):
        for start in range(0, len(x), batch_size):
            a, f = _deepfool_batch(model, x[start:start + batch_size], overshoot, max_iter, num_classes_limit, clip)
            advs.append(a)
            flips.append(f)
    if not advs:
        return x.new_zeros(0), torch.zeros(0, dtype=torch.bool, device=x.device), x.clone()
    x_adv = torch.cat(advs)
    return (x_adv - x).flatten(1).norm(dim=1), torch.cat(flips), x_adv


@ATTACKS.register("autoattack")
def _autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """AutoAttack, standard version (:func:`robustal.engine.autoattack.autoattack`; needs the ``autoattack`` extra)."""
    from robustal.engine.autoattack import autoattack

    return autoattack(model, x, y, **kwargs)


@ATTACKS.register("autoattack-fast")
def _autoattack_fast(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """AutoAttack's two gradient attacks only, APGD-CE then APGD-T (:func:`robustal.engine.autoattack.autoattack` with
    ``version="fast"``): a cheaper final check, without FAB-T and Square (needs the ``autoattack`` extra)."""
    from robustal.engine.autoattack import autoattack

    return autoattack(model, x, y, version="fast", **kwargs)


@ATTACKS.register("square")
def _square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
    """The Square attack (:func:`robustal.engine.autoattack.square`; needs the ``autoattack`` extra)."""
    from robustal.engine.autoattack import square

    return square(model, x, y, **kwargs)
