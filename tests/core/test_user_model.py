"""A user's own model on the command line (``--model module:factory``), rebuilt from its checkpoint by ``evaluate``
and ``select``; ``robustal evaluate`` on any saved checkpoint."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from robustal.cli import main
from robustal.errors import ConfigError
from robustal.models import create_model

MODULE = """
import torch
from torch import nn


class Plain(nn.Module):  # logits only: no features/head, no MC dropout
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 64), nn.ReLU(),
                                 nn.Linear(64, num_classes))

    def forward(self, x):
        return self.net(x)


def plain(num_classes, in_channels, image_size):
    return Plain(num_classes, in_channels, image_size)


def broken(num_classes, in_channels, image_size):
    raise RuntimeError("out of ideas")


def not_a_module(num_classes, in_channels, image_size):
    return 42


def seven_outputs(num_classes, in_channels, image_size):  # the last layer's size hard-coded
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 7))


def rgb_only(num_classes, in_channels, image_size):  # 3 input channels hard-coded
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(),
                         nn.Linear(4 * image_size * image_size, num_classes))


class WithFeatures(Plain):
    def forward(self, x):
        return self.net(x), x.flatten(1)


def tuple_output(num_classes, in_channels, image_size):
    return WithFeatures(num_classes, in_channels, image_size)


class Unregistered(nn.Module):  # its layer sits in a Python list: nn.Module never sees its parameters
    def __init__(self, num_classes, in_channels, image_size):
        super().__init__()
        self.layers = [nn.Linear(in_channels * image_size * image_size, num_classes)]

    def forward(self, x):
        return self.layers[0](x.flatten(1))


def no_parameters(num_classes, in_channels, image_size):
    return Unregistered(num_classes, in_channels, image_size)


class Labels(Plain):
    def forward(self, x):
        return self.net(x).argmax(1)


def labels(num_classes, in_channels, image_size):
    return Labels(num_classes, in_channels, image_size)


class Detached(Plain):
    def forward(self, x):
        with torch.no_grad():
            return self.net(x)


def detached(num_classes, in_channels, image_size):
    return Detached(num_classes, in_channels, image_size)


def nan_logits(num_classes, in_channels, image_size):
    model = Plain(num_classes, in_channels, image_size)
    nn.init.constant_(model.net[-1].bias, float("nan"))
    return model


def with_batchnorm(num_classes, in_channels, image_size):
    model = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * image_size * image_size, num_classes))
    model[1].eval()  # a deliberately frozen BatchNorm stays frozen
    return model
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # Another test may have imported its own module of this name: import ours afresh, and leave none behind.
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    yield tmp_path
    sys.modules.pop("mynets", None)


def test_train_evaluate_and_select_rebuild_a_users_model(user_module, capsys):
    ckpt = user_module / "m.pt"
    assert main(["train", "--model", "mynets:plain", "--training", "standard", "--epochs", "3", "--eval-steps", "0",
                 "--train-size", "900", "--save", str(ckpt), "--no-progress"]) == 0
    assert torch.load(ckpt, weights_only=True)["model_name"] == "mynets:plain"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(ckpt), "--factory", "mynets:plain", "--eval-steps", "5", "--n", "100",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 100 and result["model_name"] == "mynets:plain" and result["split"] == "test"
    assert 0.3 < result["clean"] <= 1 and 0 <= result["robust"] <= result["clean"]
    assert result["attack"]["steps"] == 5 and result["attack"]["epsilon"] == 0.2
    assert main(["evaluate", "--model", str(ckpt), "--factory", "mynets:plain", "--eval-steps", "0", "--split",
                 "val"]) == 0
    assert capsys.readouterr().out.startswith("clean accuracy: ")
    picks = user_module / "picks.csv"
    assert main(["select", "--model", str(ckpt), "--factory", "mynets:plain", "--metric", "entropy", "--n", "10",
                 "--out", str(picks)]) == 0
    assert len(picks.read_text().splitlines()) == 11


def test_a_factory_given_by_file_path(user_module):
    model = create_model(str(user_module / "mynets.py") + ":plain", num_classes=3, in_channels=1, image_size=8)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("spec, message", [
    ("nowhere:plain", "cannot import 'nowhere'"),
    ("mynets:absent", "'mynets' has no callable 'absent'"),
    ("mynets:broken", "the factory raised RuntimeError: out of ideas"),
    ("mynets:not_a_module", "returned int, not a torch.nn.Module"),
    ("mynets:", "package.module:factory or path/to/file.py:factory"),
    ("mynets:seven_outputs", "maps a batch of 2 images (1×8×8) to shape (2, 7), expected (2, 10): one logit per "
                             "class for each image. The factory is called with num_classes=10"),
    ("mynets:rgb_only", "the model fails on a batch of 1×8×8 images: RuntimeError: "),
    ("mynets:tuple_output", "the model returns a tuple of 2, not a tensor of logits"),
    ("mynets:no_parameters", "the model has no trainable parameters"),
    ("mynets:labels", "the model returns torch.int64 values; forward must return float logits"),
    ("mynets:detached", "logits do not depend on its trainable parameters"),
    ("mynets:nan_logits", "NaN or infinite logits"),
])
def test_bad_user_models_are_explained(user_module, spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        create_model(spec, num_classes=10, in_channels=1, image_size=8)
    assert f"Model {spec!r} (--model)" in str(e.value)  # the factory and the flag


def test_the_check_on_one_batch_leaves_the_model_as_it_was_built(user_module):
    torch.manual_seed(0)
    model = create_model("mynets:with_batchnorm", num_classes=3, in_channels=1, image_size=8)
    torch.manual_seed(0)
    import mynets

    fresh = mynets.with_batchnorm(num_classes=3, in_channels=1, image_size=8)
    assert [m.training for m in model.modules()] == [m.training for m in fresh.modules()]
    assert model.training and not model[1].training
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # BatchNorm's running statistics untouched, the weights the factory's
    with torch.no_grad():  # built inside a caller's no_grad block, a model that trains is not refused
        create_model("mynets:plain", num_classes=3, in_channels=1, image_size=8)


def test_a_bad_model_is_refused_before_train_or_run_writes_anything(user_module, capsys):
    for argv in (["train", "--model", "mynets:rgb_only", "--save", str(user_module / "m.pt")],
                 ["run", "--model", "mynets:tuple_output", "--out", str(user_module / "run")]):
        capsys.readouterr()
        assert main([*argv, "--training", "standard", "--epochs", "1", "--eval-steps", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"Model '{argv[2]}' (--model)" in err and "Traceback" not in err
    assert not (user_module / "m.pt").exists() and not (user_module / "run" / "results.db").exists()


def test_feature_space_k_center_names_what_a_plain_model_lacks(user_module):
    from robustal.acquisition import SelectionContext, create_acquisition

    model = create_model("mynets:plain", num_classes=10, in_channels=1, image_size=8)
    ctx = SelectionContext(model, torch.zeros(20, 1, 8, 8, dtype=torch.uint8), torch.arange(3),
                           torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="'k-center' with space='features' needs .* no features"):
        create_acquisition("k-center", space="features").select(ctx, 2)
    assert len(create_acquisition("k-center").select(ctx, 2).indices) == 2  # softmax space works with any model
    with pytest.raises(ConfigError, match="'bald' needs MC dropout"):
        create_acquisition("bald").select(ctx, 2)


def test_evaluate_refuses_bad_requests(user_module, capsys):
    ckpt = user_module / "m.pt"
    assert main(["train", "--model", "mynets:plain", "--training", "standard", "--epochs", "1", "--eval-steps", "0",
                 "--save", str(ckpt), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(ckpt), "--factory", "mynets:plain", "--n", "100000", "--eval-steps",
                 "0"]) == 2
    assert "--n 100000 is more than the 250 samples of the test split" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(user_module / "missing.pt")]) == 2
    assert "missing.pt not found" in capsys.readouterr().err


#: Imported, this module leaves a marker file beside itself: the tests below see whether robustal imported it.
MARKING_MODULE = MODULE + "\nimport pathlib\npathlib.Path(__file__).with_name('IMPORTED').touch()\n"


def test_no_checkpoint_or_results_folder_makes_robustal_import_a_module_not_named(user_module, capsys):
    """A checkpoint (evaluate, select, retrain, retrain-study) or a results folder (report) of a user's model is
    rebuilt only from a factory the person names with --factory; without it nothing is imported."""
    ckpt, run = user_module / "m.pt", user_module / "run"
    assert main(["train", "--model", "mynets:plain", "--training", "standard", "--epochs", "1", "--eval-steps", "0",
                 "--train-size", "900", "--save", str(ckpt), "--no-progress"]) == 0
    assert main(["run", "--model", "mynets:plain", "--training", "standard", "--acquisition", "entropy",
                 "--initial", "30", "--per-stage", "30", "--budget", "60", "--epochs", "1", "--min-steps", "0",
                 "--eval-steps", "0", "--out", str(run), "--no-progress"]) == 0
    (user_module / "mynets.py").write_text(MARKING_MODULE)
    sys.modules.pop("mynets", None)
    marker = user_module / "IMPORTED"
    picks = user_module / "picks.csv"
    picks.write_text("rank,index,score\n" + "".join(f"{i + 1},{900 + i},\n" for i in range(10)))
    refused = [["evaluate", "--model", str(ckpt), "--eval-steps", "0"],
               ["select", "--model", str(ckpt), "--metric", "random", "--n", "5", "--out", str(user_module / "s.csv")],
               ["retrain", "--model", str(ckpt), "--selected", str(picks), "--training", "standard", "--epochs", "1",
                "--eval-steps", "0", "--no-progress"],
               ["retrain-study", "--model", str(ckpt), "--metrics", "random", "--sizes", "5", "--seeds", "0",
                "--training", "standard", "--epochs", "1", "--eval-steps", "0", "--out", str(user_module / "rs"),
                "--no-progress"]]
    for argv in refused:
        capsys.readouterr()
        assert main(argv) == 2, argv
        assert "--factory mynets:plain" in capsys.readouterr().err
        assert not marker.exists(), f"robustal {argv[0]} imported the factory a checkpoint named"
    assert main(["report", str(run), "--out", str(user_module / "report")]) == 0
    assert not marker.exists(), "robustal report imported the factory a results folder named"
    report = (user_module / "report" / "report.md").read_text()
    assert "'mynets:plain'" in report and "--factory mynets:plain" in report
    # Named by the person, the same factory is imported and used.
    capsys.readouterr()
    assert main(["evaluate", "--model", str(ckpt), "--factory", "mynets:plain", "--eval-steps", "0"]) == 0
    assert marker.exists() and capsys.readouterr().out.startswith("clean accuracy: ")
    assert main(["report", str(run), "--out", str(user_module / "report2"), "--factory", "mynets:plain"]) == 0
    assert "Left out of the entropy" not in (user_module / "report2" / "report.md").read_text()


def test_another_factory_than_the_recorded_one_is_warned_about():
    """A --factory other than the one recorded is used, with a warning (issue 28); the same factory named by its
    module or by its file is not another one."""
    import warnings

    from robustal.errors import FactoryWarning
    from robustal.loop.checkpoint import trusted_model_name

    with pytest.warns(FactoryWarning, match=r"--factory other\.py:build: Checkpoint m\.pt was made by the factory "
                                            r"'nets:make', another one"):
        assert trusted_model_name("nets:make", "other.py:build", "Checkpoint m.pt") == "other.py:build"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert trusted_model_name("/abs/nets.py:make", "pkg.nets:make", "Checkpoint m.pt") == "pkg.nets:make"
        assert trusted_model_name("nets:make", "../nets.py:make", "Checkpoint m.pt") == "../nets.py:make"
