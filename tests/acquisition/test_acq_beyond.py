"""badge, typiclust, dre-balanced and robust-boundary: their picks on hand-made examples, seeded reproducibility, and
a run through SelectionContext (and the loop) with a small CNN on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustal.acquisition import SelectionContext, create_acquisition
from robustal.acquisition.boundary import adversarial_margins
from robustal.acquisition.diversity import (
    badge_select,
    gradient_embedding,
    kmeans_clusters,
    typicality,
    typiclust_select,
)
from robustal.acquisition.scores import boundary_sample, class_balanced_dre, class_shares, entropy
from robustal.acquisition.typiclust import cached_pixel_pca, pixel_pca
from robustal.errors import ConfigError

NEW = ["badge", "typiclust", "dre-balanced", "robust-boundary"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- BADGE -----------------------------------------------------------------------------------------------------------

def test_gradient_embedding_is_the_last_layer_gradient_at_the_predicted_label():
    torch.manual_seed(0)
    head = nn.Linear(5, 3)
    h = torch.randn(4, 5)
    logits = head(h)
    p = torch.softmax(logits, 1).detach()
    for i in range(4):
        (g,) = torch.autograd.grad(F.cross_entropy(logits[i:i + 1], logits[i:i + 1].argmax(1)), head.weight,
                                   retain_graph=True)
        assert torch.allclose(gradient_embedding(p, h)[i].float(), g.flatten(), atol=1e-6)


def test_badge_first_pick_is_the_largest_norm_and_scores_are_d2_at_pick_time():
    # u = p − e_ŷ: ‖u‖² = 0.02 (p = 0.9, 0.1), 0.5 (0.5, 0.5: ŷ = class 0), 0.18 (0.7, 0.3 and 0.3, 0.7).
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3], [0.3, 0.7]])
    feats = torch.tensor([[10.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    # ‖g‖² = ‖u‖²·‖h‖² = 2.0, 0.5, 0.72, 0.72 → the first pick is sample 0, with score 2.0.
    picks, scores = badge_select(probs, feats, 4, gen())
    assert picks[0] == 0 and scores[0] == pytest.approx(2.0)
    emb = gradient_embedding(probs, feats)
    for i in range(1, 4):  # D² to the nearest earlier pick, in the materialised embedding
        d2 = ((emb[picks[:i]] - emb[picks[i]]) ** 2).sum(1).min()
        assert scores[i] == pytest.approx(float(d2), abs=1e-9)
    assert sorted(picks.tolist()) == [0, 1, 2, 3]


def test_badge_never_draws_a_duplicate_while_another_sample_is_at_a_positive_distance():
    g = gen(3)
    probs = torch.softmax(torch.randn(5, 4, generator=g), 1)
    feats = torch.rand(5, 6, generator=g)
    probs = torch.cat([probs, probs[[1, 1, 1]]])  # samples 5, 6, 7 duplicate sample 1
    feats = torch.cat([feats, feats[[1, 1, 1]]])
    for seed in range(40):
        picks, scores = badge_select(probs, feats, 5, gen(seed))
        chosen = set(picks.tolist())
        assert len(chosen & {1, 5, 6, 7}) == 1  # one copy, then the 4 distinct others
        assert (scores > 0).all()
    all_picks, all_scores = badge_select(probs, feats, 8, gen(1))
    assert sorted(all_picks.tolist()) == list(range(8)) and (all_scores[5:] == 0).all()  # the copies come last


def test_badge_is_reproducible_and_depends_on_the_seed():
    g = gen(0)
    probs, feats = torch.softmax(torch.randn(300, 10, generator=g), 1), torch.rand(300, 16, generator=g)
    a, sa = badge_select(probs, feats, 30, gen(1))
    b, sb = badge_select(probs, feats, 30, gen(1))
    c, _ = badge_select(probs, feats, 30, gen(2))
    assert torch.equal(a, b) and torch.equal(sa, sb) and not torch.equal(a, c) and a[0] == c[0]


def test_badge_needs_penultimate_features(pool_8x8):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    ctx = SelectionContext(plain, pool_8x8, torch.arange(5), gen())
    with pytest.raises(ConfigError, match="'badge' needs the model's penultimate features.*features\\(x\\) and head"):
        create_acquisition("badge").select(ctx, 3)


# --- TypiClust -------------------------------------------------------------------------------------------------------

PLUS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """Four clusters: A (7 points at the origin), B (6 at (100, 0)), C (5 at (0, 100)) and D (2, too small).

    Each of A, B, C is a plus shape (its centre first) with extra points far out on an arm; with neighbors=2 the
    centre has mean distance 1 to its 2 nearest neighbours and every other point more (an arm end: 1 and √2).
    """
    a = torch.cat([PLUS, torch.tensor([[3.0, 0.0], [-3.0, 0.0]])])
    b = torch.cat([PLUS, torch.tensor([[0.0, 3.0]])]) + torch.tensor([100.0, 0.0])
    c = PLUS + torch.tensor([0.0, 100.0])
    d = torch.tensor([[-100.0, 0.0], [-100.0, 1.0]])
    points = torch.cat([a, b, c, d])
    clusters = torch.tensor([0] * 7 + [1] * 6 + [2] * 5 + [3] * 2)
    return points, clusters


def test_typicality_is_the_inverse_mean_distance_to_the_nearest_neighbours():
    typ = typicality(PLUS, neighbors=2)  # k = min(2, 5 // 2) = 2
    assert typ[0] == pytest.approx(1.0)
    assert torch.allclose(typ[1:], torch.full((4,), 1 / ((1 + math.sqrt(2)) / 2), dtype=torch.float64))
    assert typicality(PLUS[:1], neighbors=20).isinf().all()  # alone: k = 0


def test_typiclust_takes_the_centre_of_each_uncovered_cluster_largest_first():
    points, clusters = blobs()
    labeled = torch.zeros(len(points), dtype=torch.bool)
    labeled[12] = True  # B's extra point: B is covered
    picks, scores = typiclust_select(points, clusters, labeled, 2, neighbors=2)
    assert picks.tolist() == [0, 13]  # A's centre (7 points), then C's (5); not B (covered), not D (2 < 5)
    assert scores.tolist() == pytest.approx([1.0, 1.0])
    # Third pick: every big cluster now has one label → the largest, A, again; its most typical remaining sample is
    # an arm point (1 and the other two arm points at √2; ties → lowest position).
    picks, _ = typiclust_select(points, clusters, labeled, 3, neighbors=2)
    assert picks.tolist() == [0, 13, 1]
    # Asking for every unlabeled sample returns them all; the small cluster D comes last.
    everything, _ = typiclust_select(points, clusters, labeled, 19, neighbors=2)
    assert sorted(everything.tolist()) == [i for i in range(20) if i != 12]
    assert set(everything[-2:].tolist()) == {18, 19}


def test_kmeans_finds_well_separated_blobs_and_is_seeded():
    points, clusters = blobs()
    found = kmeans_clusters(points, 4, seed=0)
    same = [len(set(found[clusters == c].tolist())) == 1 for c in range(4)]
    assert all(same) and len(set(found.tolist())) == 4
    assert torch.equal(found, kmeans_clusters(points, 4, seed=0))
    assert len(set(kmeans_clusters(points, 50, seed=0).tolist())) <= len(points)  # k capped at N


def test_pixel_pca_matches_scikit_learn_up_to_sign_and_is_cached_per_pool():
    from sklearn.decomposition import PCA

    x = torch.randint(0, 256, (60, 1, 4, 4), dtype=torch.uint8, generator=gen(0))
    ours = pixel_pca(x, 5)
    theirs = torch.from_numpy(PCA(5, svd_solver="full").fit_transform(x.flatten(1).double().numpy() / 255))
    signs = torch.sign((ours.double() * theirs).sum(0))
    assert torch.allclose(ours.double() * signs, theirs, atol=1e-4)
    first = cached_pixel_pca(x, 5)
    assert cached_pixel_pca(x, 5) is first  # computed once per pool tensor
    x[0] = 0  # changed in place: computed again
    assert cached_pixel_pca(x, 5) is not first


@pytest.mark.parametrize("embedding", ["features", "pca"])
def test_typiclust_through_a_context_picks_unlabeled_typical_samples(embedding, digits_model, digits):
    pool, labeled = digits.train.x, torch.arange(0, 1297, 13)  # 100 labeled
    acq = create_acquisition("typiclust", embedding=embedding)
    sel = acq.select(SelectionContext(digits_model, pool, labeled, gen(1)), 40)
    again = acq.select(SelectionContext(digits_model, pool, labeled, gen(1)), 40)
    assert torch.equal(sel.indices, again.indices) and len(set(sel.indices.tolist())) == 40
    assert not torch.isin(sel.indices, labeled).any()
    # 140 clusters for 100 labels + 40: the picks are typical samples of 40 different clusters, most digits covered.
    assert len(set(digits.train.y[sel.indices].tolist())) >= 8


def test_typiclust_with_features_needs_them(pool_8x8):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    ctx = SelectionContext(plain, pool_8x8, torch.arange(5), gen())
    with pytest.raises(ConfigError, match="embedding='pca'"):
        create_acquisition("typiclust", embedding="features").select(ctx, 3)
    assert len(create_acquisition("typiclust").select(ctx, 3).indices) == 3  # pca: no model features needed


# --- dre-balanced ----------------------------------------------------------------------------------------------------

def one_hot_probs(classes: list[int], confidence: float, num_classes: int = 3) -> torch.Tensor:
    p = torch.full((len(classes), num_classes), (1 - confidence) / (num_classes - 1))
    p[torch.arange(len(classes)), torch.tensor(classes)] = confidence
    return p


def test_class_shares_follow_the_predicted_frequencies_exactly():
    assert class_shares(torch.tensor([0] * 50 + [1] * 30 + [2] * 20), 10).tolist() == [5, 3, 2]
    # 7, 2, 1 of 10 and n = 5: 3.5, 1, 0.5 → floors 3, 1, 0; the one left goes to the lower of the two .5 remainders.
    assert class_shares(torch.tensor([0] * 7 + [1] * 2 + [2]), 5).tolist() == [4, 1, 0]


def test_dre_balanced_counts_per_class_and_per_entropy_bin():
    # Class 0: 80 confident + 20 uncertain samples; class 1: 60; class 2: 40 (pool 200, n = 20 → 10, 6, 4).
    probs = torch.cat([one_hot_probs([0] * 80, 0.99), one_hot_probs([0] * 20, 0.5), one_hot_probs([1] * 60, 0.8),
                       one_hot_probs([2] * 40, 0.7)])
    for seed in range(5):
        picks = class_balanced_dre(probs, 20, bins=2, generator=gen(seed))
        assert torch.bincount(probs[picks].argmax(1), minlength=3).tolist() == [10, 6, 4]
        assert int((picks < 80).sum()) == 8 and int(((picks >= 80) & (picks < 100)).sum()) == 2  # 8:2 like 80:20
        assert len(set(picks.tolist())) == 20


def test_dre_balanced_through_a_context_keeps_the_predicted_class_balance(digits_model, digits):
    pool, labeled = digits.train.x, torch.arange(0, 1297, 13)
    ctx = SelectionContext(digits_model, pool, labeled, gen(2))
    sel = create_acquisition("dre-balanced").select(ctx, 100)
    predicted = ctx.predictions().probs.argmax(1)
    expected = class_shares(predicted, 100, 10)
    position = torch.searchsorted(ctx.unlabeled, sel.indices)
    assert torch.equal(torch.bincount(predicted[position], minlength=10), expected)
    assert torch.allclose(sel.scores, entropy(ctx.predictions().probs[position]))
    # A set in a seeded random order, not class by class.
    assert not bool((predicted[position][1:] >= predicted[position][:-1]).all())
    assert torch.equal(sel.indices, create_acquisition("dre-balanced").select(
        SelectionContext(digits_model, pool, labeled, gen(2)), 100).indices)


# --- robust-boundary -------------------------------------------------------------------------------------------------

def test_boundary_sample_draws_from_the_small_margin_half_of_each_class():
    margins = torch.tensor([-3.0, 0.1, 2.0, -0.2, 5.0, 0.3, 1.0, -0.5, 4.0, 0.05])
    classes = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    # Shares of 5 over 6 and 4: 3 and 2 -- exactly the small-|m| halves {1, 3, 5} and {9, 7}.
    assert sorted(boundary_sample(margins, classes, 5, 0.5, gen(0)).tolist()) == [1, 3, 5, 7, 9]
    seen = set()
    for seed in range(30):  # 3 picks: shares 2 (of 1.8) and 1; always inside the halves, each member drawn
        picks = boundary_sample(margins, classes, 3, 0.5, gen(seed))
        assert set(picks.tolist()) <= {1, 3, 5, 7, 9} and int((classes[picks] == 0).sum()) == 2
        seen |= set(picks.tolist())
    assert seen == {1, 3, 5, 7, 9}
    with pytest.raises(ConfigError, match="'fraction' parameter"):
        boundary_sample(margins, classes, 3, 0.0)


class Linear4(nn.Module):
    """Two logits on 2×2 one-channel images: z₀ = Σx − 2, z₁ = 0, so the margin of class 0 is Σx − 2."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
            self.fc.bias.copy_(torch.tensor([-2.0, 0]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_adversarial_margins_on_a_linear_model():
    # PGD-5 with step 2.5ε/5 moves every pixel by ε against the class: margins Σx − 4ε − 2 (class 0) and
    # 2 − Σ(x + ε) (class 1), here with ε = 0.05.
    x = torch.tensor([0.6, 0.4, 0.55, 0.9]).repeat_interleave(4).view(4, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 0])
    model = Linear4()
    m = adversarial_margins(model, x, y, epsilon=0.05, steps=5, step_size=0.025, generator=gen(0))
    assert m.tolist() == pytest.approx([0.2, 0.2, 0.0, 1.4], abs=1e-5)
    assert all(p.requires_grad for p in model.parameters()) and model.training  # restored


def test_robust_boundary_picks_the_small_margin_half_through_a_context(digits_model, digits):
    pool, labeled = digits.train.x, torch.arange(0, 1297, 13)
    ctx = SelectionContext(digits_model, pool, labeled, gen(4), epsilon=0.2)
    sel = create_acquisition("robust-boundary").select(ctx, 60)
    predicted = ctx.predictions().probs.argmax(1)
    position = torch.searchsorted(ctx.unlabeled, sel.indices)
    assert torch.equal(torch.bincount(predicted[position], minlength=10), class_shares(predicted, 60, 10))
    # Recompute every margin with the same seeds: the picks are among the small-|m| half of their class.
    margins = adversarial_margins(digits_model, pool[ctx.unlabeled], predicted, epsilon=0.2, steps=5,
                                  step_size=0.1, generator=SelectionContext(digits_model, pool, labeled,
                                                                            gen(4)).device_generator)
    assert torch.equal(sel.scores, margins[position])
    for c in predicted[position].unique().tolist():
        members = margins[predicted == c].abs()
        half = torch.sort(members).values[math.ceil(len(members) / 2) - 1]
        assert (margins[position][predicted[position] == c].abs() <= half).all()
    again = create_acquisition("robust-boundary").select(SelectionContext(digits_model, pool, labeled, gen(4),
                                                                          epsilon=0.2), 60)
    assert torch.equal(sel.indices, again.indices)


def test_robust_boundary_needs_an_epsilon(digits_model, digits):
    ctx = SelectionContext(digits_model, digits.train.x, torch.arange(10), gen())
    with pytest.raises(ConfigError, match="needs the attack's epsilon.*option epsilon"):
        create_acquisition("robust-boundary").select(ctx, 5)
    assert len(create_acquisition("robust-boundary", epsilon=0.1).select(ctx, 5).indices) == 5  # the option


def test_the_loop_passes_its_training_epsilon(digits):
    from robustal.engine.training import TrainConfig
    from robustal.loop import LoopConfig
    from robustal.loop.experiment import RunSpec, run_experiment

    train = TrainConfig(mode="standard", epochs=1, batch_size=32, min_steps=0)
    spec = RunSpec(dataset="digits", model="small-cnn", eval_steps=1,
                   loop=LoopConfig(acquisition="robust-boundary", initial=30, per_stage=30, budget=60, train=train))
    result = run_experiment(spec, None, dataset=digits)
    assert [s.labeled for s in result.stages] == [30, 60]


# --- shared fixtures and checks --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool_8x8():
    return torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=gen(0))


@pytest.fixture(scope="module")
def digits_model(digits):
    """small-cnn trained for a few epochs on 200 digits, so its softmax and features are not random."""
    from robustal.engine.training import TrainConfig, fit
    from robustal.models import create_model

    torch.manual_seed(0)
    model = create_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    labeled = torch.arange(0, 1297, 6)[:200]
    fit(model, digits.train.subset(labeled), None, TrainConfig(epochs=5, batch_size=32, min_steps=0), seed=0)
    return model.eval()


@pytest.mark.parametrize("name", NEW)
def test_new_functions_are_seeded_through_a_context(name, digits_model, digits):
    pool, labeled = digits.train.x, torch.arange(0, 1297, 13)

    def select(seed):
        return create_acquisition(name).select(SelectionContext(digits_model, pool, labeled, gen(seed),
                                                                epsilon=0.2), 30).indices

    a, b, c = select(5), select(5), select(6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 30 and not torch.isin(a, labeled).any()


def test_study_files_give_the_new_functions_options(tmp_path):
    from robustal.studies.study import Study

    path = tmp_path / "s.toml"
    path.write_text('''
[[grid]]
datasets = ["digits"]
training = ["pgd"]
acquisitions = ["badge", "typiclust", "typiclust-pca", "dre-balanced-reference", "robust-boundary"]
seeds = [0]

[acquisition.typiclust-pca]
function = "typiclust"
embedding = "pca"

[acquisition.dre-balanced-reference]
function = "dre-balanced"
rounding = "reference"
bins = 20

[acquisition.robust-boundary]
steps = 3
fraction = 0.25
''')
    study = Study.load(path)
    loops = {t.name.split("-pgd-")[1][:-3]: t.spec.loop for t in study.tasks()}
    assert (loops["typiclust-pca"].acquisition, loops["typiclust-pca"].acquisition_options) == \
        ("typiclust", {"embedding": "pca"})
    built = create_acquisition(loops["dre-balanced-reference"].acquisition,
                               **loops["dre-balanced-reference"].acquisition_options)
    assert (built.name, built.rounding, built.bins) == ("dre-balanced", "reference", 20)
    assert create_acquisition("robust-boundary", **loops["robust-boundary"].acquisition_options).fraction == 0.25
    path.write_text(path.read_text().replace("fraction = 0.25", "fraction = 2"))
    with pytest.raises(ConfigError, match="'fraction' parameter of robust-boundary"):
        Study.load(path)


def test_run_help_offers_the_new_functions(capsys):
    from robustal.cli import main

    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps at hyphens
    for name in NEW:
        assert name in text
