"""Pure scoring and sampling functions on probabilities or features. No model in sight: each is testable on
hand-made arrays. Entropies are in bits (base 2), as in the reference code."""

from __future__ import annotations

import math

import torch

from robustal._validation import check_int
from robustal.errors import ConfigError


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of each row of ``probs`` ``(n, classes)`` → ``(n,)``; 0·log 0 = 0."""
    return -torch.special.xlogy(probs, probs).sum(-1) / math.log(2)


def check_n(n: int, available: int, caller: str) -> int:
    """``n`` must be an int in [1, available]: a clear error when asking for more samples than the pool holds."""
    if isinstance(n, int) and not isinstance(n, bool) and n > available:
        raise ConfigError(f"{caller} was asked for {n} samples but only {available} are available; "
                          f"ask for at most {available}.")
    return check_int(n, "n", caller, min_value=1)


def top_n(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Positions of the ``n`` highest scores; ties go to the lower position (stable sort): deterministic picks."""
    return torch.sort(scores, descending=True, stable=True).indices[:n]


def apportion(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Split ``n`` over bins proportionally to ``counts`` (largest remainder, ties to the lower bin); sums to ``n``.

    Each share is at most its bin's count, because ``n ≤ counts.sum()``.
    """
    total = int(counts.sum())
    exact = counts.to(torch.int64) * n
    share = exact // total
    remainder = exact % total
    missing = n - int(share.sum())
    if missing:
        share[top_n(remainder, missing)] += 1
    return share


#: How DRE turns a bin's share of the pool into a number of picks (see :func:`dre_sample`).
DRE_ROUNDINGS = ("reference", "proportional")


def dre_sample(values: torch.Tensor, n: int, bins: int = 50, generator: torch.Generator | None = None,
               rounding: str = "reference") -> torch.Tensor:
    """DRE: a random sample of ``n`` positions whose histogram of ``values`` follows the whole pool's.

    ``values`` (usually entropies) are binned into ``bins`` equal-width bins over [min, max] -- the last bin closed,
    so every sample has a bin (the reference's half-open bins dropped the single maximum). Inside a bin, samples are
    drawn uniformly at random. How many from each bin:

    - ``reference`` (the paper's code): ``ceil(mass_b · n)`` from bin b, the bins concatenated in ascending order,
      and the *last* ``n`` kept. Rounding every bin up over-fills the selection, and keeping the last n drops the
      surplus from the low end: when ``n`` is small against the number of occupied bins the selection tilts towards
      high values (1 000 samples, 902 in the lowest bin and 2 in each of 49 others, ``n`` = 10: one sample from each
      of the 10 highest bins).
    - ``proportional``: a share of ``n`` proportional to the bin's mass (largest remainder, exactly ``n`` in total):
      the selection's histogram matches the pool's as closely as ``n`` allows (the same example: 10 from the lowest).

    Returns:
        ``(n,)`` int64 positions into ``values``, in ascending bin order (random inside a bin).
    """
    check_int(bins, "bins", "dre_sample", min_value=1)
    check_n(n, len(values), "dre_sample")
    if rounding not in DRE_ROUNDINGS:
        raise ConfigError(f"The 'rounding' parameter of dre must be one of {', '.join(map(repr, DRE_ROUNDINGS))}. "
                          f"Got {rounding!r} instead.")
    values = values.double()
    lo, hi = values.min(), values.max()
    width = (hi - lo) / bins
    bin_of = torch.zeros(len(values), dtype=torch.int64) if width == 0 else \
        ((values - lo) / width).floor().clamp_(0, bins - 1).to(torch.int64)
    counts = torch.bincount(bin_of, minlength=bins)
    if rounding == "reference":
        share = (counts * n + len(values) - 1) // len(values)  # ceil(mass · n), in integers
    else:
        share = apportion(counts, n)
    # Random order inside each bin: shuffle, then stable-sort by bin.
    shuffled = torch.randperm(len(values), generator=generator)
    order = shuffled[torch.sort(bin_of[shuffled], stable=True).indices]
    sorted_bins = bin_of[order]
    first_of_bin = torch.searchsorted(sorted_bins, sorted_bins, side="left")
    rank_in_bin = torch.arange(len(values)) - first_of_bin
    return order[rank_in_bin < share[sorted_bins]][-n:]


def class_shares(classes: torch.Tensor, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Picks per class ``(num_classes,)``: ``n`` split over the classes proportionally to how many samples each holds
    (:func:`apportion`), so that a selection keeps the pool's class frequencies -- here the predicted ones."""
    check_n(n, len(classes), "class_shares")
    return apportion(torch.bincount(classes, minlength=num_classes or 0), n)


def class_balanced_dre(probs: torch.Tensor, n: int, bins: int = 50, generator: torch.Generator | None = None,
                       rounding: str = "proportional") -> torch.Tensor:
    """DRE inside each predicted class: class c gets :func:`class_shares` of ``n`` and, among the samples predicted
    c, :func:`dre_sample` of their entropies (its own ``bins`` bins over the class's entropy range).

    Returns:
        ``(n,)`` int64 positions into ``probs``, class by class (ascending class, each in :func:`dre_sample`'s order).
    """
    check_n(n, len(probs), "class_balanced_dre")
    predicted = probs.argmax(1)
    values = entropy(probs)
    share = class_shares(predicted, n, probs.shape[1])
    picks = []
    for c in share.nonzero().squeeze(1).tolist():
        members = (predicted == c).nonzero().squeeze(1)
        picks.append(members[dre_sample(values[members], int(share[c]), bins, generator, rounding)])
    return torch.cat(picks)


def boundary_sample(margins: torch.Tensor, classes: torch.Tensor, n: int, fraction: float = 0.5,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Class-balanced random picks among the samples closest to the decision boundary.

    Class c gets :func:`class_shares` of ``n``; its candidates are its ``max(share_c, ceil(fraction·count_c))``
    samples of smallest ``|margin|`` (equal: the lower position), and its share is drawn uniformly among them.

    Args:
        margins: ``(N,)`` signed margins (only ``|margin|`` matters here).
        classes: ``(N,)`` int64 class of each sample (the predicted one).
        fraction: Share of each class that is a candidate, in (0, 1].

    Returns:
        ``(n,)`` int64 positions, class by class (ascending class, random order inside a class).
    """
    check_n(n, len(margins), "boundary_sample")
    if not 0 < fraction <= 1:
        raise ConfigError(f"The 'fraction' parameter of boundary_sample must be a float in (0, 1]. Got {fraction!r} "
                          "instead.")
    share = class_shares(classes, n)
    distance = margins.double().abs()
    picks = []
    for c in share.nonzero().squeeze(1).tolist():
        members = (classes == c).nonzero().squeeze(1)
        candidates = max(int(share[c]), math.ceil(round(fraction * len(members), 9)))
        closest = members[torch.sort(distance[members], stable=True).indices[:candidates]]
        picks.append(closest[torch.randperm(candidates, generator=generator)[:int(share[c])]])
    return torch.cat(picks)


def _top2(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-1 and top-2 probabilities and classes of each row; equal probabilities go to the lower class index."""
    values, classes = torch.sort(probs, dim=1, descending=True, stable=True)
    return values[:, 0], values[:, 1], classes[:, 0], classes[:, 1]


def margin(probs: torch.Tensor) -> torch.Tensor:
    """Margin score ``1 − (p₍₁₎ − p₍₂₎)`` in [0, 1] of ``probs`` ``(n, classes)`` → ``(n,)`` float64.

    Higher = smaller gap between the two most likely classes = picked first (Scheffer et al. 2001; Wang & Shi 2014).
    Computed in float64, so two different float32 margins never collapse to one score (as ``1 − x`` can in float32).
    """
    p1, p2, _, _ = _top2(probs.double())
    return 1 - (p1 - p2)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """Least-confidence score ``1 − p₍₁₎`` in [0, 1 − 1/classes] → ``(n,)`` float64; higher = picked first.

    (Lewis & Gale 1994; Wang & Shi 2014.) Computed in float64 so the ordering of the top-1 probabilities is kept.
    """
    return 1 - probs.double().max(1).values


def gini(probs: torch.Tensor) -> torch.Tensor:
    """DeepGini impurity ``1 − Σ_c p_c²`` in [0, 1 − 1/classes] → ``(n,)`` float64 (Feng et al. 2020)."""
    p = probs.double()
    return 1 - (p * p).sum(1)


def bald(mean_probs: torch.Tensor, mean_entropy: torch.Tensor) -> torch.Tensor:
    """BALD: mutual information between the prediction and the weights, in bits, from T MC-dropout passes.

    ``H(mean_t p_t) − mean_t H(p_t)`` (Houlsby et al. 2011; Gal et al. 2017), where ``mean_probs`` ``(n, classes)``
    is the mean softmax and ``mean_entropy`` ``(n,)`` the mean per-pass entropy in bits. By Jensen's inequality it is
    ≥ 0; rounding negatives (float error when every pass agrees) are clamped to 0.
    """
    return (entropy(mean_probs.double()) - mean_entropy.double()).clamp_(min=0)


def _rank_in_group(group: torch.Tensor) -> torch.Tensor:
    """For entries already sorted by ``group``: each entry's 0-based rank inside its run of equal groups."""
    first = torch.searchsorted(group, group, side="left")
    return torch.arange(len(group)) - first


def mcp_select(probs: torch.Tensor, n: int) -> torch.Tensor:
    """MCP (Shen et al. 2020, multiple-boundary clustering and prioritization): ``n`` positions spread evenly over
    the decision boundaries.

    Each sample belongs to the boundary (group) of its (top-1, top-2) class pair and has priority
    ``p₍₂₎ / p₍₁₎`` ∈ [0, 1] (1 = on the boundary). Picks go round-robin: round r takes the (r+1)-th highest-priority
    sample of every group that still has one; whole rounds are taken while they fit in ``n``; the last, partial
    round takes its highest priorities. Equivalently, the picks are the first ``n`` samples ordered by (rank in
    group, priority descending, position ascending), and that is also the pick order returned.

    Ties: equal probabilities make the lower class index the top-1 (then top-2); equal priorities go to the lower
    position -- so the result is deterministic.

    Returns:
        ``(n,)`` int64 positions into ``probs``.
    """
    check_n(n, len(probs), "mcp_select")
    p1, p2, c1, c2 = _top2(probs.double())
    priority = p2 / p1
    group = c1 * probs.shape[1] + c2
    # Priority descending, position ascending ...
    by_priority = torch.sort(priority, descending=True, stable=True).indices
    # ... then grouped (stable: keeps that order inside each group) to get each sample's rank in its group.
    grouped = by_priority[torch.sort(group[by_priority], stable=True).indices]
    rank = torch.empty_like(grouped)
    rank[grouped] = _rank_in_group(group[grouped])
    # Round (rank) first, then priority descending and position ascending inside a round.
    order = by_priority[torch.sort(rank[by_priority], stable=True).indices]
    return order[:n]


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(1)


def k_center_greedy(pool_feats: torch.Tensor, labeled_feats: torch.Tensor, n: int,
                    generator: torch.Generator | None = None, *, chunk_elements: int = 1 << 22,
                    return_distances: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-center (core-set, Sener & Savarese 2018): repeatedly pick the pool point farthest (Euclidean) from
    its nearest center, where the centers are the labeled points plus the picks so far.

    Memory and time: one nearest-center distance vector of length ``len(pool_feats)``. It is initialised against
    the labeled set in chunks of the pool (at most ``chunk_elements`` pool×labeled entries at a time) with
    ``‖a‖² − 2a·b + ‖b‖²`` clamped at 0, and after each pick updated with ``torch.minimum`` against the new center
    only -- O(n·pool) distance evaluations, never a pool×pool or a whole pool×labeled matrix.

    Ties go to the lowest position. With an empty labeled set the first center is drawn uniformly with ``generator``.
    When every remaining distance is 0 (duplicates of the centers) the lowest unpicked positions follow; a picked
    point is never picked again.

    Args:
        pool_feats: ``(N, d)`` candidate points.
        labeled_feats: ``(L, d)`` existing centers; ``L`` may be 0.
        n: Number of picks, ``1 ≤ n ≤ N``.
        return_distances: Also return each pick's distance to its nearest center at the time it was picked
            (``inf`` for a first center drawn at random).

    Returns:
        ``(n,)`` int64 positions into ``pool_feats`` in pick order (and their distances, if asked for).
    """
    check_n(n, len(pool_feats), "k_center_greedy")
    if pool_feats.ndim != 2 or labeled_feats.ndim != 2 or (len(labeled_feats) and
                                                             labeled_feats.shape[1] != pool_feats.shape[1]):
        raise ConfigError("k_center_greedy needs 2-D feature matrices with the same number of columns; got "
                          f"{tuple(pool_feats.shape)} and {tuple(labeled_feats.shape)}.")
    pool = pool_feats
    dist2 = torch.full((len(pool),), math.inf, dtype=pool.dtype, device=pool.device)
    if len(labeled_feats):
        lab = labeled_feats.to(pool.dtype)
        lab_sq = _sq_norms(lab)
        rows = max(1, chunk_elements // len(lab))
        for start in range(0, len(pool), rows):
            a = pool[start:start + rows]
            d2 = (_sq_norms(a)[:, None] - 2 * (a @ lab.T) + lab_sq[None, :]).clamp_(min=0)  # (rows, L)
            dist2[start:start + rows] = d2.min(1).values
    picks = torch.empty(n, dtype=torch.int64)
    picked_d2 = torch.empty(n, dtype=pool.dtype)
    for i in range(n):
        if i == 0 and not len(labeled_feats):
            j = int(torch.randint(len(pool), (1,), generator=generator))
        else:
            j = int(torch.argmax(dist2))  # first maximum = lowest position
        picks[i], picked_d2[i] = j, float(dist2[j])
        dist2 = torch.minimum(dist2, _sq_norms(pool - pool[j]))
        dist2[j] = -1  # never picked again, even when every distance is 0 (minimum keeps it at -1)
    if return_distances:
        return picks, picked_d2.sqrt()
    return picks
