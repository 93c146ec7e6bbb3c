"""Property-based tests (hypothesis) of the pure scores and samplers."""

from __future__ import annotations

import math

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from robustal.acquisition.diversity import badge_select, typiclust_select
from robustal.acquisition.scores import (
    bald,
    boundary_sample,
    class_balanced_dre,
    class_shares,
    dre_sample,
    entropy,
    gini,
    k_center_greedy,
    least_confidence,
    margin,
    mcp_select,
)

SETTINGS = settings(max_examples=60, deadline=None)
TOL = 1e-5


@st.composite
def probabilities(draw, max_rows: int = 12, max_classes: int = 8, passes: int | None = None):
    """Softmax rows ``(n, C)`` (or ``(T, n, C)``), from mild to saturated logits -- saturated ones hold exact 0s."""
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(2, max_classes))
    shape = (n, c) if passes is None else (passes, n, c)
    logits = draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=math.prod(shape),
                           max_size=math.prod(shape)))
    scale = draw(st.sampled_from([0.0, 1.0, 10.0, 200.0]))
    return torch.softmax(torch.tensor(logits, dtype=torch.float32).view(shape) * scale, -1)


@SETTINGS
@given(probabilities())
def test_entropy_is_between_0_and_log2_classes(p):
    h = entropy(p)
    assert (h >= -TOL).all() and (h <= math.log2(p.shape[1]) + TOL).all()


@SETTINGS
@given(probabilities())
def test_margin_least_confidence_gini_in_range(p):
    c = p.shape[1]
    for score, hi in ((margin(p), 1.0), (least_confidence(p), 1 - 1 / c), (gini(p), 1 - 1 / c)):
        assert (score >= -TOL).all() and (score <= hi + TOL).all()


@SETTINGS
@given(st.integers(1, 6).flatmap(lambda t: probabilities(passes=t)))
def test_bald_is_non_negative_and_at_most_the_predictive_entropy(p):
    mean_p, mean_h = p.mean(0), entropy(p).mean(0)
    mi = bald(mean_p, mean_h)
    assert (mi >= 0).all()
    assert (mi <= entropy(mean_p.double()) + TOL).all()


@st.composite
def values_and_n(draw):
    values = draw(st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, 1.0])),
                           min_size=1, max_size=40))
    n = draw(st.integers(1, len(values)))
    return torch.tensor(values, dtype=torch.float64), n


@SETTINGS
@given(values_and_n(), st.integers(1, 60), st.integers(0, 2**31), st.sampled_from(["reference", "proportional"]))
def test_dre_sample_returns_n_distinct_positions(vn, bins, seed, rounding):
    values, n = vn
    picks = dre_sample(values, n, bins=bins, generator=torch.Generator().manual_seed(seed), rounding=rounding)
    assert picks.shape == (n,) and len(set(picks.tolist())) == n
    assert ((picks >= 0) & (picks < len(values))).all()


def _bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-width bins over [min, max]; one bin when the width is 0 -- also when a range of a few subnormals,
    divided by ``bins``, underflows to 0."""
    lo, hi = values.min(), values.max()
    width = (hi - lo) / bins
    if width == 0:
        return torch.zeros(len(values), dtype=torch.int64)
    return ((values - lo) / width).floor().clamp(0, bins - 1).long()


@SETTINGS
@given(values_and_n(), st.integers(1, 60), st.integers(0, 2**31))
@example((torch.tensor([0.0, 5e-324], dtype=torch.float64), 1), 2, 0)  # the width underflows to 0 (found by CI)
def test_dre_reference_counts_are_the_tail_of_the_ceil_shares(vn, bins, seed):
    """Per bin: the ceil(mass·n) shares laid out in ascending bin order, of which the last n are kept."""
    values, n = vn
    picks = dre_sample(values.double(), n, bins=bins, generator=torch.Generator().manual_seed(seed))
    counts = torch.bincount(_bins(values.double(), bins), minlength=bins)
    ceil = [-(-int(c) * n // len(values)) for c in counts]
    expected, surplus = [], sum(ceil) - n
    for c in ceil:  # drop the surplus from the lowest bins
        drop = min(c, surplus)
        expected.append(c - drop)
        surplus -= drop
    assert torch.bincount(_bins(values.double(), bins)[picks], minlength=bins).tolist() == expected


@SETTINGS
@given(probabilities(max_rows=30, max_classes=4), st.data())
def test_mcp_returns_n_distinct_positions_covering_every_boundary(p, data):
    n = data.draw(st.integers(1, len(p)))
    picks = mcp_select(p, n)
    assert len(set(picks.tolist())) == n
    top = torch.sort(p, dim=1, descending=True, stable=True).indices[:, :2]
    groups = {tuple(r) for r in top.tolist()}
    if n >= len(groups):
        assert {tuple(r) for r in top[picks].tolist()} == groups


@SETTINGS
@given(st.integers(1, 25), st.integers(0, 6), st.integers(1, 4), st.data())
def test_k_center_returns_n_distinct_positions(pool_size, labeled_size, dim, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    pool = torch.randint(0, 3, (pool_size, dim), generator=g).float()  # many duplicates and zero distances
    labeled = torch.randint(0, 3, (labeled_size, dim), generator=g).float()
    n = data.draw(st.integers(1, pool_size))
    picks = k_center_greedy(pool, labeled, n, g)
    assert len(set(picks.tolist())) == n


@SETTINGS
@given(probabilities(max_rows=25, max_classes=5), st.integers(1, 4), st.data())
def test_badge_returns_n_distinct_positions_the_largest_norm_first(p, dim, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    feats = torch.randint(0, 3, (len(p), dim), generator=g).float()  # duplicates and zero features
    n = data.draw(st.integers(1, len(p)))
    picks, scores = badge_select(p, feats, n, g)
    assert len(set(picks.tolist())) == n and (scores >= 0).all()
    u = p.double() - torch.nn.functional.one_hot(p.argmax(1), p.shape[1])
    norms = (u * u).sum(1) * (feats.double() ** 2).sum(1)
    assert norms[picks[0]] == norms.max()


@SETTINGS
@given(st.integers(1, 40), st.integers(1, 8), st.data())
def test_typiclust_returns_n_distinct_unlabeled_positions(pool_size, k, data):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    points = torch.randint(0, 3, (pool_size, 2), generator=g).float()
    clusters = torch.randint(0, k, (pool_size,), generator=g)
    labeled = torch.rand(pool_size, generator=g) < 0.3
    if labeled.all():
        labeled[0] = False
    n = data.draw(st.integers(1, int((~labeled).sum())))
    picks, _ = typiclust_select(points, clusters, labeled, n, min_cluster_size=data.draw(st.integers(1, 6)),
                                neighbors=data.draw(st.integers(1, 5)))
    assert len(set(picks.tolist())) == n and not labeled[picks].any()


@SETTINGS
@given(probabilities(max_rows=40, max_classes=5), st.integers(1, 20), st.integers(0, 2**31),
       st.sampled_from(["reference", "proportional"]), st.data())
def test_dre_balanced_counts_follow_the_class_shares(p, bins, seed, rounding, data):
    n = data.draw(st.integers(1, len(p)))
    picks = class_balanced_dre(p, n, bins, torch.Generator().manual_seed(seed), rounding)
    assert len(set(picks.tolist())) == n
    predicted = p.argmax(1)
    assert torch.equal(torch.bincount(predicted[picks], minlength=p.shape[1]), class_shares(predicted, n, p.shape[1]))


@SETTINGS
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=40), st.integers(1, 4),
       st.floats(0.01, 1.0), st.integers(0, 2**31), st.data())
def test_boundary_sample_keeps_the_class_shares_among_small_margins(margins, k, fraction, seed, data):
    m = torch.tensor(margins, dtype=torch.float64)
    classes = torch.randint(0, k, (len(m),), generator=torch.Generator().manual_seed(seed))
    n = data.draw(st.integers(1, len(m)))
    picks = boundary_sample(m, classes, n, fraction, torch.Generator().manual_seed(seed))
    assert len(set(picks.tolist())) == n
    share = class_shares(classes, n)
    assert torch.equal(torch.bincount(classes[picks], minlength=len(share)), share)
    for c in classes[picks].unique().tolist():  # every pick is among its class's max(share, ⌈fraction·count⌉) smallest
        members = m[classes == c].abs().sort().values
        limit = members[max(int(share[c]), math.ceil(round(fraction * len(members), 9))) - 1]
        assert (m[picks][classes[picks] == c].abs() <= limit).all()
