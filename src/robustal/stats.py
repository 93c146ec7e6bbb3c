"""Statistics across seeds that hold up with few of them: the exact Mann–Whitney U test, the Vargha–Delaney Â12
effect size, mean ± standard deviation, and the normalised area under a learning curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def vargha_delaney_a12(x: Sequence[float], y: Sequence[float]) -> float:
    """Vargha–Delaney Â12: the probability that a value drawn from ``x`` is larger than one from ``y`` (ties: ½).

    0.5 means no difference, 1.0 that every ``x`` beats every ``y``. Vargha & Delaney (2000), J. Educ. Behav. Stat.
    """
    if len(x) == 0 or len(y) == 0:
        raise ValueError("vargha_delaney_a12 needs two non-empty samples.")
    wins = sum((a > b) + 0.5 * (a == b) for a in x for b in y)
    return wins / (len(x) * len(y))


@dataclass(frozen=True)
class Comparison:
    """A two-sided Mann–Whitney U test of ``x`` vs ``y`` and Â12(x, y)."""

    u: float
    p: float
    a12: float


#: Up to this many ways of splitting the pooled samples, p-values are exact (10 seeds against 10: 184 756).
EXACT_LIMIT = 250_000


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, bool]:
    """Two-sided Mann–Whitney U test of ``x`` against ``y``: ``(U of x, p, exact)``.

    The p-value is exact whenever the pooled samples can be split into groups of ``len(x)`` and ``len(y)`` in at most
    :data:`EXACT_LIMIT` ways: U's distribution under the null hypothesis is enumerated over every split of the
    pooled midranks, so ties are handled exactly too (with 3 seeds against 3 the smallest two-sided p is 2/20 = 0.1;
    a normal approximation claims less). Larger samples use scipy's normal approximation with tie correction.
    """
    import itertools

    import numpy as np
    from scipy.stats import mannwhitneyu, rankdata

    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise ValueError("mann_whitney needs two non-empty samples.")
    if math.comb(n + m, n) > EXACT_LIMIT:
        res = mannwhitneyu(list(x), list(y), alternative="two-sided", method="asymptotic")
        return float(res.statistic), float(res.pvalue), False
    ranks = rankdata(np.concatenate([np.asarray(x, float), np.asarray(y, float)]))
    offset = n * (n + 1) / 2
    u_obs = ranks[:n].sum() - offset
    splits = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n + m), n)), dtype=np.int64)
    u_all = ranks[splits.reshape(-1, n)].sum(1) - offset
    centre = n * m / 2
    p = float(np.mean(np.abs(u_all - centre) >= abs(u_obs - centre) - 1e-9))
    return float(u_obs), min(1.0, p), True


def compare(x: Sequence[float], y: Sequence[float]) -> Comparison:
    """Mann–Whitney U (two-sided, exact for small samples: :func:`mann_whitney`) and Â12 of ``x`` against ``y``."""
    u, p, _ = mann_whitney(x, y)
    return Comparison(u, p, vargha_delaney_a12(x, y))


def normalized_auc(labels: Sequence[float], values: Sequence[float]) -> float:
    """Area under ``values`` vs ``labels`` by the trapezoid rule, divided by the label range (one point: its value)."""
    if len(labels) != len(values) or not labels:
        raise ValueError("normalized_auc needs as many values as labels, at least one.")
    if len(labels) == 1 or labels[-1] == labels[0]:
        return float(values[-1])
    area = sum((labels[i + 1] - labels[i]) * (values[i + 1] + values[i]) / 2 for i in range(len(labels) - 1))
    return float(area / (labels[-1] - labels[0]))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


__all__ = ["EXACT_LIMIT", "Comparison", "compare", "mann_whitney", "mean_std", "normalized_auc", "vargha_delaney_a12"]
