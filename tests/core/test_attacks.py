"""PGD and FGSM: budget, range, strength, determinism, no side effects on the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustal.engine.attacks import ATTACKS, AttackConfig, fgsm, list_attacks, pgd
from robustal.errors import ConfigError
from robustal.models.base import frozen


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 1, 6, 6, generator=g), torch.tensor([0, 1, 2, 1])


@pytest.mark.parametrize("name", list_attacks())
@pytest.mark.parametrize("random_start", [False, True])
def test_attack_respects_budget_and_range(name, random_start, batch):
    x, y = batch
    cfg = AttackConfig(name, epsilon=0.1, step_size=0.03, steps=5, random_start=random_start)
    x_adv = cfg.run(tiny_model(), x, y, generator=torch.Generator().manual_seed(0))
    assert x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


def test_pgd_increases_the_loss(batch):
    x, y = batch
    model = tiny_model()
    loss = nn.functional.cross_entropy
    x_adv = pgd(model, x, y, epsilon=0.2, step_size=0.05, steps=10, random_start=False)
    with torch.no_grad():
        assert loss(model(x_adv), y) > loss(model(x), y) + 0.01


def test_pgd_is_at_least_as_strong_as_fgsm(batch):
    x, y = batch
    model = tiny_model()
    ce = lambda z: nn.functional.cross_entropy(model(z), y, reduction="sum")
    with torch.no_grad():
        l_fgsm = ce(fgsm(model, x, y, epsilon=0.1))
        l_pgd = ce(pgd(model, x, y, epsilon=0.1, step_size=0.025, steps=20, random_start=False))
    assert l_pgd >= l_fgsm - 1e-4


def test_random_start_is_seeded(batch):
    x, y = batch
    model = tiny_model()
    run = lambda seed: pgd(model, x, y, epsilon=0.1, step_size=0.01, steps=2,
                           generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_attacks_leave_parameter_gradients_and_mode_alone(batch):
    x, y = batch
    model = tiny_model().train()
    pgd(model, x, y, epsilon=0.1, step_size=0.01, steps=3)
    assert all(p.grad is None for p in model.parameters())
    assert model.training
    with frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        pgd(model, x, y, epsilon=0.1, step_size=0.01, steps=3)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_zero_epsilon_returns_the_input(batch):
    x, y = batch
    assert torch.equal(pgd(tiny_model(), x, y, epsilon=0.0, step_size=0.01, steps=3), x)


@pytest.mark.parametrize("kwargs, match", [
    ({"epsilon": -0.1}, "'epsilon' parameter of AttackConfig"),
    ({"epsilon": 2.0}, "'epsilon' parameter of AttackConfig"),
    ({"steps": 0}, "'steps' parameter of AttackConfig"),
    ({"name": "cw"}, "Unknown attack 'cw'"),
])
def test_attack_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AttackConfig(**kwargs)


def test_registry_has_pgd_and_fgsm():
    assert {"pgd", "fgsm"} <= set(ATTACKS)


class FooledAtOneCall(nn.Module):
    """Predicts class 0 for every image, except on its ``at``-th forward call, where the first row gets class 1.

    Its logits depend on the input (with zero weight), so PGD can take input gradients; PGD never moves (zero
    gradient), and the only thing that changes between iterates is the call count.
    """

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        logits = x.flatten(1).sum(1, keepdim=True) * self.w + torch.tensor([1.0, 0.0])
        if self.calls == self.at:
            logits = logits + torch.tensor([[0.0, 2.0]] + [[0.0, 0.0]] * (len(x) - 1))
        return logits


def test_an_image_fooled_at_an_intermediate_iterate_counts_as_not_robust():
    from robustal.data.dataset import Split
    from robustal.engine.evaluation import evaluate

    x, y = torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64)
    cfg = AttackConfig("pgd", epsilon=0.1, step_size=0.05, steps=5)
    # Judged on the last iterate only (robustal 0.2's rule), the image fooled at the 3rd call looks robust ...
    model = FooledAtOneCall(at=3)
    x_adv = cfg.run(model, x, y, generator=torch.Generator().manual_seed(0))
    assert model.calls == 5 and bool((model(x_adv).argmax(1) == y).all())
    # ... under the any-iterate rule it is not: the clean pass is call 1, the attack's iterates calls 2, 3, ...
    result = evaluate(FooledAtOneCall(at=3), Split(x, y), cfg)
    assert result.clean == 1.0 and result.robust == 0.5
    robust = cfg.robust(FooledAtOneCall(at=2), x, y, generator=torch.Generator().manual_seed(0))
    assert robust.tolist() == [False, True]


def test_the_any_iterate_rule_is_never_weaker_than_the_last_iterate_and_drops_fooled_images(batch):
    from robustal.engine.attacks import pgd_robust

    x = torch.rand(64, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    y = torch.arange(64) % 3
    model = tiny_model()
    kwargs = dict(epsilon=0.3, step_size=0.05, steps=10)
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    with frozen(model):
        robust = pgd_robust(model, x, y, generator=torch.Generator().manual_seed(0), **kwargs)
        sizes, calls[:] = list(calls), []
        x_adv = pgd(model, x, y, generator=torch.Generator().manual_seed(0), **kwargs)
        last = model(x_adv).argmax(1) == y
    assert 0 < int(robust.sum()) < 64  # the example is not trivial
    assert not bool((robust & ~last).any()), "robust under the any-iterate rule but fooled by the last iterate"
    assert sizes[0] == 64 and sizes[-1] < 64 and sizes == sorted(sizes, reverse=True)  # fooled images leave
    assert len(sizes) == kwargs["steps"] + 1


def test_the_last_iterate_rule_judges_only_the_attacks_last_point():
    """robustal 0.2's (and the reference's) rule, kept as an option: the image fooled at an intermediate iterate
    counts as robust when the last iterate is right."""
    x, y = torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64)
    last = AttackConfig("pgd", epsilon=0.1, step_size=0.05, steps=5, rule="last-iterate")
    assert last.robust(FooledAtOneCall(at=2), x, y, generator=torch.Generator().manual_seed(0)).tolist() == [True,
                                                                                                               True]
    with pytest.raises(ConfigError, match="'rule' parameter of AttackConfig must be one of 'any-iterate'"):
        AttackConfig(rule="first")
