"""AutoAttack and Square through pyautoattack: registration, the missing extra, RNG isolation, and (slow) AutoAttack
robust accuracy against robustal's PGD-50 on an adversarially trained small CNN."""

from __future__ import annotations

import sys

import pytest
import torch

from robustal.cli import main
from robustal.engine.attacks import ATTACKS, AttackConfig
from robustal.engine.autoattack import autoattack, square
from robustal.engine.evaluation import evaluate, paper_attack
from robustal.engine.training import TrainConfig, fit
from robustal.errors import ConfigError
from robustal.loop.experiment import model_factory


def _trained(digits, mode: str, epochs: int) -> torch.nn.Module:
    splits = digits.splits()
    torch.manual_seed(0)
    model = model_factory("small-cnn", digits)()
    fit(model, splits.pool, splits.val, TrainConfig(mode=mode, epochs=epochs, batch_size=64).for_dataset(digits))
    return model


@pytest.fixture(scope="module")
def standard_model(digits):
    return _trained(digits, "standard", 3)


def test_registered_and_configurable():
    assert {"autoattack", "square"} <= set(ATTACKS.names())
    assert AttackConfig(name="autoattack", epsilon=0.3).name == "autoattack"


def test_missing_extra_is_a_clear_error(monkeypatch, digits, capsys):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # makes `import pyautoattack` raise ImportError
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    for attack in (autoattack, square):
        with pytest.raises(ConfigError, match=r"pip install 'robustal\[autoattack\]'"):
            attack(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x, y, epsilon=0.1)
    # The CLI fails before training, with the install hint and no traceback.
    code = main(["train", "--dataset", "digits", "--attack", "autoattack", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install 'robustal[autoattack]'" in err and "Traceback" not in err


def test_square_few_queries(standard_model, digits):
    test = digits.splits().test
    x, y = test.x[:64].float() / 255, test.y[:64]
    state = torch.get_rng_state()
    gen = torch.Generator().manual_seed(1)
    x_adv = square(standard_model, x, y, epsilon=0.2, n_queries=50, generator=gen)
    assert torch.equal(state, torch.get_rng_state())  # Square seeds torch globally: isolated
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    again = square(standard_model, x, y, epsilon=0.2, n_queries=50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x_adv, again)  # reproducible from the generator
    with torch.no_grad():
        clean = (standard_model(x).argmax(1) == y).float().mean()
        robust = (standard_model(x_adv).argmax(1) == y).float().mean()
    assert robust < clean  # a standard-trained model is fooled by a few queries already


def test_autoattack_fast_on_fragile_model(standard_model, digits):
    """On a standard-trained model at eps 0.3 APGD-CE fools every digit, so AutoAttack stops early: a fast check
    (about 3 s; at eps 0.2 one digit survives APGD-CE and the remaining attacks take 40 s)."""
    test = digits.splits().test.subset(torch.arange(40))
    state = torch.get_rng_state()
    standard_model.train()
    flags = [p.requires_grad for p in standard_model.parameters()]
    aa = evaluate(standard_model, test, AttackConfig(name="autoattack", epsilon=0.3), seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert standard_model.training and [p.requires_grad for p in standard_model.parameters()] == flags
    pgd = evaluate(standard_model, test, AttackConfig(name="pgd", epsilon=0.3, step_size=0.01, steps=50), seed=0)
    assert aa.clean == pgd.clean
    assert aa.robust <= pgd.robust + 0.005


@pytest.mark.slow
def test_autoattack_vs_pgd50_on_robust_model(digits):
    """PGD-trained small CNN on digits (eps 0.2): AutoAttack <= PGD-50 + 0.5 points and >= PGD-50 - 10 points.

    Measured (seed 0, 250 test digits): clean 0.940, PGD-50 0.528, AutoAttack 0.464; about 3.5 minutes on one core.
    """
    model = _trained(digits, "pgd", 10)
    test = digits.splits().test
    pgd = evaluate(model, test, paper_attack(digits, 50), seed=0)
    state = torch.get_rng_state()
    aa = evaluate(model, test, paper_attack(digits, 50, "autoattack"), seed=0)
    assert torch.equal(state, torch.get_rng_state())
    assert pgd.robust > 0.3  # the model is meaningfully robust
    assert pgd.robust - 0.10 <= aa.robust <= pgd.robust + 0.005


def test_autoattack_logs_each_sub_attack_as_it_goes(standard_model, digits, caplog):
    """``evaluate --attack autoattack`` printed nothing for 7 minutes (issue 27.4): each sub-attack is logged at INFO
    as it starts and ends, with the robust accuracy and the time; AutoAttack's other chatter stays out."""
    import logging

    test = digits.splits().test
    x, y = test.x[:20].float() / 255, test.y[:20]
    with caplog.at_level(logging.INFO, logger="robustal"):
        autoattack(standard_model, x, y, epsilon=0.3, generator=torch.Generator().manual_seed(0))
    lines = [r.getMessage() for r in caplog.records if r.name == "robustal.engine.autoattack"]
    assert lines[0].startswith("AutoAttack (standard") and "on 20 images" in lines[0]
    assert "AutoAttack: running apgd-ce" in lines
    assert any(m.startswith("AutoAttack: robust accuracy after APGD-CE:") and "total time" in m for m in lines)
    assert not any("successfully perturbed" in r.getMessage() for r in caplog.records)  # per-batch chatter: -v only
