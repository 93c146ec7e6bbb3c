"""Scores and samplers on hand-made arrays, with the expected values and picks worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from robustal.acquisition.scores import (
    bald,
    dre_sample,
    entropy,
    gini,
    k_center_greedy,
    least_confidence,
    margin,
    mcp_select,
    top_n,
)
from robustal.errors import ConfigError

#: Four softmax rows: (top-1, top-2) gaps 0.2, 0.85, 0, 0.1.
P = torch.tensor([[0.6, 0.4, 0.0],
                  [0.9, 0.05, 0.05],
                  [0.5, 0.5, 0.0],
                  [0.4, 0.3, 0.3]], dtype=torch.float64)


def test_entropy_in_bits():
    p = torch.tensor([[1.0, 0, 0, 0], [0.5, 0.5, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    assert torch.allclose(entropy(p), torch.tensor([0.0, 1.0, 2.0]))
    assert top_n(entropy(p), 2).tolist() == [2, 1]


def test_margin_least_confidence_gini_values_and_picks():
    assert torch.allclose(margin(P), torch.tensor([0.8, 0.15, 1.0, 0.9], dtype=torch.float64))
    assert top_n(margin(P), 4).tolist() == [2, 3, 0, 1]
    assert torch.allclose(least_confidence(P), torch.tensor([0.4, 0.1, 0.5, 0.6], dtype=torch.float64))
    assert top_n(least_confidence(P), 4).tolist() == [3, 2, 0, 1]
    # 1 − Σp²: 1 − .52, 1 − .815, 1 − .5, 1 − .34
    assert torch.allclose(gini(P), torch.tensor([0.48, 0.185, 0.5, 0.66], dtype=torch.float64))
    assert top_n(gini(P), 4).tolist() == [3, 2, 0, 1]


def test_scores_are_float64_and_keep_float32_ordering():
    # Two float32 top-1 probabilities one ulp apart near 1: 1 − p must not merge them.
    a = torch.tensor(0.99999994, dtype=torch.float32)
    p = torch.stack([torch.stack([a, 1 - a]), torch.tensor([1.0, 0.0])])
    assert least_confidence(p).dtype == torch.float64
    assert least_confidence(p)[0] > least_confidence(p)[1]
    assert margin(p)[0] > margin(p)[1]


def test_ties_go_to_the_lower_position():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.6, 0.4]])
    assert top_n(margin(p), 3).tolist() == [1, 2, 3]


def _mc(passes: list[list[list[float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample lists of per-pass probabilities → (mean_probs, mean_entropy), as mc_predict streams them."""
    p = torch.tensor(passes, dtype=torch.float64).transpose(0, 1)  # (T, n, C)
    return p.mean(0), entropy(p).mean(0)


def test_bald_from_hand_made_mc_passes():
    mean_p, mean_h = _mc([
        [[1, 0], [0, 1]],              # A: confident passes that disagree: MI = 1 − 0 = 1
        [[0.5, 0.5], [0.5, 0.5]],      # B: agree on uncertainty: MI = 1 − 1 = 0
        [[1, 0], [1, 0]],              # C: agree, confident: 0
        [[0.75, 0.25], [0.25, 0.75]],  # D: 1 − H(0.75, 0.25) = 1 − 0.8113
    ])
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert torch.allclose(bald(mean_p, mean_h), torch.tensor([1.0, 0.0, 0.0, 1 - h], dtype=torch.float64))
    assert top_n(bald(mean_p, mean_h), 4).tolist() == [0, 3, 1, 2]
    assert torch.allclose(entropy(mean_p), torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64))


def test_bald_clamps_rounding_negatives():
    mean_p = torch.tensor([[0.5, 0.5]])
    assert bald(mean_p, torch.tensor([1.0 + 1e-7])).item() == 0.0


#: (top-1, top-2) groups: (0,1): positions 1 (ratio .8), 0 (.5), 2 (.2857); (1,2): 3 (.5); (2,1): 4 (.5), 6 (.1875);
#: (2,0): 5 (.2857). Round 0 = {1, 3, 4, 5}, round 1 = {0, 6}, round 2 = {2}.
MCP_P = torch.tensor([[0.6, 0.3, 0.1],
                      [0.5, 0.4, 0.1],
                      [0.7, 0.2, 0.1],
                      [0.1, 0.6, 0.3],
                      [0.1, 0.3, 0.6],
                      [0.2, 0.1, 0.7],
                      [0.05, 0.15, 0.8]], dtype=torch.float64)


@pytest.mark.parametrize(("n", "expected"), [
    (1, [1]),                      # the highest ratio of all
    (2, [1, 3]),                   # partial first round: .8, then .5 (3 before 4: lower position)
    (4, [1, 3, 4, 5]),             # one from each group -- not the top-4 ratios {1, 0, 3, 4}
    (5, [1, 3, 4, 5, 0]),
    (6, [1, 3, 4, 5, 0, 6]),
    (7, [1, 3, 4, 5, 0, 6, 2]),
])
def test_mcp_round_robin_over_boundaries(n, expected):
    assert mcp_select(MCP_P, n).tolist() == expected


def test_mcp_equal_probabilities_pick_the_lower_class():
    # [0.4, 0.4, 0.2]: top-1 = class 0, top-2 = class 1 → same group as [0.5, 0.3, 0.2], which has the lower ratio.
    p = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.2, 0.3, 0.5]])
    assert mcp_select(p, 2).tolist() == [1, 2]


#: Bins of width 1 over [0, 5]: counts [4, 2, 0, 1, 3]; 5.0 (the maximum) belongs to the last bin.
DRE_VALUES = torch.tensor([0.0, 4.0, 0.1, 1.2, 0.5, 3.3, 4.5, 0.9, 1.5, 5.0], dtype=torch.float64)
DRE_BIN = torch.tensor([0, 4, 0, 1, 0, 3, 4, 0, 1, 4])


def test_dre_proportional_per_bin_counts_match_the_largest_remainder_shares():
    # n = 5: exact shares 2, 1, 0, 0.5, 1.5 → floors 2, 1, 0, 0, 1 and the one left over goes to the
    # tied remainders' lower bin (3): 2, 1, 0, 1, 1.
    picks = dre_sample(DRE_VALUES, 5, bins=5, generator=torch.Generator().manual_seed(0), rounding="proportional")
    assert len(set(picks.tolist())) == 5
    assert torch.bincount(DRE_BIN[picks], minlength=5).tolist() == [2, 1, 0, 1, 1]


def test_dre_reference_takes_ceil_per_bin_and_keeps_the_last_n():
    # n = 5: ceil(mass·n) = ceil(2, 1, 0, 0.5, 1.5) = 2, 1, 0, 1, 2 → 6 in ascending bin order; the last 5 drop one
    # sample of the lowest bin: 1, 1, 0, 1, 2.
    picks = dre_sample(DRE_VALUES, 5, bins=5, generator=torch.Generator().manual_seed(0))
    assert len(set(picks.tolist())) == 5
    assert torch.bincount(DRE_BIN[picks], minlength=5).tolist() == [1, 1, 0, 1, 2]


def worked_example() -> tuple[torch.Tensor, torch.Tensor]:
    """The issue's example: 1 000 values in 50 bins over [0, 50]: 902 in the lowest bin, 2 in each of the 49 others."""
    low = torch.linspace(0.0, 0.9, 902, dtype=torch.float64)
    high = torch.arange(1, 50, dtype=torch.float64).repeat_interleave(2) + torch.tensor([0.25, 0.5]).repeat(49)
    values = torch.cat([low, high])
    values[-1] = 50.0  # the maximum (in the closed last bin) makes the bins exactly 1 wide
    return values, values.floor().clamp(max=49).long()


def test_dre_worked_example_reference_picks_one_from_each_of_the_10_highest_bins():
    values, bins_of = worked_example()
    assert torch.bincount(bins_of, minlength=50).tolist() == [902] + [2] * 49
    picks = dre_sample(values, 10, bins=50, generator=torch.Generator().manual_seed(3))
    assert sorted(bins_of[picks].tolist()) == list(range(40, 50))


def test_dre_worked_example_proportional_picks_ten_from_the_lowest_bin():
    values, bins_of = worked_example()
    picks = dre_sample(values, 10, bins=50, generator=torch.Generator().manual_seed(3), rounding="proportional")
    assert bins_of[picks].tolist() == [0] * 10


def test_dre_every_sample_is_binnable_including_the_maximum():
    for rounding in ("reference", "proportional"):
        picks = dre_sample(DRE_VALUES, 10, bins=5, generator=torch.Generator().manual_seed(0), rounding=rounding)
        assert sorted(picks.tolist()) == list(range(10))


def test_dre_uniform_values_and_determinism():
    same = torch.full((8,), 0.7)
    picks = dre_sample(same, 3, bins=50, generator=torch.Generator().manual_seed(1))
    assert len(set(picks.tolist())) == 3
    again = dre_sample(same, 3, bins=50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(picks, again)


def test_dre_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="only 10 are available"):
        dre_sample(DRE_VALUES, 11)
    with pytest.raises(ConfigError, match="'bins' parameter"):
        dre_sample(DRE_VALUES, 2, bins=0)
    with pytest.raises(ConfigError, match="'rounding' parameter of dre must be one of 'reference', 'proportional'"):
        dre_sample(DRE_VALUES, 2, rounding="up")


def test_k_center_hand_derived_order():
    labeled = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    pool = torch.tensor([[1, 0], [4, 0], [0, 3], [4, 4], [2, 2]], dtype=torch.float64)
    # Nearest-center distances: start 1, 4, 3, √32, √8 → pick 3 (4,4); then 1, 4, 3, –, √8 → pick 1 (4,0);
    # then 1, –, 3, –, √8 → pick 2 (0,3); then 1, –, –, –, √5 → pick 4; then 0.
    picks, dist = k_center_greedy(pool, labeled, 5, return_distances=True)
    assert picks.tolist() == [3, 1, 2, 4, 0]
    assert torch.allclose(dist, torch.tensor([math.sqrt(32), 4, 3, math.sqrt(5), 1], dtype=torch.float64))


def test_k_center_ties_go_to_the_lowest_position():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert k_center_greedy(pool, torch.zeros(1, 2), 3).tolist() == [0, 1, 2]


def test_k_center_all_zero_distances_never_repeat_a_pick():
    pool = torch.ones(4, 3)
    picks, dist = k_center_greedy(pool, torch.ones(2, 3), 4, return_distances=True)
    assert picks.tolist() == [0, 1, 2, 3] and (dist == 0).all()


def test_k_center_empty_labeled_set_starts_at_a_seeded_random_point():
    pool = torch.tensor([[0.0], [1.0], [5.0], [2.0]])
    first = int(torch.randint(4, (1,), generator=torch.Generator().manual_seed(4)))
    picks = k_center_greedy(pool, torch.empty(0, 1), 2, torch.Generator().manual_seed(4))
    assert picks[0] == first
    farthest = int((pool - pool[first]).abs().squeeze(1).argmax())
    assert picks[1] == farthest


def test_k_center_chunked_initialisation_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    pool, labeled = torch.randn(60, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g,
                                                                                       dtype=torch.float64)
    # Brute force: the full distance matrix, recomputed after every pick.
    centers, expected = labeled, []
    for _ in range(10):
        d = torch.cdist(pool, centers).min(1).values
        d[expected] = -1
        j = int(d.argmax())
        expected.append(j)
        centers = torch.cat([centers, pool[j:j + 1]])
    assert k_center_greedy(pool, labeled, 10, chunk_elements=5).tolist() == expected
    assert k_center_greedy(pool, labeled, 10).tolist() == expected


def test_k_center_rejects_mismatched_features():
    with pytest.raises(ConfigError, match="same number of columns"):
        k_center_greedy(torch.zeros(3, 2), torch.zeros(2, 3), 1)
