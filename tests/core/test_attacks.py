"""PGD and FGSM: budget, range, strength, determinism, no side effects on the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustal.attacks import ATTACKS, AttackConfig, fgsm, frozen, list_attacks, pgd
from robustal.errors import ConfigError


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
