"""Pure selectors in an embedding space: BADGE's k-means++ seeding on gradient embeddings and TypiClust's most
typical sample per cluster. No model in sight: each works on plain tensors and is tested on hand-made points."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from robustal._validation import check_int
from robustal.acquisition.scores import check_n
from robustal.errors import ConfigError


def _residuals(probs: torch.Tensor) -> torch.Tensor:
    """``p − e_ŷ`` of each row, ŷ the top-1 class (equal probabilities: the lower class), float64."""
    u = probs.double().clone()
    u[torch.arange(len(u)), probs.argmax(1)] -= 1
    return u


def gradient_embedding(probs: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """BADGE's embedding ``(p − e_ŷ) ⊗ h`` ``(n, classes·d)`` float64: the gradient of the cross-entropy at the
    predicted label ŷ with respect to the last linear layer's weights, for softmax ``p`` and penultimate features
    ``h`` (Ash et al. 2020). Row-major: entry ``c·d + k`` is ``(p_c − [c = ŷ])·h_k``."""
    return (_residuals(probs)[:, :, None] * features.double()[:, None, :]).flatten(1)


def badge_select(probs: torch.Tensor, features: torch.Tensor, n: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BADGE (Ash et al. 2020): k-means++ seeding on the gradient embeddings of :func:`gradient_embedding`.

    The first center is the sample with the largest embedding norm (as the authors' code); each next one is drawn
    with probability proportional to ``D²``, its squared distance to the nearest center so far (``generator``).

    The embedding is never materialised: ``g_a·g_b = (u_a·u_b)(h_a·h_b)`` with ``u = p − e_ŷ``, so one new center
    costs two matrix-vector products, ``N·(classes + d)`` multiplications instead of ``N·classes·d``. One vector of
    nearest-center ``D²`` (``‖g_a‖² − 2g_a·g_c + ‖g_c‖²``, clamped at 0) is kept and updated with ``torch.minimum``
    against each new center -- never a pool×pool matrix. The exact duplicates of each center (equal ``u`` and ``h``,
    found once with ``torch.unique``) get ``D² = 0``, so they are never drawn while any other sample has
    ``D² > 0``; when every remaining ``D²`` is 0 the next pick is uniform among the samples not yet picked. A picked
    sample is never picked again. The draw is one uniform number from ``generator`` mapped through the cumulative
    ``D²`` (inverse-CDF sampling: cheaper than ``torch.multinomial`` per pick).

    Args:
        probs: Softmax ``(N, classes)``.
        features: Penultimate features ``(N, d)``.

    Returns:
        ``(positions, scores)``: ``(n,)`` int64 positions in pick order and each pick's ``D²`` when it was picked
        (the first pick's: its squared norm, its ``D²`` to the origin).
    """
    check_n(n, len(probs), "badge_select")
    if probs.ndim != 2 or features.ndim != 2 or len(features) != len(probs):
        raise ConfigError("badge_select needs probabilities (N, classes) and features (N, d) of the same N; got "
                          f"{tuple(probs.shape)} and {tuple(features.shape)}.")
    u, h = _residuals(probs), features.double()
    sq = (u * u).sum(1) * (h * h).sum(1)  # ‖g‖²
    copies = torch.unique(torch.cat([u, h], 1), dim=0, return_inverse=True)[1]  # equal ids: equal embeddings
    d2 = torch.full_like(sq, torch.inf)
    picked = torch.zeros(len(sq), dtype=torch.bool)
    picks = torch.empty(n, dtype=torch.int64)
    scores = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        if i == 0:
            j = int(torch.argmax(sq))  # first maximum = lowest position
            score = float(sq[j])
        else:
            j = _draw(d2 if float(d2.max()) > 0 else (~picked).double(), generator)
            score = float(d2[j])
        picks[i], scores[i] = j, score
        picked[j] = True
        d2 = torch.minimum(d2, (sq + sq[j] - 2 * ((u @ u[j]) * (h @ h[j]))).clamp_(min=0))
        d2[copies == copies[j]] = 0
    return picks, scores


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """A position drawn with probability proportional to ``weights`` (≥ 0, not all 0): one uniform number through
    the cumulative sum. A zero weight is never drawn."""
    cumulative = torch.cumsum(weights, 0)
    r = torch.rand((), dtype=cumulative.dtype, generator=generator) * cumulative[-1]
    j = min(int(torch.searchsorted(cumulative, r, side="right")), len(weights) - 1)
    if weights[j] == 0:  # r rounded up to the total: the last position with a positive weight
        j = int(weights.nonzero()[-1])
    return j


def kmeans_clusters(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Cluster of each point ``(N,)`` int64 by k-means (scikit-learn's ``KMeans``, k-means++ start, one run with
    ``random_state=seed``), on as many threads as torch uses. ``k`` is capped at N; fewer distinct points than
    ``k`` leave some clusters empty (scikit-learn's warning about it is silenced: empty clusters are harmless)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    check_int(k, "k", "kmeans_clusters", min_value=1)
    k = min(k, len(points))
    with threadpool_limits(torch.get_num_threads()), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(
            np.ascontiguousarray(points.double().cpu().numpy()))
    return torch.from_numpy(labels.astype(np.int64))


def typicality(points: torch.Tensor, neighbors: int) -> torch.Tensor:
    """TypiClust's typicality ``1 / mean distance to the k nearest other points`` of each point ``(m, D)`` → ``(m,)``
    float64, with ``k = min(neighbors, m // 2)`` (the authors' code halves k for small clusters). One point alone has
    typicality ``inf``; so has a point with ``k`` exact duplicates."""
    m = len(points)
    k = min(neighbors, m // 2)
    if k == 0:
        return torch.full((m,), torch.inf, dtype=torch.float64)
    p = points.double()
    dist = torch.cdist(p, p)  # (m, m); a cluster is small
    nearest = torch.topk(dist, k + 1, dim=1, largest=False).values[:, 1:]  # drop one 0: the point itself
    return 1 / nearest.mean(1)


def typiclust_select(points: torch.Tensor, clusters: torch.Tensor, labeled: torch.Tensor, n: int, *,
                     min_cluster_size: int = 5, neighbors: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """TypiClust (Hacohen, Dekel & Weinshall 2022): the most typical unlabeled sample of the least-covered clusters.

    Repeatedly: take the cluster with the fewest labeled samples (equal counts: the largest cluster, then the lowest
    id), among clusters of at least ``min_cluster_size`` samples that still hold an unlabeled one (when none is
    left, any cluster that does); pick its unlabeled sample of highest :func:`typicality` among the cluster's
    unlabeled samples (equal: the lowest position); count it as labeled; repeat until ``n``.

    Args:
        points: Embedding of the whole pool ``(N, D)``.
        clusters: Cluster id of each pool sample ``(N,)`` int64 (labeled samples included).
        labeled: ``(N,)`` bool mask of the samples already labeled.

    Returns:
        ``(positions, scores)``: ``(n,)`` int64 positions into the pool in pick order, and each pick's typicality.
    """
    check_int(min_cluster_size, "min_cluster_size", "typiclust_select", min_value=1)
    check_int(neighbors, "neighbors", "typiclust_select", min_value=1)
    available = ~labeled.clone()
    check_n(n, int(available.sum()), "typiclust_select")
    k = int(clusters.max()) + 1
    size = torch.bincount(clusters, minlength=k)
    covered = torch.bincount(clusters[labeled], minlength=k)
    left = torch.bincount(clusters[available], minlength=k)
    big = size >= min_cluster_size
    order = torch.sort(clusters, stable=True).indices  # pool positions grouped by cluster, ascending inside
    start = torch.cumsum(size, 0) - size
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # cluster → (unlabeled members, their typicality)
    picks = torch.empty(n, dtype=torch.int64)
    scores = torch.empty(n, dtype=torch.float64)
    for i in range(n):
        eligible = big & (left > 0)
        if not bool(eligible.any()):
            eligible = left > 0
        best = eligible & (covered == covered[eligible].min())
        best &= size == size[best].max()
        c = int(best.nonzero()[0])
        if c not in cache:
            members = order[start[c]:start[c] + size[c]]
            members = members[available[members]]
            cache[c] = members, typicality(points[members], neighbors)
        members, typ = cache.pop(c)  # the pick changes the cluster: recomputed when it is chosen again
        j = int(torch.argmax(typ))
        picks[i], scores[i] = members[j], typ[j]
        available[members[j]] = False
        covered[c] += 1
        left[c] -= 1
    return picks, scores
