"""The weight average (EMA): its update rule, and fit validating, keeping and returning the average."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustal.engine.evaluation import evaluate
from robustal.engine.training import TrainConfig, fit
from robustal.engine.weight_average import WeightAverage
from robustal.errors import ConfigError
from robustal.models import create_model


def test_each_update_moves_the_average_by_one_minus_the_warmed_up_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    start = {k: v.clone() for k, v in average.model.state_dict().items()}
    assert average.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the first step mostly follows
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # BatchNorm's running statistics and its integer counter move
    average.update()
    state = model.state_dict()
    for key, value in average.model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, start[key] + 0.9 * (state[key] - start[key]))
        else:  # num_batches_tracked: copied, not averaged
            assert torch.equal(value, state[key])
    assert average.current_decay() == pytest.approx(2 / 11)
    for _ in range(10_000):
        average.updates += 1
    assert average.current_decay() == 0.9  # capped at the decay asked for


def test_the_average_does_not_train_and_the_model_is_untouched():
    model = nn.Linear(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    average = WeightAverage(model, decay=0.5)
    average.update()
    assert not any(p.requires_grad for p in average.model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(nn.Linear(2, 2), decay)


@pytest.mark.parametrize("ema", [1.0, -0.1, float("nan")])
def test_train_config_refuses_an_ema_outside_0_1(ema):
    with pytest.raises(ConfigError, match="The 'ema' parameter of TrainConfig"):
        TrainConfig(ema=ema)


def _train(digits, ema, epochs=3):
    splits = digits.splits()
    torch.manual_seed(0)
    model = create_model("small-cnn")
    cfg = TrainConfig(mode="standard", epochs=epochs, batch_size=64, lr=3e-3, validate_last=None, ema=ema)
    return model, fit(model, splits.pool, splits.val, cfg, seed=0), splits


def test_fit_validates_and_returns_the_average(digits):
    model, result, splits = _train(digits, ema=0.99)
    raw_model, raw, _ = _train(digits, ema=0.0)
    # The same optimizer steps, but the scores and the returned weights are the average's, not the raw weights'.
    assert result.steps == raw.steps
    assert [h["loss"] for h in result.history] == [h["loss"] for h in raw.history]
    assert [h["score"] for h in result.history] != [h["score"] for h in raw.history]
    assert evaluate(model, splits.val).clean == pytest.approx(result.best_score)
    pairs = zip(model.state_dict().values(), raw_model.state_dict().values(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)
    assert result.best_score > 0.8


def test_fit_with_ema_keeps_the_best_epochs_average(digits, monkeypatch):
    """The best epoch is an early one: the returned weights are its average, not the last epoch's."""
    import robustal.engine.training as training

    scores = iter([0.9, 0.5, 0.4])
    real = training.evaluate
    kept = {}

    def scripted(model, val, attack=None, **kw):
        result = real(model, val, attack, **kw)
        score = next(scores)
        if score == 0.9:
            kept.update({k: v.clone() for k, v in model.state_dict().items()})
        return type(result)(clean=score, robust=None if attack is None else score, n=result.n)

    monkeypatch.setattr(training, "evaluate", scripted)
    model, result, _ = _train(digits, ema=0.99)
    assert result.best_epoch == 1
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())


def test_train_with_ema_from_the_command_line(capsys):
    from robustal.cli import main

    assert main(["train", "--dataset", "digits", "--training", "standard", "--epochs", "2", "--ema", "0.99",
                 "--eval-steps", "0", "--no-progress"]) == 0
    clean = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("clean accuracy:")]
    assert 0.5 < float(clean[0].split()[2]) <= 1


def test_a_run_stored_before_ema_resumes_without_it_and_refuses_it():
    from robustal.storage.schema import config_diff

    old = {"loop": {"train": {"epochs": 10}}}  # robustal 0.4 stored no ema
    assert config_diff(old, {"loop": {"train": {"epochs": 10, "ema": 0.0}}}) == []
    assert config_diff(old, {"loop": {"train": {"epochs": 10, "ema": 0.999}}}) == [
        "loop.train.ema: stored 0.0, now 0.999"]
