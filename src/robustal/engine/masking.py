"""Gradient-masking checks: is a robust accuracy measured with gradients a robustness figure, or an artefact?

A model can look robust because its gradients are useless to the attack (gradient masking: a saturated softmax, a
quantised input, a loss surface that misleads small steps), not because no adversarial example exists. The checks
are those of Carlini et al. 2019 (*On Evaluating Adversarial Robustness*, §5: accuracy falls to 0 as ε grows and
never rises with it; iterative attacks beat single-step ones; black-box attacks do not beat white-box ones) and of
AutoAttack's own flags (zero input gradients; Croce & Hein 2020), plus the PGD → AutoAttack gap, which for published
MNIST defences is 1-6 points. :func:`masking_checks` runs them on a model; :func:`accuracy_checks` judges the ones
that stored per-attack robust accuracies alone allow. Each attack keeps its per-image mask, so the report also gives
the best known robust accuracy: an image counts as robust only if every attack run at ε failed on it.

Docs: ``docs/masking.md`` (what each check does, what a flag means, what the checks cost).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from robustal._validation import check_float, check_int
from robustal.data.dataset import Split, to_float
from robustal.engine.attacks import AttackConfig
from robustal.engine.autoattack import require
from robustal.engine.evaluation import EVAL_STEPS, accuracy_masks, robust_mask
from robustal.errors import ConfigError
from robustal.models.base import frozen

#: Multiples of ε at which PGD runs in the sweep (besides :data:`MAX_EPSILON_GREY`/:data:`MAX_EPSILON_COLOUR`).
SWEEP_FACTORS = (1, 2, 4)
#: The sweep's largest budget for grey images: at ε = 1 any image can be turned into any other, so an attack that
#: works drives accuracy to 0 whatever the model.
MAX_EPSILON_GREY = 1.0
#: The sweep's largest budget for colour (CIFAR-like) images, as RobustBench-style sweeps use: at ε = 0.5 every image
#: can be made uniform grey, so robust accuracy is at most the share of the class the model gives that grey image.
MAX_EPSILON_COLOUR = 0.5
#: Robust accuracy PGD may leave at the sweep's largest ε. An attack that works leaves ~0 there; 5 points is well
#: above what sampling noise leaves on 100 images and below what a masked model keeps (often its clean accuracy).
SWEEP_MAX_ROBUST = 0.05
#: How much robust accuracy may rise from one ε of the sweep to the next larger one: a larger budget contains the
#: smaller one, so any rise is the attack's weakness; 1 point allows for different random starts.
MONOTONE_TOLERANCE = 0.01
#: How much lower Square's robust accuracy may be than PGD's: a black-box random search that ignores gradients should
#: not beat 50 steps of the true gradient (Carlini et al. §5.4); 2 points allows for the rare image Square's margin
#: loss wins on an unmasked model.
SQUARE_TOLERANCE = 0.02
#: An input gradient with an L1 norm below this is zero: float32 cross-entropy gradients of a confident but
#: unmasked model stay far above it (an exactly saturated softmax, or a rounding layer, gives exactly 0).
ZERO_GRAD_L1 = 1e-12
#: Share of images that may have a zero input gradient: AutoAttack warns at the first such point; 1 % allows for an
#: odd image without letting gradient attacks skip a sizeable part of the test set unnoticed.
ZERO_GRAD_SHARE = 0.01
#: How much PGD's robust accuracy may exceed single-step FGSM's (step ε, no random start): many steps of the same
#: gradient must do at least as well as one (Carlini et al. §5.3); 1 point allows for different starts.
ITERATIVE_TOLERANCE = 0.01
#: Largest PGD → AutoAttack gap that is not a flag: published MNIST defences show 1.2 (Madry), 2.8 (TRADES) and 5.9
#: (Wong's FGSM-RS) points; robustal's LeNet-5 models show 9-12.
AUTOATTACK_GAP = 0.05
#: Square's queries in the checks: a fifth of AutoAttack's 5 000, for a fifth of the cost. Fewer queries only make
#: Square weaker, so the Square check may miss masking but never flags an unmasked model because of it.
CHECK_SQUARE_QUERIES = 1000
#: The attacks whose per-image masks :func:`masking_checks` takes (``attacks_done``) and whose robust accuracies
#: :func:`accuracy_checks` judges; all are at the evaluation's ε.
ATTACK_NAMES = ("pgd", "fgsm", "square", "autoattack")


@dataclass(frozen=True)
class Check:
    """One check: its ``name``, the ``values`` it judged, its ``threshold``, whether it ``passed``, and ``meaning``:
    one sentence on what a flag means (None when it passed)."""

    name: str
    values: dict[str, float]
    threshold: float
    passed: bool
    meaning: str | None

    def summary(self) -> str:
        """``pgd: 0.5100, square: 0.1200`` (the values, for one line of output)."""
        return ", ".join(f"{k}: {v:.4f}" for k, v in self.values.items())

    def to_dict(self) -> dict:
        return {"name": self.name, "values": dict(self.values), "threshold": self.threshold, "passed": self.passed,
                "meaning": self.meaning}


def _check(name: str, values: dict[str, float], threshold: float, passed: bool, meaning: str) -> Check:
    return Check(name, {k: float(v) for k, v in values.items()}, threshold, bool(passed), None if passed else meaning)


def sweep_checks(sweep: Mapping[float, float]) -> tuple[Check, Check]:
    """The ε-sweep's two checks from PGD's robust accuracy at each ε (ascending keys): it reaches ~0 at the largest
    ε (:data:`SWEEP_MAX_ROBUST`), and it never rises with ε (:data:`MONOTONE_TOLERANCE`)."""
    eps = sorted(sweep)
    values = {f"eps={e:.4g}": sweep[e] for e in eps}
    accs = [sweep[e] for e in eps]
    to_zero = _check("epsilon-sweep", values, SWEEP_MAX_ROBUST, accs[-1] <= SWEEP_MAX_ROBUST,
                     f"PGD leaves {accs[-1]:.0%} robust at eps={eps[-1]:.4g}, where any image can be changed "
                     "entirely: its gradients do not lead it anywhere (gradient masking), so its robust accuracy "
                     "at the evaluation's eps overstates robustness.")
    rising = [i for i in range(1, len(accs)) if accs[i] > accs[i - 1] + MONOTONE_TOLERANCE]
    monotone = _check("monotone-sweep", values, MONOTONE_TOLERANCE, not rising,
                      "a larger budget, which contains the smaller one, left more images robust: the attack is "
                      "not finding the worst case (masked or noisy gradients), so its figures are unreliable.")
    return to_zero, monotone


def zero_gradient_check(share: float) -> Check:
    """Flag when more than :data:`ZERO_GRAD_SHARE` of the images have a zero input gradient at the clean point."""
    return _check("zero-gradients", {"share": share}, ZERO_GRAD_SHARE, share <= ZERO_GRAD_SHARE,
                  f"the loss has no input gradient at {share:.0%} of the images (a saturated softmax, a quantised or "
                  "non-differentiable input), so gradient attacks cannot move from them and count them robust "
                  "untested.")


def square_check(pgd: float, square: float) -> Check:
    """Flag when black-box Square leaves fewer images robust than white-box PGD, by more than
    :data:`SQUARE_TOLERANCE`."""
    return _check("square-vs-gradient", {"pgd": pgd, "square": square, "gap": pgd - square}, SQUARE_TOLERANCE,
                  pgd - square <= SQUARE_TOLERANCE,
                  "a black-box search that never sees a gradient fooled more images than PGD: the gradients mislead "
                  "the attack (gradient masking), so PGD's robust accuracy overstates robustness.")


def iterative_check(pgd: float, fgsm: float) -> Check:
    """Flag when PGD leaves more images robust than single-step FGSM, by more than :data:`ITERATIVE_TOLERANCE`."""
    return _check("iterative-vs-single-step", {"pgd": pgd, "fgsm": fgsm, "gap": pgd - fgsm}, ITERATIVE_TOLERANCE,
                  pgd - fgsm <= ITERATIVE_TOLERANCE,
                  "many small gradient steps did worse than one step of size eps: the loss surface misleads "
                  "iterative attacks (gradient masking), so PGD's figure is unreliable.")


def autoattack_gap_check(pgd: float, autoattack: float) -> Check:
    """Flag when PGD's robust accuracy exceeds AutoAttack's by more than :data:`AUTOATTACK_GAP`."""
    return _check("pgd-autoattack-gap", {"pgd": pgd, "autoattack": autoattack, "gap": pgd - autoattack},
                  AUTOATTACK_GAP, pgd - autoattack <= AUTOATTACK_GAP,
                  "PGD overstates robustness by more than published defences' 1-6 points: its fixed step and "
                  "cross-entropy loss are misled (gradient masking); report AutoAttack's figure.")


def accuracy_checks(robust: Mapping[str, float]) -> tuple[Check, ...]:
    """The checks that per-attack robust accuracies alone can judge (a stored run's numbers, at one ε).

    Args:
        robust: Robust accuracy by attack name (:data:`ATTACK_NAMES`: ``pgd``, ``fgsm``, ``square``, ``autoattack``;
            other names are ignored), all measured on the same images at the same ε.

    Returns:
        Each check whose attacks are all present, in this order: PGD vs Square, PGD vs FGSM, PGD vs AutoAttack;
        none without ``pgd``. The flags are those with ``passed`` False.
    """
    if "pgd" not in robust:
        return ()
    for name in ATTACK_NAMES:
        if name in robust:
            check_float(robust[name], f"robust[{name!r}]", "accuracy_checks", min_value=0, max_value=1)
    pgd = robust["pgd"]
    checks = []
    if "square" in robust:
        checks.append(square_check(pgd, robust["square"]))
    if "fgsm" in robust:
        checks.append(iterative_check(pgd, robust["fgsm"]))
    if "autoattack" in robust:
        checks.append(autoattack_gap_check(pgd, robust["autoattack"]))
    return tuple(checks)


def best_known(masks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per image, robust only if every attack failed on it: the AND of per-image robust masks ``(n,)``."""
    masks = list(masks)
    if not masks:
        raise ConfigError("best_known needs at least one attack's robust mask; got none.")
    out = masks[0].clone()
    for m in masks[1:]:
        out &= m
    return out


def zero_gradient_mask(model: nn.Module, data: Split, *, batch_size: int = 500, device: torch.device | str = "cpu",
                       l1: float = ZERO_GRAD_L1) -> torch.Tensor:
    """Whether the input gradient of the cross-entropy is zero (L1 norm below ``l1``) at each clean image: ``(n,)``
    bool. One backward pass per batch (the summed loss: each image's gradient is its own, in eval mode)."""
    out = torch.zeros(len(data), dtype=torch.bool, device=device)
    with frozen(model), torch.enable_grad():
        for start in range(0, len(data), batch_size):
            x = to_float(data.x[start:start + batch_size], device).requires_grad_(True)
            y = data.y[start:start + batch_size].to(device)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
            out[start:start + len(y)] = grad.flatten(1).abs().sum(1) < l1
    return out


@dataclass(frozen=True)
class SquareTest:
    """The Square attack with ``n_queries`` (:func:`robustal.engine.autoattack.square`) as a robustness test for
    :func:`~robustal.engine.evaluation.robust_mask`: an image is robust if Square's example is still classified
    right."""

    epsilon: float
    n_queries: int = CHECK_SQUARE_QUERIES

    def robust(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        from robustal.engine.autoattack import square

        x_adv = square(model, x, y, epsilon=self.epsilon, n_queries=self.n_queries, generator=generator)
        with torch.no_grad():
            return model(x_adv).argmax(1) == y


@dataclass(frozen=True)
class MaskingReport:
    """The checks on one model and the best known robust accuracy, on ``n`` images at ``epsilon``.

    Attributes:
        clean: Clean accuracy.
        robust: Robust accuracy at ``epsilon`` by attack (:data:`ATTACK_NAMES` run or given).
        best_known: Share of images no attack at ``epsilon`` fooled (never above any of ``robust``).
        checks: Every check judged, in order; :attr:`flags` are those that failed.
        settings: What ran: PGD's steps and step, Square's queries, the sweep's ε, the attacks given.
    """

    n: int
    epsilon: float
    clean: float
    robust: dict[str, float]
    best_known: float
    checks: tuple[Check, ...]
    settings: dict = field(default_factory=dict)

    @property
    def flags(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_dict(self) -> dict:
        return {"n": self.n, "epsilon": self.epsilon, "clean": self.clean, "robust": dict(self.robust),
                "best_known": self.best_known, "flags": [c.name for c in self.flags],
                "checks": [c.to_dict() for c in self.checks], "settings": dict(self.settings)}


def sweep_epsilons(epsilon: float, max_epsilon: float) -> list[float]:
    """The sweep's budgets: ``epsilon`` times :data:`SWEEP_FACTORS` (capped at ``max_epsilon``), and ``max_epsilon``."""
    return sorted({min(epsilon * k, max_epsilon) for k in SWEEP_FACTORS} | {max_epsilon})


def _given_masks(attacks_done: Mapping[str, torch.Tensor] | None, n: int, device) -> dict[str, torch.Tensor]:
    given = {}
    for name, mask in (attacks_done or {}).items():
        if name not in ATTACK_NAMES:
            raise ConfigError(f"attacks_done of masking_checks: unknown attack {name!r}; give masks of "
                              f"{', '.join(ATTACK_NAMES)} (robust_mask's output).")
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (n,):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ConfigError(f"attacks_done[{name!r}] of masking_checks must be a bool tensor of shape ({n},), one "
                              f"entry per image (robust_mask's output); got {got}.")
        given[name] = mask.to(device)
    return given


def masking_checks(model: nn.Module, data: Split, epsilon: float, *, steps: int = EVAL_STEPS,
                   step_size: float | None = None, attacks_done: Mapping[str, torch.Tensor] | None = None,
                   square_queries: int = CHECK_SQUARE_QUERIES, max_epsilon: float | None = None,
                   batch_size: int = 500, device: torch.device | str = "cpu", seed: int = 0) -> MaskingReport:
    """Run the gradient-masking checks on ``model`` over ``data`` at L∞ budget ``epsilon``.

    Runs PGD (``steps`` steps of ``step_size``, random start), FGSM (one step of ε) and Square (``square_queries``)
    at ``epsilon``; PGD again at each larger ε of :func:`sweep_epsilons`, its step scaled with ε; and the input
    gradient at every clean image. Square costs the most (on a LeNet-5, 1 000 queries cost about 10 PGD-50
    evaluations); the sweep, FGSM and the gradients together cost less than one (``docs/masking.md``).

    Args:
        model: Maps images in [0, 1] to logits; runs in eval mode without parameter gradients (restored after).
        data: The test images (uint8).
        step_size: PGD's step (default: 2.5·ε/``steps``, Madry et al.'s).
        attacks_done: Per-image robust masks (:func:`~robustal.engine.evaluation.robust_mask`, same ``data`` and
            ``epsilon``) of attacks already run, by name (:data:`ATTACK_NAMES`): these are not run again, and
            ``autoattack``'s enables the PGD → AutoAttack check. A ``pgd`` mask must come from the same ``steps``
            and ``step_size``.
        max_epsilon: The sweep's largest ε (default: :data:`MAX_EPSILON_GREY` for one channel, else
            :data:`MAX_EPSILON_COLOUR`).
        seed: Seeds every attack (the generator of :func:`~robustal.engine.evaluation.evaluate`).
    """
    check_float(epsilon, "epsilon", "masking_checks", min_value=0, max_value=1, min_inclusive=False)
    check_int(steps, "steps", "masking_checks", min_value=1)
    check_int(square_queries, "square_queries", "masking_checks", min_value=1)
    n = len(data)
    if n == 0:
        raise ConfigError("masking_checks needs at least one image; got an empty split.")
    step_size = 2.5 * epsilon / steps if step_size is None else step_size
    check_float(step_size, "step_size", "masking_checks", min_value=0, max_value=1, min_inclusive=False)
    if max_epsilon is None:
        max_epsilon = MAX_EPSILON_GREY if data.x.shape[1] == 1 else MAX_EPSILON_COLOUR
    check_float(max_epsilon, "max_epsilon", "masking_checks", min_value=epsilon, max_value=1)
    given = _given_masks(attacks_done, n, device)
    if "square" not in given:
        require("square")  # a missing extra fails before any attack runs
    run = {"batch_size": batch_size, "device": device, "seed": seed}

    def pgd_at(eps: float) -> AttackConfig:
        return AttackConfig("pgd", eps, min(1.0, step_size * eps / epsilon), steps, random_start=True)

    correct, _ = accuracy_masks(model, data, None, **run)
    masks = dict(given)
    tests = {"pgd": pgd_at(epsilon), "fgsm": AttackConfig("fgsm", epsilon, epsilon, 1, random_start=False),
             "square": SquareTest(epsilon, square_queries)}
    for name, test in tests.items():
        if name not in masks:
            masks[name] = robust_mask(model, data, test, **run)
    masks = {name: m & correct for name, m in masks.items()}
    robust = {name: _share(m) for name, m in masks.items()}
    sweep = {e: robust["pgd"] if e == epsilon else _share(robust_mask(model, data, pgd_at(e), **run))
             for e in sweep_epsilons(epsilon, max_epsilon)}
    zero_share = _share(zero_gradient_mask(model, data, batch_size=batch_size, device=device))
    checks = (*sweep_checks(sweep), zero_gradient_check(zero_share), *accuracy_checks(robust))
    ran = {"pgd": {"steps": steps, "step_size": step_size, "random_start": True},
           "fgsm": {"step_size": epsilon, "random_start": False}, "square": {"n_queries": square_queries}}
    settings = {**{name: s for name, s in ran.items() if name not in given}, "given": sorted(given),
                "sweep_epsilons": sorted(sweep),
                "sweep": {"steps": steps, "step_size_per_epsilon": step_size / epsilon}}
    return MaskingReport(n, epsilon, _share(correct), robust, _share(best_known(masks.values())), checks, settings)


def _share(mask: torch.Tensor) -> float:
    """The share of True in ``mask``, as :func:`~robustal.engine.evaluation.evaluate` counts it (an exact count over
    n)."""
    return int(mask.sum()) / len(mask)
