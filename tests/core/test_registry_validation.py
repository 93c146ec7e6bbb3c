"""The shared registry and the argument-check message template."""

from __future__ import annotations

import pytest
import torch

from robustal._registry import Registry
from robustal._validation import check_choice, check_float, check_int, check_probs
from robustal.errors import ConfigError, UnknownNameError


def test_registry_registers_and_lists_in_order():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(1)
    reg.register("beta-two")(2)
    assert reg.get("beta-two") == 2
    assert reg.names() == ["alpha", "beta-two"]
    assert reg.names("b*") == ["beta-two"]
    assert "alpha" in reg and "gamma" not in reg


def test_registry_rejects_duplicates():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(2)


def test_unknown_name_lists_choices_and_nearest_match():
    reg: Registry[int] = Registry("widget")
    for name in ("resnet18", "lenet5", "vgg16"):
        reg.register(name)(0)
    with pytest.raises(UnknownNameError) as info:
        reg.get("resnet-18")
    msg = str(info.value)
    assert "Unknown widget 'resnet-18'" in msg
    assert "Did you mean 'resnet18'?" in msg
    assert "lenet5" in msg and "vgg16" in msg
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)


def test_unknown_name_without_close_match_has_no_suggestion():
    reg: Registry[int] = Registry("widget")
    reg.register("lenet5")(0)
    with pytest.raises(UnknownNameError) as info:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(info.value)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_check_int_message_template(bad):
    with pytest.raises(ConfigError) as info:
        check_int(bad, "epochs", "fit", min_value=0)
    assert str(info.value) == f"The 'epochs' parameter of fit must be an int in [0, inf]. Got {bad!r} instead."


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "a", False])
def test_check_float_rejects_out_of_range(bad):
    with pytest.raises(ConfigError, match="The 'eps' parameter of pgd must be a float in \\[0, 1\\]"):
        check_float(bad, "eps", "pgd", min_value=0, max_value=1)


def test_check_float_exclusive_lower_bound():
    assert check_float(0.5, "lr", "x", min_value=0, min_inclusive=False) == 0.5
    with pytest.raises(ConfigError, match=r"\(0, inf\]"):
        check_float(0, "lr", "x", min_value=0, min_inclusive=False)


def test_check_choice():
    assert check_choice("pgd", "mode", "fit", ["standard", "pgd"]) == "pgd"
    with pytest.raises(ConfigError, match="one of 'standard', 'pgd'. Got 'madry'"):
        check_choice("madry", "mode", "fit", ["standard", "pgd"])


def test_check_probs_accepts_probabilities_and_rejects_logits():
    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    assert check_probs(p, "entropy") is p
    with pytest.raises(ConfigError, match="apply softmax first"):
        check_probs(torch.tensor([[2.0, -1.0]]), "entropy")
    with pytest.raises(ConfigError, match=r"shape \(n, classes\)"):
        check_probs(torch.ones(3), "entropy")
