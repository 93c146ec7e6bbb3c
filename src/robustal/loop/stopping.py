"""When to stop labeling: a rule on the validation score of the stages so far.

Users of active-learning tools ask when more labels stop paying (baal's stopping criteria, Bloodgood &
Vijay-Shanker 2009's stabilizing predictions). For robust runs the natural signal is the one every stage already
measures: the validation score that picks the kept epoch (robust accuracy under adversarial training). The rule
stops once the best validation score has risen by less than ``min_gain`` over the last ``patience`` stages -- a
plateau. It reads only stored numbers, so ``robustal status`` can recommend it for any run, the loop can apply it
(:attr:`robustal.loop.LoopConfig.stop`), and the report can judge it after the fact on full runs: at how many labels
it would have stopped, and how much robustness that would have cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from robustal._validation import check_float, check_int


@dataclass(frozen=True)
class StoppingRule:
    """Stop once the best validation score gained less than ``min_gain`` over the last ``patience`` stages.

    Attributes:
        min_gain: The smallest gain (in accuracy, 0.01 = one point) that keeps labeling going.
        patience: Over how many stages the gain is measured.
    """

    min_gain: float = 0.01
    patience: int = 2

    def __post_init__(self) -> None:
        check_float(self.min_gain, "min_gain", "StoppingRule", min_value=0)
        check_int(self.patience, "patience", "StoppingRule", min_value=1)

    def gain(self, scores: Sequence[float | None], stage: int) -> float | None:
        """The best score up to ``stage`` minus the best up to ``stage - patience`` (None: too early, or unscored)."""
        if stage < self.patience or any(s is None for s in scores[:stage + 1]):
            return None
        return max(scores[:stage + 1]) - max(scores[:stage - self.patience + 1])

    def stop_stage(self, scores: Sequence[float | None]) -> int | None:
        """The first stage at which the rule says stop (None: it has not yet)."""
        for stage in range(len(scores)):
            gain = self.gain(scores, stage)
            if gain is not None and gain < self.min_gain:
                return stage
        return None

    def describe(self) -> str:
        return (f"stop once validation gained less than {100 * self.min_gain:g} point(s) over the last "
                f"{self.patience} stage(s)")

    def to_dict(self) -> dict:
        return asdict(self)


def levels_off_stage(robust: Sequence[float | None], tolerance: float = 0.01) -> int | None:
    """The first stage from which the test robust accuracy never rises by more than ``tolerance`` again.

    Where a curve levels off, what the stopping rule is judged against: stopping there loses at most ``tolerance``
    against any later stage. None where only the last stage qualifies (the curve still rises at the budget, or
    levels off no earlier than it) or a stage has no robust accuracy.
    """
    if not robust or any(r is None for r in robust):
        return None
    later_best = list(itertools.accumulate(reversed(robust), max))[::-1]
    slack = tolerance + 1e-9  # accuracies are fractions of the test images: 0.41 - 0.40 is one point, not more
    stage = next(i for i, (r, best) in enumerate(zip(robust, later_best, strict=True)) if best - r <= slack)
    return stage if stage < len(robust) - 1 else None


__all__ = ["StoppingRule", "levels_off_stage"]
