"""Contract tests for every registered model (timm style: parametrized over the registry)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustal.errors import ConfigError, UnknownNameError
from robustal.models import MODELS, create_model, has_mc_dropout, list_models, mc_dropout
from robustal.models.wide_resnet import WideResNet

NUM_CLASSES = 10
SIZE = 32
#: Smaller variants used by default where the registered size is too slow for the quick suite on a CPU.
SMALL_KWARGS: dict[str, dict] = {"wide-resnet": {"depth": 10, "widen_factor": 2}}


def build(name: str, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    factory = MODELS.get(name)
    return factory(num_classes=NUM_CLASSES, in_channels=in_channels, image_size=SIZE, **SMALL_KWARGS.get(name, {}))


def batch(in_channels: int = 3, n: int = 2) -> torch.Tensor:
    return torch.rand(n, in_channels, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed"


MODEL_NAMES = list_models()


def test_registry_has_the_papers_models():
    assert {"lenet5", "vgg8", "vgg16", "resnet18", "preact-resnet18", "wide-resnet", "small-cnn"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_and_features(name):
    model = build(name).eval()
    x = batch()
    with torch.no_grad():
        logits = model(x)
        f = model.features(x)
        via_head = model.head(f)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert f.shape == (2, model.feature_dim)
    assert torch.equal(via_head, logits)  # also: two eval-mode forwards agree exactly


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_grayscale_input(name):
    model = build(name, in_channels=1).eval()
    with torch.no_grad():
        logits = model(batch(in_channels=1, n=1))
    assert logits.shape == (1, NUM_CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_backward_reaches_every_parameter(name):
    model = build(name).train()
    loss = nn.functional.cross_entropy(model(batch()), torch.tensor([0, 1]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mc_dropout_is_stochastic_and_leaves_the_model_alone(name):
    model = build(name).eval()
    x = batch(n=1)
    assert has_mc_dropout(model)
    with torch.no_grad():
        plain = model(x)
        before = state(model)
        with mc_dropout(model, generator=torch.Generator().manual_seed(0)):
            first, second = model(x), model(x)
            assert not model.training
            assert all(not m.training for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        after_block = model(x)
        with mc_dropout(model, generator=torch.Generator().manual_seed(0)):
            replay = model(x)
    assert not torch.equal(first, second)
    assert not torch.equal(first, plain)
    assert torch.equal(replay, first)  # same seed → same masks
    assert torch.equal(after_block, plain)  # off again after the block
    assert_same_state(before, model)  # weights and BatchNorm running stats untouched


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_too_small_images_are_rejected_clearly_or_work(name):
    try:
        model = create_model(name, num_classes=NUM_CLASSES, in_channels=3, image_size=2)
    except ConfigError as e:
        assert name in str(e) and "at least" in str(e)
        return
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 2, 2)).shape == (2, NUM_CLASSES)


def test_unknown_model_suggests_the_nearest_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'") as info:
        create_model("resnet-18")
    assert isinstance(info.value, ConfigError)
    assert "preact-resnet18" in str(info.value)  # the valid names are listed


@pytest.mark.parametrize("depth", [8, 11, 0])
def test_wide_resnet_rejects_bad_depth(depth):
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=depth, widen_factor=1)


def test_wide_resnet_variants():
    model = WideResNet(depth=16, widen_factor=1)
    assert model.feature_dim == 64
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 1 + 3 * 2 * 2 + 2  # stem, blocks, 2 projections


@pytest.mark.slow
def test_full_size_wide_resnet_forward():
    model = create_model("wide-resnet", num_classes=NUM_CLASSES, in_channels=3, image_size=SIZE).eval()
    assert sum(p.numel() for p in model.parameters()) == 36_479_194  # WRN-28-10
    with torch.no_grad():
        logits = model(torch.rand(1, 3, SIZE, SIZE))
    assert logits.shape == (1, NUM_CLASSES) and torch.isfinite(logits).all()
