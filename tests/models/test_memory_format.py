"""Channels-last where it was measured faster: the same function as contiguous memory, within float tolerance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustal.engine.training import TrainConfig
from robustal.models import create_model
from robustal.models.memory_format import apply_memory_format, uses_channels_last


@pytest.mark.parametrize("name, channels, size", [("lenet5", 1, 32), ("small-cnn", 1, 8), ("vgg8", 3, 32)])
def test_channels_last_and_contiguous_give_the_same_predictions_and_input_gradients(name, channels, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels, image_size=size).eval()
    cl = create_model(name, num_classes=10, in_channels=channels, image_size=size).eval()
    cl.load_state_dict(model.state_dict())
    assert apply_memory_format(cl, "cpu", "auto")  # these three are channels-last on the CPU by default
    convs = [m for m in cl.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = torch.rand(16, channels, size, size, generator=torch.Generator().manual_seed(1), requires_grad=True)
    out, out_cl = model(x), cl(x)
    torch.testing.assert_close(out_cl, out, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x)
    (g_cl,) = torch.autograd.grad(out_cl[:, 0].sum(), x)
    torch.testing.assert_close(g_cl, g, rtol=1e-4, atol=1e-5)


def test_the_layout_is_chosen_per_model_and_setting():
    lenet, resnet = create_model("lenet5"), create_model("resnet18", in_channels=3)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    assert uses_channels_last(lenet, "cpu") and not uses_channels_last(resnet, "cpu")
    assert not uses_channels_last(create_model("vgg16", in_channels=3), "cpu")  # measured slower (0.77x)
    assert not uses_channels_last(lenet, "cpu", "contiguous") and uses_channels_last(resnet, "cpu", "channels-last")
    assert not uses_channels_last(mlp, "cpu", "channels-last")  # no convolution: nothing to lay out
    assert not uses_channels_last(lenet, "cuda") and uses_channels_last(lenet, "cuda", precision="bf16")
    apply_memory_format(lenet, "cpu", "auto")
    apply_memory_format(lenet, "cpu", "contiguous")  # and back
    assert all(p.is_contiguous() for p in lenet.parameters())


def test_training_under_either_layout_ends_within_float_tolerance(digits):
    from robustal.engine.training import fit

    splits = digits.splits()
    train = splits.pool.subset(torch.arange(200))
    states = {}
    for layout in ("contiguous", "channels-last"):
        torch.manual_seed(0)
        model = create_model("small-cnn")
        cfg = TrainConfig(mode="pgd", epochs=1, attack_steps=2, min_steps=0, memory_format=layout).for_dataset(digits)
        fit(model, train, None, cfg, seed=0)
        states[layout] = model.state_dict()
    for key, value in states["contiguous"].items():
        torch.testing.assert_close(states["channels-last"][key], value, rtol=1e-3, atol=1e-4)
