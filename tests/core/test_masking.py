"""Gradient-masking checks (robustal.engine.masking): models built to mask gradients are flagged, a normally trained one
passes, the best known robust accuracy never exceeds any attack's, and ``evaluate --checks`` reports them."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustal.data.dataset import to_float
from robustal.engine.attacks import AttackConfig
from robustal.engine.evaluation import evaluate, robust_mask
from robustal.engine.masking import (
    AUTOATTACK_GAP,
    SWEEP_MAX_ROBUST,
    accuracy_checks,
    best_known,
    masking_checks,
    sweep_checks,
    zero_gradient_mask,
)
from robustal.errors import ConfigError

#: Cheap settings: PGD-10 and a 300-query Square on 60 test digits.
FAST = {"steps": 10, "square_queries": 300}


class Quantise(nn.Module):
    """Rounds the input to 5 grey levels: the forward pass works, the input gradient is exactly zero."""

    def forward(self, x):
        return torch.round(x * 4) / 4


class Scale(nn.Module):
    """Multiplies the logits: at 1e4 the softmax saturates and cross-entropy's input gradient underflows to 0."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))


def _train(model: nn.Module, pool, epochs: int = 10) -> nn.Module:
    """Standard training on the digits pool (Adam, batch 128): about 95 % clean accuracy in a second or two."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = to_float(pool.x), pool.y
    for _ in range(epochs):
        for i in range(0, len(y), 128):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def models(digits):
    """A normally trained CNN, the same CNN with logits x 1e4, and a CNN trained behind a quantising input layer."""
    pool = digits.splits().pool
    normal = _train(_cnn(), pool)
    return {"normal": normal, "saturated": nn.Sequential(normal, Scale(1e4)),
            "quantised": _train(nn.Sequential(Quantise(), _cnn()), pool)}


@pytest.fixture(scope="module")
def test_digits(digits):
    return digits.splits().test.subset(torch.arange(60))


def _by_name(report):
    return {c.name: c for c in report.checks}


def test_a_normally_trained_model_passes_the_zero_gradient_and_sweep_checks(models, digits, test_digits):
    report = masking_checks(models["normal"], test_digits, digits.epsilon, **FAST)
    checks = _by_name(report)
    assert report.clean > 0.8
    for name in ("epsilon-sweep", "monotone-sweep", "zero-gradients"):
        assert checks[name].passed and checks[name].meaning is None, checks[name]
    assert checks["epsilon-sweep"].values["eps=1"] <= SWEEP_MAX_ROBUST
    assert checks["zero-gradients"].values["share"] == 0
    assert report.settings["sweep_epsilons"] == pytest.approx([0.2, 0.4, 0.8, 1.0])


def test_saturated_logits_are_flagged_and_square_sets_the_best_known_accuracy(models, digits, test_digits):
    """Logits x 1e4: PGD finds nothing (zero gradients), Square ignores gradients and fools the model; the checks
    flag it and the best-known robust accuracy is Square's, not PGD's."""
    report = masking_checks(models["saturated"], test_digits, digits.epsilon, **FAST)
    checks = _by_name(report)
    assert report.robust["pgd"] > 0.8 and report.robust["square"] < report.robust["pgd"] - 0.3
    for name in ("zero-gradients", "square-vs-gradient", "epsilon-sweep"):
        assert not checks[name].passed and checks[name].meaning, checks[name]
    assert checks["zero-gradients"].values["share"] > 0.8
    assert report.best_known <= report.robust["square"]
    assert {c.name for c in report.flags} >= {"zero-gradients", "square-vs-gradient", "epsilon-sweep"}


def test_a_quantised_input_is_flagged_by_the_sweep_and_the_zero_gradients(models, digits, test_digits):
    report = masking_checks(models["quantised"], test_digits, digits.epsilon, **FAST)
    checks = _by_name(report)
    assert report.clean > 0.8
    assert not checks["zero-gradients"].passed and checks["zero-gradients"].values["share"] == 1
    assert not checks["epsilon-sweep"].passed and checks["epsilon-sweep"].values["eps=1"] > SWEEP_MAX_ROBUST
    assert not checks["square-vs-gradient"].passed


def test_given_masks_are_used_and_an_autoattack_mask_adds_the_gap_check(models, digits, test_digits):
    model = models["saturated"]
    pgd = robust_mask(model, test_digits, AttackConfig("pgd", digits.epsilon, 2.5 * digits.epsilon / 10, 10))
    nothing = torch.zeros(len(test_digits), dtype=torch.bool)
    report = masking_checks(model, test_digits, digits.epsilon, attacks_done={"pgd": pgd, "autoattack": nothing},
                            **FAST)
    assert report.robust["pgd"] == pytest.approx(pgd.float().mean().item())
    assert report.robust["autoattack"] == 0 and report.best_known == 0  # nothing withstands the given AutoAttack
    gap = _by_name(report)["pgd-autoattack-gap"]
    assert not gap.passed and gap.values["gap"] == pytest.approx(report.robust["pgd"])
    assert report.settings["given"] == ["autoattack", "pgd"] and "pgd" not in report.settings


@pytest.mark.parametrize("done, match", [({"cw": torch.zeros(60, dtype=torch.bool)}, "unknown attack 'cw'"),
                                         ({"pgd": torch.zeros(59, dtype=torch.bool)}, r"shape \(60,\)"),
                                         ({"pgd": torch.zeros(60)}, "bool tensor")])
def test_bad_given_masks_are_refused_with_the_fix(models, digits, test_digits, done, match):
    with pytest.raises(ConfigError, match=match):
        masking_checks(models["normal"], test_digits, digits.epsilon, attacks_done=done, **FAST)


def test_accuracy_checks_judge_what_stored_numbers_allow():
    assert accuracy_checks({"autoattack": 0.4}) == ()  # nothing to compare without PGD
    checks = accuracy_checks({"pgd": 0.6, "autoattack": 0.6 - AUTOATTACK_GAP - 0.01, "square": 0.7, "fgsm": 0.5,
                              "clean": 0.9})
    assert [c.name for c in checks] == ["square-vs-gradient", "iterative-vs-single-step", "pgd-autoattack-gap"]
    assert [c.passed for c in checks] == [True, False, False]
    assert checks[0].meaning is None and "one step" in checks[1].meaning
    assert checks[2].values["gap"] == pytest.approx(AUTOATTACK_GAP + 0.01)
    assert accuracy_checks({"pgd": 0.52, "autoattack": 0.5})[0].passed
    with pytest.raises(ConfigError, match="robust\\['square'\\]"):
        accuracy_checks({"pgd": 0.5, "square": 52.0})  # a percentage, not a fraction


def test_sweep_checks_flag_a_rise_and_a_plateau():
    rising = dict(zip((0.1, 0.2, 0.4, 1.0), (0.5, 0.3, 0.35, 0.0), strict=True))
    to_zero, monotone = sweep_checks(rising)
    assert to_zero.passed and not monotone.passed
    plateau = sweep_checks({0.3: 0.5, 0.6: 0.5, 1.0: 0.4})
    assert not plateau[0].passed and plateau[1].passed and "eps=1" in plateau[0].meaning


def test_zero_gradient_mask_finds_images_without_a_gradient(models, test_digits):
    assert not zero_gradient_mask(models["normal"], test_digits, batch_size=7).any()
    assert zero_gradient_mask(models["quantised"], test_digits, batch_size=7).all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=12, max_size=12), min_size=1, max_size=5))
def test_best_known_is_robust_only_where_every_attack_failed(rows):
    masks = [torch.tensor(r) for r in rows]
    best = best_known(masks)
    for m in masks:
        assert best.float().mean() <= m.float().mean()
    assert best.tolist() == [all(col) for col in zip(*rows, strict=True)]
    assert torch.equal(masks[0], torch.tensor(rows[0]))  # the inputs are left as they were


def test_robust_mask_counts_to_evaluates_robust_accuracy(models, digits, test_digits):
    attack = AttackConfig("pgd", 0.05, 0.01, 5)
    model = models["normal"]
    mask = robust_mask(model, test_digits, attack, batch_size=16, seed=3)
    result = evaluate(model, test_digits, attack, batch_size=16, seed=3)
    assert mask.dtype == torch.bool and mask.float().mean().item() == pytest.approx(result.robust)
    with torch.no_grad():
        wrong = model(to_float(test_digits.x)).argmax(1) != test_digits.y
    assert wrong.any() and not mask[wrong].any()  # misclassified clean: never robust


def test_evaluate_checks_end_to_end(tmp_path, capsys):
    from robustal.cli import main

    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", "digits", "--training", "standard", "--epochs", "2", "--eval-steps", "0",
                 "--no-progress", "--save", str(model)]) == 0
    capsys.readouterr()
    argv = ["evaluate", "--model", str(model), "--n", "30", "--eval-steps", "5", "--checks", "--checks-queries", "50"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    masking = out["masking"]
    assert masking["robust"]["pgd"] == out["robust"]  # the evaluation's own mask, reused
    assert out["best_known_robust"] <= min(masking["robust"].values())
    names = [c["name"] for c in masking["checks"]]
    assert names == ["epsilon-sweep", "monotone-sweep", "zero-gradients", "square-vs-gradient",
                     "iterative-vs-single-step"]
    assert masking["settings"]["square"] == {"n_queries": 50} and masking["settings"]["given"] == ["pgd"]
    assert masking["flags"] == [c["name"] for c in masking["checks"] if not c["passed"]]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "gradient-masking checks (eps=0.2, n=30)" in text and "best-known robust accuracy: " in text
    lines = [line.split() for line in text.splitlines() if line.strip().startswith(("PASS", "FLAG"))]
    assert [line[1].rstrip(":") for line in lines] == names


@pytest.mark.parametrize("attack, check", [("square", "square-vs-gradient"), ("autoattack", "pgd-autoattack-gap")])
def test_evaluate_checks_reuse_the_evaluation_attacks_mask(tmp_path, capsys, monkeypatch, attack, check):
    """``--attack square|autoattack --checks``: the evaluation's mask is the checks' (not run again), the checks run
    PGD themselves, and AutoAttack's mask adds the PGD -> AutoAttack gap. The attack is replaced by one that changes
    nothing (robust = clean): the wiring is tested, not pyautoattack."""
    from robustal.cli import main
    from robustal.engine.attacks import ATTACKS

    monkeypatch.setitem(ATTACKS._entries, attack, lambda model, x, y, **kwargs: x)
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", "digits", "--training", "standard", "--epochs", "2", "--eval-steps", "0",
                 "--no-progress", "--save", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--n", "30", "--attack", attack, "--eval-steps", "5",
                 "--checks", "--checks-queries", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    masking = out["masking"]
    assert out["robust"] == out["clean"] == masking["robust"][attack] == masking["clean"]
    assert masking["settings"]["given"] == [attack] and attack not in masking["settings"]
    assert masking["settings"]["pgd"]["steps"] == 5
    assert check in [c["name"] for c in masking["checks"]]
    assert out["best_known_robust"] <= masking["robust"]["pgd"]
