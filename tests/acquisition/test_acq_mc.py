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


NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, NO_CUDA])]


@pytest.mark.parametrize("device", DEVICES)
def test_mc_dropout_masks_are_drawn_on_the_models_device(device):
    """The selection's generator is a CPU one; MC-dropout masks come from a generator on the model's device,
    derived from it (reproducibly), so BALD and entropy-dropout run on CUDA as on the CPU."""
    from robustal.acquisition import SelectionContext, create_acquisition
    from robustal.models import create_model

    torch.manual_seed(0)
    model = create_model("small-cnn").to(device).eval()
    pool = torch.randint(0, 256, (60, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def ctx():
        return SelectionContext(model, pool, torch.arange(5), torch.Generator().manual_seed(2), device=device)

    c = ctx()
    assert c.device_generator.device.type == torch.device(device).type
    picks = [create_acquisition(name).select(ctx(), 7).indices for name in ("bald", "entropy-dropout")]
    again = [create_acquisition(name).select(ctx(), 7).indices for name in ("bald", "entropy-dropout")]
    assert all(torch.equal(a, b) for a, b in zip(picks, again, strict=True))


@pytest.mark.gpu
@NO_CUDA
def test_mc_predict_refuses_a_generator_on_another_device():
    from robustal.errors import ConfigError
    from robustal.models import create_model

    model = create_model("small-cnn").cuda()
    with pytest.raises(ConfigError, match="give a generator on the model's device"):
        mc_predict(model, torch.zeros(4, 1, 8, 8, dtype=torch.uint8), passes=2, device="cuda",
                   generator=torch.Generator())
