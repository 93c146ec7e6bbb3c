"""The acquisition interface: a registry of functions that pick ``n`` pool samples given a model.

A function sees a :class:`SelectionContext` -- the model, the pool images (never their labels), which samples are
labeled, and a seeded generator -- and returns a :class:`Selection`. Model outputs are computed lazily, once per
context (:meth:`SelectionContext.predictions`), so one forward pass over the pool feeds any score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from robustal._registry import Registry
from robustal.acquisition.inference import MCPredictions, Predictions, mc_predict, predict
from robustal.acquisition.scores import check_n, top_n
from robustal.errors import ConfigError


@dataclass(frozen=True)
class Selection:
    """Picked pool indices ``(n,)`` in pick order, and the score of each pick where the function has scores."""

    indices: torch.Tensor
    scores: torch.Tensor | None = None


@dataclass
class SelectionContext:
    """What an acquisition function may look at.

    Attributes:
        model: The current model (any ``nn.Module``; ``features``/``head`` needed by feature-based functions).
        pool_x: All pool images, uint8 ``(N, C, H, W)`` (labels are withheld on purpose).
        labeled: Pool indices already labeled, int64.
        generator: CPU generator for every random choice of the selection made on the CPU.
        device: Where the model runs.
        batch_size: Inference batch size.
        epsilon: The L∞ budget of the run's adversarial training, for functions that attack the model
            (``robust-boundary``); None when unknown (the loop fills it from ``TrainConfig.epsilon``).
    """

    model: nn.Module
    pool_x: torch.Tensor
    labeled: torch.Tensor
    generator: torch.Generator
    device: torch.device | str = "cpu"
    batch_size: int = 1024
    epsilon: float | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def unlabeled(self) -> torch.Tensor:
        """Sorted pool indices not yet labeled, int64."""
        if "unlabeled" not in self._cache:
            mask = torch.ones(len(self.pool_x), dtype=torch.bool)
            mask[self.labeled] = False
            self._cache["unlabeled"] = mask.nonzero().squeeze(1)
        return self._cache["unlabeled"]

    def predictions(self, features: bool = False) -> Predictions:
        """Softmax (and features) over the unlabeled pool: one forward pass, cached for the context's lifetime."""
        cached = self._cache.get("predictions")
        if cached is None or (features and cached.features is None):
            cached = predict(self.model, self.pool_x[self.unlabeled], batch_size=self.batch_size,
                             device=self.device, features=features)
            self._cache["predictions"] = cached
        return cached

    def labeled_features(self) -> torch.Tensor:
        """Penultimate features of the labeled samples."""
        return predict(self.model, self.pool_x[self.labeled], batch_size=self.batch_size, device=self.device,
                       features=True).features

    @property
    def device_generator(self) -> torch.Generator:
        """A generator on :attr:`device` for random draws made there (MC-dropout masks), seeded from
        :attr:`generator`: reproducible on a given device, and never a CPU generator for CUDA tensors."""
        if "device_generator" not in self._cache:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
            g = torch.Generator(device=self.device)
            g.manual_seed(seed)
            self._cache["device_generator"] = g
        return self._cache["device_generator"]

    def mc_predictions(self, passes: int) -> MCPredictions:
        """Summaries of ``passes`` MC-dropout passes over the unlabeled pool, cached per ``passes``."""
        key = ("mc", passes)
        if key not in self._cache:
            self._cache[key] = mc_predict(self.model, self.pool_x[self.unlabeled], passes=passes,
                                          batch_size=self.batch_size, device=self.device,
                                          generator=self.device_generator)
        return self._cache[key]


class Acquisition:
    """Base class. Subclasses implement :meth:`pick` returning positions into ``ctx.unlabeled``.

    ``ranked``: whether the picks come in order of preference (scores, k-center, DFAL, MCP). A function whose picks
    form a set (random, DRE) sets it to False, and :meth:`select` returns them in a seeded random order -- so that,
    either way, every prefix of a selection is a fair selection of its size (``retrain --n``).
    """

    name: str = ""
    ranked: bool = True

    def check(self, model: nn.Module) -> None:
        """Raise :class:`ConfigError` if ``model`` lacks what this function needs (MC dropout, penultimate
        features). Called before any work -- before a run trains its first stage, before ``select`` ranks -- so
        that a function that cannot work with the model is refused at once. Default: any model will do."""

    def select(self, ctx: SelectionContext, n: int) -> Selection:
        """Pick ``n`` unlabeled samples; returns pool indices. Errors clearly if ``n`` exceeds the unlabeled pool."""
        check_n(n, len(ctx.unlabeled), f"acquisition function {self.name!r}")
        positions, scores = self.pick(ctx, n)
        if not self.ranked:
            order = torch.randperm(len(positions), generator=ctx.generator)
            positions, scores = positions[order], None if scores is None else scores[order]
        return Selection(ctx.unlabeled[positions], scores)

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(positions, scores_of_picks_or_None)``: ``n`` distinct positions into ``ctx.unlabeled``."""
        raise NotImplementedError(f"{type(self).__name__} must implement pick(ctx, n)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ScoreAcquisition(Acquisition):
    """Picks the ``n`` highest scores of ``score_fn(ctx)`` over the unlabeled pool (ties: lower pool index first)."""

    def __init__(self, score_fn: Callable[[SelectionContext], torch.Tensor], name: str = ""):
        self.score_fn = score_fn
        self.name = name or getattr(score_fn, "__name__", "score")

    def scores(self, ctx: SelectionContext) -> torch.Tensor:
        """Score of every unlabeled sample (higher = picked first), ``(len(ctx.unlabeled),)``."""
        return self.score_fn(ctx)

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.scores(ctx)
        pos = top_n(s, n)
        return pos, s[pos]


AcquisitionFactory = Callable[..., Acquisition]
ACQUISITIONS: Registry[AcquisitionFactory] = Registry("acquisition function")


def register_acquisition(name: str) -> Callable[[AcquisitionFactory], AcquisitionFactory]:
    """Register a factory (``**kwargs -> Acquisition``) under ``name``; the built object gets ``name`` too."""

    def decorator(factory: AcquisitionFactory) -> AcquisitionFactory:
        def build(**kwargs) -> Acquisition:
            acq = factory(**kwargs)
            acq.name = name
            return acq

        build.__doc__ = factory.__doc__
        build.__name__ = factory.__name__
        build.__wrapped__ = factory
        ACQUISITIONS.register(name)(build)
        return factory

    return decorator


def create_acquisition(name: str, **kwargs) -> Acquisition:
    """Build the registered acquisition function ``name`` with its options (e.g. ``bins=50`` for ``dre``); an option
    it does not take is a :class:`ConfigError` listing those it does."""
    import inspect

    factory = ACQUISITIONS.get(name)
    valid = list(inspect.signature(factory.__wrapped__).parameters)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        from robustal.errors import nearest

        close = nearest(unknown[0], valid)
        hint = f" Did you mean {close!r}?" if close else ""
        raise ConfigError(f"Acquisition function {name!r} has no option {unknown[0]!r}.{hint} Its options: "
                          f"{', '.join(valid) or 'none'}.")
    return factory(**kwargs)


def list_acquisitions(pattern: str = "*") -> list[str]:
    """Registered acquisition function names matching ``pattern``."""
    return ACQUISITIONS.names(pattern)
