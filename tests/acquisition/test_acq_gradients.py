"""EGL against brute-force per-sample gradients, DeepFool against the closed form, MC dropout against BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustal.acquisition.gradients import deepfool_distances, expected_gradient_length
from robustal.acquisition.inference import mc_predict, predict
from robustal.engine.attacks import deepfool
from robustal.models.base import Classifier, MCDropout


class TinyBNNet(Classifier):
    """Conv → BatchNorm → ReLU → MCDropout → linear: batch-dependent unless BatchNorm stays in eval mode."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.drop = MCDropout(0.3)
        self.fc = nn.Linear(3 * 4 * 4, classes)
        self.feature_dim = 48
        with torch.no_grad():  # non-trivial running statistics
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def features(self, x):
        return self.drop(F.relu(self.bn(self.conv(x)))).flatten(1)

    def head(self, f):
        return self.fc(f)


def test_egl_matches_brute_force_per_sample_per_class_gradients():
    torch.manual_seed(0)
    model = TinyBNNet().train()  # EGL must switch to eval mode (BatchNorm) and restore train mode afterwards
    x = torch.rand(7, 1, 4, 4)
    model.eval()
    expected = []
    for xi in x:
        xi = xi[None].clone().requires_grad_(True)
        logits = model(xi)
        p = torch.softmax(logits, 1)[0].detach()
        total = 0.0
        for c in range(logits.shape[1]):
            (g,) = torch.autograd.grad(F.cross_entropy(logits, torch.tensor([c])), xi, retain_graph=True)
            total += p[c] * g.norm()
        expected.append(total)
    model.train()
    got = expected_gradient_length(model, x, batch_size=3)
    assert torch.allclose(got, torch.stack(expected), rtol=1e-5, atol=1e-7)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def linear_model(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), lin)


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("overshoot", [0.02, 0.0])
def test_deepfool_on_a_two_class_linear_model_matches_the_closed_form(clip, overshoot):
    w = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.5, 1.0, -1.0, 0.75]])
    b = torch.tensor([0.1, -0.05])
    model = linear_model(w, b)
    x = 0.45 + 0.1 * torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    dw, db = w[1] - w[0], b[1] - b[0]
    dist = (x.flatten(1) @ dw + db).abs() / dw.norm()  # |w·x + b| / ‖w‖
    norms, flipped, x_adv = deepfool(model, x, overshoot=overshoot, clip=clip)
    assert flipped.all()
    assert torch.allclose(norms, (1 + overshoot) * (dist + 1e-4), rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != model(x).argmax(1)).all()


def test_deepfool_on_a_multiclass_linear_model_takes_the_nearest_boundary():
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(5, 4, generator=g), torch.randn(5, generator=g) * 0.1
    model = linear_model(w, b)
    x = 0.4 + 0.2 * torch.rand(8, 1, 2, 2, generator=g)
    f = x.flatten(1) @ w.T + b
    label = f.argmax(1)
    dist = torch.stack([min((f[i, k] - f[i, label[i]]).abs() / (w[k] - w[label[i]]).norm()
                            for k in range(5) if k != label[i]) for i in range(len(x))])
    norms, flipped, _ = deepfool(model, x, clip=False, batch_size=3)
    assert flipped.all()
    assert torch.allclose(norms, 1.02 * (dist + 1e-4), rtol=1e-4, atol=1e-6)


def test_deepfool_gives_up_on_a_constant_model_and_stays_in_the_box():
    class Constant(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4, 3))

        def forward(self, x):
            return x.flatten(1) @ self.w + torch.tensor([1.0, 0.0, 0.0])

    x = torch.rand(3, 1, 2, 2)
    norms, flipped, x_adv = deepfool(Constant(), x)
    assert not flipped.any() and (norms == 0).all() and torch.equal(x_adv, x)
    n2, f2 = deepfool_distances(Constant(), x, attempts=3)
    assert not f2.any() and (n2 == 0).all()


def test_deepfool_images_stay_in_the_box_on_a_cnn():
    torch.manual_seed(0)
    model = TinyBNNet()
    x = torch.rand(10, 1, 4, 4)
    x[:, :, 0] = 0.0  # saturated pixels, as in MNIST
    norms, flipped, x_adv = deepfool(model, x)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.allclose(norms, (x_adv - x).flatten(1).norm(dim=1))
    with torch.no_grad():
        changed = model.eval()(x_adv).argmax(1) != model(x).argmax(1)
    assert torch.equal(changed, flipped)


def test_mc_dropout_keeps_batchnorm_in_eval_and_the_state_unchanged():
    torch.manual_seed(0)
    model = TinyBNNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bn_modes = []
    model.bn.register_forward_hook(lambda m, i, o: bn_modes.append(m.training))
    x = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    mc = mc_predict(model, x, passes=4, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert bn_modes and not any(bn_modes)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and not model.drop.active
    deterministic = predict(model, x).probs
    assert not torch.allclose(mc.mean_probs, deterministic)  # dropout was on ...
    assert torch.allclose(predict(model, x).probs, deterministic)  # ... and is off again
    again = mc_predict(model, x, passes=4, batch_size=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mc.mean_probs, again.mean_probs)
