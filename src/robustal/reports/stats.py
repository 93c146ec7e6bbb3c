"""Statistics across seeds that hold up with few of them: the exact Mann–Whitney U test, the exact Wilcoxon
signed-rank test for runs paired by seed, the smallest p either can give a number of seeds, the Vargha–Delaney Â12
effect size, mean ranks across seeds, mean ± standard deviation, and the normalised area under a learning curve."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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


#: Up to this many non-zero paired differences, signed-rank p-values are exact (2^20 sign patterns).
EXACT_PAIRS = 20


@dataclass(frozen=True)
class PairedComparison:
    """Differences ``x[i] - y[i]`` of runs paired by seed, and their two-sided Wilcoxon signed-rank test."""

    pairs: int
    mean_diff: float
    higher: int
    lower: int
    p: float


def wilcoxon_signed_rank(diffs: Sequence[float]) -> tuple[float, float, bool]:
    """Two-sided Wilcoxon signed-rank test that paired differences are centred on 0: ``(W+, p, exact)``.

    Zero differences are dropped (Wilcoxon's convention); the others are ranked by absolute value (midranks for
    ties). Up to :data:`EXACT_PAIRS` of them, W+'s null distribution is enumerated over every pattern of signs, so
    ties are exact too (3 pairs can never give less than p = 2/8 = 0.25); beyond, scipy's normal approximation.
    No non-zero difference gives ``(0, 1, True)``.
    """
    import numpy as np
    from scipy.stats import rankdata, wilcoxon

    d = np.asarray([v for v in diffs if v != 0], dtype=float)
    n = len(d)
    if n == 0:
        return 0.0, 1.0, True
    if n > EXACT_PAIRS:
        res = wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided", method="approx")
        return float(res.statistic), float(res.pvalue), False
    ranks = rankdata(np.abs(d))
    w_obs = float(ranks[d > 0].sum())
    signs = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
    w_all = signs @ ranks
    centre = ranks.sum() / 2
    p = float(np.mean(np.abs(w_all - centre) >= abs(w_obs - centre) - 1e-9))
    return w_obs, min(1.0, p), True


def compare_paired(x: Sequence[float], y: Sequence[float]) -> PairedComparison:
    """Paired comparison of ``x[i]`` with ``y[i]`` (the same seed): mean difference, how many pairs ``x`` wins and
    loses, and the exact two-sided signed-rank p (:func:`wilcoxon_signed_rank`)."""
    if len(x) != len(y) or not x:
        raise ValueError("compare_paired needs two samples of one non-zero length, paired by position.")
    diffs = [round(a - b, 12) for a, b in zip(x, y, strict=True)]  # 0.6-0.5, 0.7-0.6: one tie
    _, p, _ = wilcoxon_signed_rank(diffs)
    return PairedComparison(len(diffs), sum(diffs) / len(diffs), sum(v > 0 for v in diffs),
                            sum(v < 0 for v in diffs), p)


def smallest_p_mann_whitney(n: int, m: int) -> float:
    """The smallest two-sided p the exact Mann–Whitney test can give ``n`` values against ``m``: ``2 / C(n + m, n)``
    (every one of ``x`` above every one of ``y``, or below). 3 seeds against 3: 0.1, so p < 0.05 is out of reach
    however large the difference."""
    if n < 1 or m < 1:
        raise ValueError("smallest_p_mann_whitney needs two non-empty samples.")
    return min(1.0, 2 / math.comb(n + m, n))


def smallest_p_signed_rank(k: int) -> float:
    """The smallest two-sided p the exact Wilcoxon signed-rank test can give ``k`` non-zero paired differences:
    ``2 / 2^k`` (all of one sign). 5 pairs: 0.0625; 1 for none."""
    if k < 0:
        raise ValueError("smallest_p_signed_rank needs a count of pairs >= 0.")
    return min(1.0, 2 / 2**k)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values, in their order: the i-th smallest is multiplied by
    ``m - i + 1`` (i from 1), kept at least as large as the ones before it, capped at 1. Calling a test significant
    where its adjusted p < level keeps the chance of any false call in the family at most the level, whereas ``m``
    functions each tested against random at 0.05 find one by luck far more often."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted = [1.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def normalized_auc(labels: Sequence[float], values: Sequence[float]) -> float:
    """Area under ``values`` vs ``labels`` by the trapezoid rule, divided by the label range (one point: its value)."""
    if len(labels) != len(values) or not labels:
        raise ValueError("normalized_auc needs as many values as labels, at least one.")
    if len(labels) == 1 or labels[-1] == labels[0]:
        return float(values[-1])
    area = sum((labels[i + 1] - labels[i]) * (values[i + 1] + values[i]) / 2 for i in range(len(labels) - 1))
    return float(area / (labels[-1] - labels[0]))


def mean_ranks(values: Mapping[str, Mapping[int, float]]) -> tuple[list[int], dict[str, float]]:
    """Each name's mean rank over the seeds every name has a value for: in each seed, rank 1 is the highest value,
    ties share their average rank. Returns ``(those seeds, mean rank by name)``."""
    from scipy.stats import rankdata

    names = list(values)
    seeds = sorted(set.intersection(*(set(values[n]) for n in names))) if names else []
    if not seeds:
        return [], {}
    ranks = [rankdata([-values[n][s] for n in names], method="average") for s in seeds]
    return seeds, {n: float(sum(r[i] for r in ranks) / len(seeds)) for i, n in enumerate(names)}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def format_mean_std(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``mean ± std`` over ``n`` values; one value alone, with ``(n=1)``: the spread of one seed is unknown, not 0."""
    if n == 1:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


__all__ = ["EXACT_LIMIT", "EXACT_PAIRS", "Comparison", "PairedComparison", "compare", "compare_paired",
           "format_mean_std", "mann_whitney", "mean_ranks", "mean_std", "normalized_auc", "smallest_p_mann_whitney",
           "smallest_p_signed_rank", "vargha_delaney_a12", "wilcoxon_signed_rank"]
