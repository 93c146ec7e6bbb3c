"""AutoAttack and Square (L∞) as registered attacks, through an adapter to ``pyautoattack``.

``pyautoattack`` (pinned 0.2.0, the ``robustal[autoattack]`` extra) repackages the official AutoAttack code of Croce &
Hein (2020): the ``standard`` version runs APGD-CE, APGD-T (9 target classes), FAB-T (9 target classes) and Square
(5 000 queries), each on the points the previous ones did not fool. It is imported only when an attack runs, so the
names ``autoattack`` and ``square`` are always registered (in :mod:`robustal.engine.attacks`, which imports this module
when one runs; this module imports nothing from it, so the two never import each other) and
``AttackConfig(name="autoattack", epsilon=...)`` and :func:`~robustal.engine.evaluation.evaluate` work unchanged;
without the extra, running one raises :class:`ConfigError`.

The third-party code seeds torch globally (``torch.random.manual_seed`` in every ``perturb``); here it runs inside
``torch.random.fork_rng`` with a seed drawn from the caller's generator, so the caller's global RNG state is left as
it was and a run is reproducible from its seed. The model runs in eval mode without parameter gradients
(:func:`~robustal.models.base.frozen`). AutoAttack's messages go to the ``auto-attack`` logger: its progress (each
sub-attack as it starts, the robust accuracy and time after it) is routed to robustal's log at INFO; its other
messages below WARNING are dropped unless the ``robustal`` logger has DEBUG enabled (``robustal -v``).

The parameter-free attacks ignore ``step_size``, ``steps`` and ``random_start`` of :class:`AttackConfig`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from robustal.errors import ConfigError
from robustal.models.base import frozen

logger = logging.getLogger(__name__)

#: Queries of the Square attack, as in AutoAttack's standard version.
SQUARE_QUERIES = 5000
INSTALL_HINT = "pip install 'robustal[autoattack]'"


def _import_pyautoattack():
    try:
        import pyautoattack
        from pyautoattack.square import SquareAttack
    except ImportError as e:
        raise ConfigError(f"The AutoAttack and Square attacks need the optional package pyautoattack ({e}). "
                          f"Install it with: {INSTALL_HINT}") from None
    return pyautoattack, SquareAttack


#: Attacks of this module, which need the extra.
EXTRA_ATTACKS = ("autoattack", "autoattack-fast", "square")
#: AutoAttack's versions robustal runs: pyautoattack's own, and ``fast``, its two gradient attacks with the standard
#: version's settings (APGD-CE with one restart, APGD-T on 9 target classes), about the cost of one APGD-T.
VERSIONS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "fast": ("apgd-ce", "apgd-t"),
            "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"), "rand": ("apgd-ce", "apgd-dlr")}


def require(name: str = "autoattack") -> None:
    """Raise :class:`ConfigError` now (before any training) if attack ``name`` needs pyautoattack and it is missing."""
    if name in EXTRA_ATTACKS:
        _import_pyautoattack()


#: AutoAttack's messages that say how far it has come: robustal's log shows them at INFO.
PROGRESS_MESSAGES = ("running ", "robust accuracy after ", "no robust datapoints left")


class _RouteToRobustal(logging.Filter):
    """AutoAttack's progress (each sub-attack as it starts, the robust accuracy and time after it) goes to robustal's
    log at INFO, so that a run of minutes says what it is doing; its other records below WARNING are dropped unless
    robustal logs at DEBUG (``robustal -v``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        message = record.getMessage()
        if message.startswith(PROGRESS_MESSAGES):
            logger.info("AutoAttack: %s", message)
            return False
        return logging.getLogger("robustal").isEnabledFor(logging.DEBUG)


def _route_autoattack_logger() -> None:
    aa_logger = logging.getLogger("auto-attack")
    aa_logger.setLevel(logging.DEBUG)  # its progress is logged at DEBUG: created, then routed by the filter
    if not any(isinstance(f, _RouteToRobustal) for f in aa_logger.filters):
        aa_logger.addFilter(_RouteToRobustal())


def _seed_from(generator: torch.Generator | None) -> int:
    if generator is None:
        return 0
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device).item())


@contextlib.contextmanager
def _isolated(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Frozen model, and a forked global RNG (CPU, plus the CUDA device of ``x`` if any), for third-party code."""
    devices = [x.device] if x.device.type == "cuda" else []
    with frozen(model), torch.random.fork_rng(devices=devices):
        yield


def _check(epsilon: float, x: torch.Tensor, y: torch.Tensor) -> None:
    if not 0 <= epsilon <= 1:
        raise ConfigError(f"epsilon must lie in [0, 1]; got {epsilon}.")
    if x.ndim != 4 or len(x) != len(y):
        raise ConfigError(f"Attacks take images (n, C, H, W) and labels (n,); got {tuple(x.shape)} and "
                          f"{tuple(y.shape)}.")


def autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float | None = None,
               steps: int | None = None, random_start: bool = True, generator: torch.Generator | None = None,
               version: str = "standard", batch_size: int | None = None) -> torch.Tensor:
    """AutoAttack (Croce & Hein, ICML 2020), L∞, ``standard`` version: APGD-CE, APGD-T, FAB-T, Square.

    Args:
        model: Maps images in [0, 1] to logits; run in eval mode with parameter gradients off.
        x: Clean images, float in [0, 1].
        y: Labels ``(n,)``.
        epsilon: L∞ budget.
        step_size, steps, random_start: Ignored (parameter-free attacks); accepted for :class:`AttackConfig`.
        generator: Seeds AutoAttack (its global seeding is confined to a forked RNG).
        version: AutoAttack's version (``standard``, ``plus``, ``rand``, or ``fast``: APGD-CE and APGD-T only, with
            the standard version's settings; :data:`VERSIONS`).
        batch_size: AutoAttack's batch size (default: all of ``x`` at once).

    Returns:
        Adversarial images within ε of ``x`` in [0, 1], detached; ``x`` itself where no attack succeeded.
    """
    _check(epsilon, x, y)
    if version not in VERSIONS:
        raise ConfigError(f"AutoAttack's version must be one of {', '.join(VERSIONS)}. Got {version!r} instead.")
    if len(x) == 0:
        return x.detach().clone()
    pyautoattack, _ = _import_pyautoattack()
    _route_autoattack_logger()
    seed = _seed_from(generator)
    with _isolated(model, x):
        custom = version == "fast"
        attack = pyautoattack.AutoAttack(model, norm="Linf", eps=float(epsilon), seed=seed, device=x.device,
                                         version="custom" if custom else version,
                                         attacks=list(VERSIONS[version]) if custom else None)
        if custom:  # the standard version's settings of these two attacks
            attack.apgd.n_restarts = 1
            attack.apgd_targeted.n_restarts = 1
            attack.apgd_targeted.n_target_classes = 9
        attack.verbose = True  # its progress lines, routed to robustal's log (_RouteToRobustal)
        logger.info("AutoAttack (%s: %s) on %d images, eps=%.4g", version, ", ".join(VERSIONS.get(version, ())),
                    len(x), epsilon)
        x_adv, _ = attack.run_standard_evaluation(x.detach(), y.detach(), batch_size=batch_size or len(x))
    return x_adv.detach().clamp_(0, 1)


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float, step_size: float | None = None,
           steps: int | None = None, random_start: bool = True, generator: torch.Generator | None = None,
           n_queries: int = SQUARE_QUERIES, p_init: float = 0.8) -> torch.Tensor:
    """Square attack (Andriushchenko et al., ECCV 2020), L∞, margin loss, one restart: a black-box random search.

    Args:
        n_queries: Model queries per sample (AutoAttack's standard version: 5 000).
        p_init: Initial fraction of the image the random squares cover.
        epsilon, generator: As :func:`autoattack`; ``step_size``, ``steps``, ``random_start`` are ignored.

    Returns:
        Adversarial images within ε of ``x`` in [0, 1], detached; ``x`` itself where the attack failed.
    """
    _check(epsilon, x, y)
    if not isinstance(n_queries, int) or n_queries < 1:
        raise ConfigError(f"n_queries must be a positive integer; got {n_queries!r}.")
    if len(x) == 0:
        return x.detach().clone()
    _, square_attack = _import_pyautoattack()
    seed = _seed_from(generator)
    with _isolated(model, x), torch.no_grad():
        attack = square_attack(model, norm="Linf", n_queries=n_queries, eps=float(epsilon), p_init=p_init,
                               n_restarts=1, seed=seed, verbose=False, resc_schedule=False, device=x.device)
        x_adv = attack.perturb(x.detach(), y.detach())
    return x_adv.detach().clamp_(0, 1)
