"""Training: configuration checks, batched augmentation, best-epoch restore, standard vs PGD training."""

from __future__ import annotations

import pytest
import torch

from robustal.data import Split
from robustal.engine.evaluation import evaluate
from robustal.engine.training import TrainConfig, augment_batch, fit
from robustal.errors import ConfigError
from robustal.models import create_model


@pytest.mark.parametrize("kwargs, param", [
    ({"mode": "madry"}, "mode"), ({"optimizer": "rmsprop"}, "optimizer"), ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"), ({"lr": 0.0}, "lr"), ({"epsilon": 1.5}, "epsilon"),
    ({"attack_steps": 0}, "attack_steps"), ({"step_size": -1.0}, "step_size"), ({"augment": ("rotate",)}, "augment"),
    ({"epsilon_warmup": -1}, "epsilon_warmup"), ({"min_steps": -1}, "min_steps"),
    ({"trades_beta": -1.0}, "trades_beta"),
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


def test_augment_none_takes_the_datasets_and_empty_switches_it_off(digits):
    import dataclasses

    cifar_like = dataclasses.replace(digits, augment=("crop", "flip"))
    assert TrainConfig().for_dataset(cifar_like).augment == ("crop", "flip")
    assert TrainConfig(augment=()).for_dataset(cifar_like).augment == ()
    assert TrainConfig(augment=["flip"]).for_dataset(cifar_like).augment == ("flip",)
    with pytest.raises(ConfigError, match="'augment' parameter of TrainConfig must be a list of crop, flip"):
        TrainConfig(augment=5)


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
    assert result.best_epoch == max(i + 1 for i, s in enumerate(scores) if s == max(scores))  # ties: the later
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


def _scripted_validation(monkeypatch, results):
    """Make fit's per-epoch validation return ``results`` (clean, robust) in turn."""
    from robustal.engine import training
    from robustal.engine.evaluation import EvalResult

    it = iter(results)
    monkeypatch.setattr(training, "evaluate", lambda *a, **k: EvalResult(*next(it), n=100))


@pytest.mark.parametrize("results, best", [
    ([(0.5, 0.2), (0.6, 0.3), (0.9, 0.25)], 2),    # the highest robust accuracy wins
    ([(0.5, 0.3), (0.7, 0.3), (0.6, 0.3)], 2),     # equal robust accuracy: the higher clean accuracy
    ([(0.1, 0.1), (0.1, 0.1), (0.1, 0.1)], 3),     # all equal (a model at chance): the last epoch, not the first
])
def test_best_epoch_ties_go_to_clean_accuracy_then_the_later_epoch(monkeypatch, digits, results, best):
    _scripted_validation(monkeypatch, results)
    splits = digits.splits()
    torch.manual_seed(0)
    model = create_model("small-cnn")
    cfg = TrainConfig(mode="pgd", epochs=3, batch_size=64, attack_steps=1).for_dataset(digits)
    result = fit(model, splits.pool.subset(torch.arange(64)), splits.val, cfg, seed=0)
    assert result.best_epoch == best
    assert (result.best_clean, result.best_score) == results[best - 1]


def test_chance_level_is_the_majority_share_and_at_chance_is_at_most_1_5_times_it(monkeypatch, digits):
    from robustal.engine.training import chance_level, is_at_chance

    assert chance_level(torch.tensor([0, 0, 0, 1])) == 0.75
    assert is_at_chance(0.15, 0.1) and not is_at_chance(0.16, 0.1)
    _scripted_validation(monkeypatch, [(0.11, 0.10), (0.12, 0.11)])
    splits = digits.splits()
    model = create_model("small-cnn")
    cfg = TrainConfig(mode="pgd", epochs=2, attack_steps=1).for_dataset(digits)
    result = fit(model, splits.pool.subset(torch.arange(32)), splits.val, cfg, seed=0)
    assert result.chance_level == chance_level(splits.val.y) and result.at_chance


def test_min_steps_is_a_floor_on_optimizer_steps(digits):
    small = digits.splits().pool.subset(torch.arange(100))
    for min_steps, epochs, expected in [(0, 3, 3), (30, 3, 30), (31, 3, 33), (2, 3, 3)]:
        model = create_model("small-cnn")
        cfg = TrainConfig(mode="standard", epochs=epochs, batch_size=128, min_steps=min_steps)
        assert fit(model, small, None, cfg, seed=0).steps == expected
    cfg = TrainConfig(mode="standard", epochs=2, batch_size=40, min_steps=0)  # 100 = 40 + 40 + 20: 3 per epoch
    assert fit(create_model("small-cnn"), small, None, cfg, seed=0).steps == 6


def test_trades_adversary_stays_in_the_ball_and_raises_the_kl():
    import torch.nn.functional as F

    from robustal.engine.attacks import trades_adversary

    torch.manual_seed(0)
    model = create_model("small-cnn").eval()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x_adv = trades_adversary(model, x, epsilon=0.2, step_size=0.05, steps=5, generator=torch.Generator().manual_seed(2))
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1

    def kl(z):
        with torch.no_grad():
            return F.kl_div(F.log_softmax(model(z), 1), F.softmax(model(x), 1), reduction="sum").item()

    assert kl(x_adv) > 10 * max(kl((x + 0.001 * torch.randn_like(x)).clamp(0, 1)), 1e-8)


def test_trades_trains_lenet5_on_mnist_to_nontrivial_robustness(mnist_npz):
    """TRADES (β = 6) on 4 000 real MNIST images, 5 epochs: robust under PGD-20 at ε = 0.3 (standard training: 0)."""
    from robustal.data import load_dataset
    from robustal.engine.evaluation import paper_attack

    data = load_dataset(str(mnist_npz))
    splits = data.splits()
    torch.manual_seed(0)
    model = create_model("lenet5")
    cfg = TrainConfig(mode="trades", epochs=5, attack_steps=5, epsilon_warmup=1).for_dataset(data)
    result = fit(model, splits.pool.subset(torch.arange(4000)), splits.val.subset(torch.arange(300)), cfg, seed=0)
    assert not result.at_chance and result.best_score == max(h["val_robust"] for h in result.history)
    ev = evaluate(model, splits.test.subset(torch.arange(300)), paper_attack(data, 20))
    assert ev.clean > 0.7 and ev.robust > 0.12, ev


def test_bf16_trains_in_bfloat16_and_validates_in_fp32(digits, monkeypatch):
    """Mixed precision covers the training passes and the training attack; validation stays fp32."""
    from robustal.engine import training

    seen = {"train": set(), "val": set()}
    phase = {"now": "train"}
    real_evaluate = training.evaluate

    def evaluate(*args, **kwargs):
        phase["now"] = "val"
        try:
            return real_evaluate(*args, **kwargs)
        finally:
            phase["now"] = "train"

    monkeypatch.setattr(training, "evaluate", evaluate)
    torch.manual_seed(0)
    model = create_model("small-cnn")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, inp, out: seen[phase["now"]].add(out.dtype))
    splits = digits.splits()
    cfg = TrainConfig(mode="pgd", epochs=1, attack_steps=2, precision="bf16").for_dataset(digits)
    result = fit(model, splits.pool.subset(torch.arange(64)), splits.val.subset(torch.arange(40)), cfg)
    assert seen["train"] == {torch.bfloat16}
    assert seen["val"] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32 (autocast, not .half())
    assert 0 <= result.best_score <= 1
    with pytest.raises(ConfigError, match="'precision' parameter of TrainConfig must be one of 'fp32', 'bf16'"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("n, batch_size", [(129, 128), (257, 128), (1, 128), (65, 32), (300, 64), (3, 2)])
def test_an_epoch_is_a_partition_and_a_last_batch_of_one_joins_the_previous(n, batch_size):
    """Every sample once per pass, no batch of one (BatchNorm needs two) -- with two, three or more batches."""
    from robustal.engine.training import _batches

    parts = _batches(n, batch_size, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    assert all(len(p) >= 2 for p in parts) or n == 1
    assert len(parts) == max(1, n // batch_size if n % batch_size == 1 else -(-n // batch_size))
