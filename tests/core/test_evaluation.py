"""Clean and robust accuracy."""

from __future__ import annotations

import torch
from torch import nn

from robustal.data import Split
from robustal.engine.attacks import AttackConfig
from robustal.engine.evaluation import evaluate, paper_attack


class Constant(nn.Module):
    """Predicts class 1 whatever the input: attacks cannot change it."""

    def forward(self, x):
        return 0 * x.flatten(1).sum(1, keepdim=True) + torch.tensor([0.0, 1.0])


def test_constant_model_accuracy_is_the_share_of_its_class():
    data = Split(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.tensor([1] * 7 + [0] * 3))
    result = evaluate(Constant(), data, AttackConfig("pgd", 0.3, 0.1, 3), batch_size=4)
    assert result.clean == 0.7 and result.robust == 0.7 and result.n == 10


def test_robust_never_exceeds_clean_and_restores_mode(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).train()
    result = evaluate(model, digits.splits().test, paper_attack(digits, steps=5))
    assert result.robust <= result.clean
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_no_attack_gives_no_robust_accuracy(digits):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert evaluate(model, digits.splits().test).robust is None


def test_paper_attack_uses_the_dataset_budget(digits):
    attack = paper_attack(digits)
    assert (attack.steps, attack.epsilon, attack.step_size, attack.random_start) == (50, 0.2, 0.01, True)
