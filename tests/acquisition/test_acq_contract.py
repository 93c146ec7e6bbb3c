"""Contract tests for every registered acquisition function, generated from the registry (timm style)."""

from __future__ import annotations

import pytest
import torch

from robustal.acquisition import SelectionContext, create_acquisition, list_acquisitions
from robustal.errors import ConfigError, UnknownNameError
from robustal.models import create_model

POOL, LABELED, N = 200, 20, 5
NAMES = list_acquisitions()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("small-cnn", num_classes=10, in_channels=1, image_size=8).eval()


@pytest.fixture(scope="module")
def pool_x():
    return torch.randint(0, 256, (POOL, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


#: Labeled samples spread over the pool (not a prefix), so pool index ≠ position into the unlabeled set.
LABELED_IDX = torch.arange(3, POOL, POOL // LABELED)[:LABELED]


def context(model, pool_x, seed: int = 7) -> SelectionContext:
    return SelectionContext(model, pool_x, LABELED_IDX.clone(), torch.Generator().manual_seed(seed), epsilon=0.1)


def test_registry_has_all_functions():
    assert set(NAMES) == {"random", "entropy", "margin", "least-confidence", "gini", "entropy-dropout", "bald",
                          "k-center", "egl", "dfal", "mcp", "dre", "badge", "typiclust", "dre-balanced",
                          "robust-boundary"}


@pytest.mark.parametrize("name", NAMES)
def test_picks_distinct_unlabeled_indices_deterministically(name, model, pool_x):
    first = create_acquisition(name).select(context(model, pool_x), N)
    idx = first.indices
    assert idx.dtype == torch.int64 and idx.shape == (N,)
    assert len(set(idx.tolist())) == N
    assert ((idx >= 0) & (idx < POOL)).all()
    assert not torch.isin(idx, LABELED_IDX).any()
    if first.scores is not None:
        assert first.scores.shape == (N,) and not torch.isnan(first.scores).any()
    again = create_acquisition(name).select(context(model, pool_x), N)
    assert torch.equal(idx, again.indices)


@pytest.mark.parametrize("name", NAMES)
def test_asking_for_every_unlabeled_sample_returns_them_all(name, model, pool_x):
    ctx = context(model, pool_x)
    picked = create_acquisition(name).select(ctx, POOL - LABELED).indices
    assert sorted(picked.tolist()) == ctx.unlabeled.tolist()


@pytest.mark.parametrize("name", NAMES)
def test_too_many_or_zero_is_a_clear_error(name, model, pool_x):
    acq = create_acquisition(name)
    with pytest.raises(ConfigError, match=f"only {POOL - LABELED} are available"):
        acq.select(context(model, pool_x), POOL - LABELED + 1)
    with pytest.raises(ConfigError, match="'n' parameter"):
        acq.select(context(model, pool_x), 0)


@pytest.mark.parametrize(("name", "options"), [
    ("k-center", {"space": "pixels"}), ("bald", {"passes": 0}), ("entropy-dropout", {"passes": 1.5}),
    ("dfal", {"candidate_factor": 0}), ("dfal", {"overshoot": -0.1}), ("dfal", {"attempts": 0}),
    ("typiclust", {"embedding": "pixels"}), ("typiclust", {"max_clusters": 0}), ("typiclust", {"neighbors": 0}),
    ("dre-balanced", {"bins": 0}), ("dre-balanced", {"rounding": "up"}), ("robust-boundary", {"epsilon": -0.1}),
    ("robust-boundary", {"fraction": 0.0}), ("robust-boundary", {"steps": 0}),
])
def test_bad_options_are_config_errors(name, options):
    with pytest.raises(ConfigError, match="parameter"):
        create_acquisition(name, **options)


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(UnknownNameError, match="Did you mean 'k-center'"):
        create_acquisition("kcenter")


@pytest.mark.parametrize("name", ["bald", "entropy-dropout"])
def test_mc_dropout_functions_need_mc_dropout_layers(name, pool_x):
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="has no robustal.models.MCDropout layer"):
        create_acquisition(name).select(context(plain, pool_x), N)


def test_k_center_feature_space_and_empty_labeled_set(model, pool_x):
    acq = create_acquisition("k-center", space="features")
    picks = acq.select(context(model, pool_x), N)
    assert len(set(picks.indices.tolist())) == N
    empty = SelectionContext(model, pool_x, torch.empty(0, dtype=torch.int64), torch.Generator().manual_seed(3))
    for space in ("softmax", "features"):
        sel = create_acquisition("k-center", space=space).select(empty, N)
        assert len(set(sel.indices.tolist())) == N and torch.isinf(sel.scores[0])


def test_dfal_scores_only_a_random_candidate_subset(model, pool_x):
    # 10·n candidates out of 180: a different seed draws different candidates, so the picks differ.
    a = create_acquisition("dfal").select(context(model, pool_x, seed=1), 2).indices
    b = create_acquisition("dfal").select(context(model, pool_x, seed=2), 2).indices
    assert not torch.equal(a, b)


#: Functions whose picks are a set (returned in a seeded random order) rather than a ranking.
UNRANKED = {"random", "dre", "dre-balanced", "robust-boundary"}


def test_ranked_flag_matches_the_prefix_rule():
    assert {name for name in NAMES if not create_acquisition(name).ranked} == UNRANKED


@pytest.mark.parametrize("name", sorted(UNRANKED))
def test_set_valued_selections_come_in_a_seeded_random_order(name, model, pool_x):
    """Every prefix of a set-valued selection is a fair sample: the picks are shuffled, not in bin order."""
    acq = create_acquisition(name)
    ctx = context(model, pool_x)
    raw_positions, _ = acq.pick(context(model, pool_x), 60)
    selection = acq.select(ctx, 60)
    assert sorted(selection.indices.tolist()) == sorted(ctx.unlabeled[raw_positions].tolist())  # same set
    if name == "dre":  # pick() returns ascending bins; select() must not
        entropies = selection.scores
        assert not bool((entropies[1:] >= entropies[:-1]).all())
