"""Training: configuration checks, batched augmentation, best-epoch restore, standard vs PGD training."""

from __future__ import annotations

import pytest
import torch

from robustal.data import Split
from robustal.errors import ConfigError
from robustal.evaluation import evaluate
from robustal.models import create_model
from robustal.training import TrainConfig, augment_batch, fit


@pytest.mark.parametrize("kwargs, param", [
    ({"mode": "madry"}, "mode"), ({"optimizer": "rmsprop"}, "optimizer"), ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"), ({"epsilon": 1.5}, "epsilon"),
    ({"attack_steps": 0}, "attack_steps"), ({"step_size": -1.0}, "step_size"), ({"augment": ("rotate",)}, "augment"),
    ({"epsilon_warmup": -1}, "epsilon_warmup"),
])
def test_train_config_rejects_bad_values(kwargs, param):
    with pytest.raises(ConfigError, match=f"The '{param}' parameter of TrainConfig"):
        TrainConfig(**kwargs)


def test_train_attack_defaults_to_pgd10_with_step_2_5_eps_over_k():
    attack = TrainConfig(mode="pgd", epsilon=0.3).train_attack()
    assert (attack.name, attack.steps, attack.random_start) == ("pgd", 10, True)
    assert attack.step_size == pytest.approx(0.075)
    assert TrainConfig(mode="standard", epsilon=0.3).train_attack() is None
    assert TrainConfig(mode="pgd", epsilon=0.3, random_start=False).train_attack().random_start is False


def test_for_dataset_fills_epsilon_and_augmentation(digits):
    cfg = TrainConfig(mode="pgd").for_dataset(digits)
    assert cfg.epsilon == digits.epsilon
    assert TrainConfig(mode="pgd", epsilon=0.05).for_dataset(digits).epsilon == 0.05


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = augment_batch(x, ("crop",), torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # each output equals some 5×5 window of its own padded image
        windows = padded[i, 0].unfold(0, 5, 1).unfold(1, 5, 1).reshape(-1, 5, 5)
        assert any(torch.equal(out[i, 0], w) for w in windows)


def test_flip_flips_about_half_and_keeps_content():
    x = torch.rand(200, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, ("flip",), torch.Generator().manual_seed(1))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert 60 < int(flipped.sum()) < 140


def test_no_augmentation_is_identity():
    x = torch.rand(3, 1, 4, 4)
    assert augment_batch(x, ()) is x


def test_fit_restores_the_best_epoch(digits):
    splits = digits.splits()
    torch.manual_seed(0)
    model = create_model("small-cnn")
    cfg = TrainConfig(mode="standard", epochs=4, batch_size=64, lr=3e-3)
    result = fit(model, splits.pool, splits.val, cfg, seed=0)
    scores = [h["score"] for h in result.history]
    assert len(scores) == 4
    assert result.best_epoch == 1 + scores.index(max(scores))
    assert result.best_score == max(scores)
    # The model holds the kept epoch's weights: its validation accuracy is that epoch's.
    assert evaluate(model, splits.val).clean == pytest.approx(result.best_score)
    assert result.best_score > 0.85


def test_fit_with_pgd_scores_epochs_by_robust_accuracy(digits):
    splits = digits.splits()
    small = splits.pool.subset(torch.arange(300))
    torch.manual_seed(0)
    model = create_model("small-cnn")
    cfg = TrainConfig(mode="pgd", epochs=2, batch_size=64, attack_steps=3).for_dataset(digits)
    result = fit(model, small, splits.val, cfg, seed=0)
    for h in result.history:
        assert h["score"] == h["val_robust"] <= h["val_clean"]


def test_fit_is_reproducible(digits):
    splits = digits.splits()
    small = splits.pool.subset(torch.arange(200))

    def train():
        torch.manual_seed(0)
        model = create_model("small-cnn")
        fit(model, small, None, TrainConfig(mode="pgd", epochs=1, attack_steps=2, epsilon=0.2), seed=5)
        return model.state_dict()

    a, b = train(), train()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pgd_training_beats_standard_training_under_attack(digits):
    """The core claim, on the offline default: adversarial training buys robustness, standard training has none."""
    splits = digits.splits()
    attack = TrainConfig(mode="pgd", epsilon=digits.epsilon, attack_steps=10).train_attack()
    robust = {}
    for mode in ("standard", "pgd"):
        torch.manual_seed(0)
        model = create_model("small-cnn")
        cfg = TrainConfig(mode=mode, epochs=4, batch_size=64, attack_steps=5).for_dataset(digits)
        fit(model, splits.pool, None, cfg, seed=0)
        robust[mode] = evaluate(model, splits.test, attack).robust
    assert robust["standard"] < 0.15
    assert robust["pgd"] > robust["standard"] + 0.2


def test_fit_rejects_empty_training_set():
    model = create_model("small-cnn")
    empty = Split(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        fit(model, empty, None, TrainConfig())
