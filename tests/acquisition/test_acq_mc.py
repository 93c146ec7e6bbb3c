"""mc_predict replicates each batch at the first dropout layer; results equal replicating the input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustal.acquisition.inference import mc_predict
from robustal.acquisition.scores import entropy
from robustal.models import MCDropout, create_model, mc_dropout


def replicate_input_reference(model, x, passes, seed):
    """The plain way: the whole input repeated T times, one pass, same generator seed."""
    model.eval()
    with torch.no_grad(), mc_dropout(model, generator=torch.Generator().manual_seed(seed)):
        p = torch.softmax(model(x.repeat(passes, 1, 1, 1)), 1).view(passes, len(x), -1)
    return p.mean(0), entropy(p.reshape(-1, p.shape[-1])).view(passes, len(x)).mean(0)


@pytest.mark.parametrize("name, size", [("lenet5", 32), ("small-cnn", 8), ("vgg8", 32), ("resnet18", 16)])
def test_replicating_at_the_first_dropout_equals_replicating_the_input(name, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, image_size=size)
    x = torch.rand(6, 1, size, size, generator=torch.Generator().manual_seed(1))
    mc = mc_predict(model, x, passes=5, batch_size=50, generator=torch.Generator().manual_seed(3))
    mean_p, mean_h = replicate_input_reference(model, x, 5, 3)
    assert torch.allclose(mc.mean_probs, mean_p, atol=1e-5)
    assert torch.allclose(mc.mean_entropy, mean_h, atol=1e-4)
    assert not any(m._forward_pre_hooks for m in model.modules())  # hooks removed


class SkipAroundDropout(nn.Module):
    """A skip connection around the dropout: replicating inside the net fails, so the input is replicated."""

    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = nn.Linear(16, 16), MCDropout(0.5), nn.Linear(16, 3)

    def forward(self, x):
        h = self.a(x.flatten(1))
        return self.b(h + self.drop(h))


def test_falls_back_to_replicating_the_input_and_replays_the_same_masks():
    torch.manual_seed(0)
    model = SkipAroundDropout()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    mc = mc_predict(model, x, passes=3, batch_size=12, generator=torch.Generator().manual_seed(7))
    mean_p, mean_h = replicate_input_reference(model, x, 3, 7)
    assert torch.allclose(mc.mean_probs, mean_p, atol=1e-6)
    assert torch.allclose(mc.mean_entropy, mean_h, atol=1e-5)
    assert not mc.mean_probs.isnan().any()
