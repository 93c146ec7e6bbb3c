"""``evaluate`` of a labeling project's model on its held-out labels and on the project's image folder (issue 19.2),
``label --attack``, ``evaluate --json`` with the attack's real settings, an acquisition function refused before any
training when the model lacks what it needs, and a command's own usage for an unknown option (issue 18)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robustal.cli import main
from robustal.engine.attacks import ATTACKS


@pytest.fixture
def fake_square(monkeypatch):
    """The registered Square attack replaced by one that changes nothing (robust = clean): the wiring is what is
    tested, not pyautoattack's 5 000 queries."""
    calls = []

    def square(model, x, y, **kwargs):
        calls.append(len(x))
        return x

    monkeypatch.setitem(ATTACKS._entries, "square", square)
    return calls


def _digit_folder(root: Path, train: int = 20, test: int = 10) -> Path:
    """Real 8×8 digits as an image-folder dataset: ``root/train/<digit>/*.png`` and ``root/test/<digit>/*.png``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = np.round(d.images * (255 / 16)).astype(np.uint8), d.target
    for digit in range(10):
        images = x[y == digit]
        for part, chosen in (("train", images[:train]), ("test", images[-test:])):
            folder = root / part / str(digit)
            folder.mkdir(parents=True)
            for i, image in enumerate(chosen):
                Image.fromarray(image).save(folder / f"{digit}-{i:02d}.png")
    return root


def test_a_labeling_projects_model_is_evaluated_on_its_held_out_labels_and_its_folder(tmp_path, monkeypatch, capsys,
                                                                                       fake_square):
    """A project started with --classes 9,8,...,0: ``evaluate`` gives the accuracy the project reported, on the
    project's held-out labels (the default) and on the image folder they came from (issue 19.2: it gave 0.0000)."""
    data = _digit_folder(tmp_path / "digits")
    project, model = tmp_path / "project", tmp_path / "project.pt"
    argv = ["label", "--pool", str(data / "train"), "--heldout", str(data / "test"),
            "--classes", ",".join(str(d) for d in range(9, -1, -1)), "--image-size", "8", "--channels", "1",
            "--epsilon", "0.2", "--initial", "150", "--per-stage", "50", "--budget", "150", "--training", "standard",
            "--epochs", "5", "--attack", "square", "--eval-steps", "1", "--no-progress", "--out", str(project),
            "--save", str(model)]
    assert main(argv) == 0
    request = project / "requests" / "stage-000.csv"
    with request.open(newline="") as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    request.write_text("id,label\n" + "".join(f"{i},{i.split('/')[0]}\n" for i in ids))  # the truth: its folder
    assert main(argv) == 0
    assert fake_square, "label --attack square did not run the Square attack"
    from robustal.storage.store import Store

    reported = Store(project).stages("label")[-1]
    assert reported.clean > 0.5 and reported.robust == reported.clean  # the fake Square changes nothing
    monkeypatch.chdir(tmp_path / "digits")  # any folder
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--eval-steps", "0", "--json"]) == 0
    held_out = json.loads(capsys.readouterr().out)
    assert held_out["data"] == str(project.resolve()) and held_out["clean"] == reported.clean
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--eval-steps", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"] == reported.clean  # the same test images, mapped by name
    # select and retrain need a labeled training set, which a project's held-out data are not
    assert main(["select", "--model", str(model), "--n", "5", "--out", str(tmp_path / "p.csv")]) == 2
    assert "is a labeling project" in capsys.readouterr().err


def test_evaluate_json_reports_the_attacks_real_settings(capsys, tmp_path, fake_square):
    model = tmp_path / "m.pt"
    assert main(["train", "--dataset", "digits", "--training", "standard", "--epochs", "1", "--eval-steps", "0",
                 "--no-progress", "--save", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--attack", "square", "--n", "20", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    attack, where = printed["attack"], printed["provenance"]
    assert where["device"] == "cpu" and where["threads"] == torch.get_num_threads()
    assert where["isa"] == torch.backends.cpu.get_cpu_capability() and where["cpu"] and where["torch"]
    assert attack == {"name": "square", "epsilon": 0.2, "norm": "Linf", "n_queries": 5000, "restarts": 1}
    assert main(["evaluate", "--model", str(model), "--eval-steps", "7", "--n", "20", "--json"]) == 0
    attack = json.loads(capsys.readouterr().out)["attack"]
    assert attack["name"] == "pgd" and attack["steps"] == 7 and attack["random_start"] is True
    assert attack["step_size"] == pytest.approx(2.5 * 0.2 / 7)  # fewer steps than 50: Madry et al.'s step


def test_attack_settings_of_autoattack():
    from robustal.cli.common import attack_settings
    from robustal.engine.attacks import AttackConfig

    settings = attack_settings(AttackConfig(name="autoattack", epsilon=0.3))
    assert settings["version"] == "standard" and "steps" not in settings and "step_size" not in settings
    assert settings["attacks"][:3] == ["apgd-ce", "apgd-t", "fab-t"]


PLAIN = ("from torch import nn\n\n\ndef plain(num_classes, in_channels, image_size):\n"
         "    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))\n")


@pytest.mark.parametrize("acquisition, options, needs", [("bald", {}, "'bald' needs MC dropout"),
                                                         ("k-center", {"space": "features"}, "penultimate features")])
def test_an_acquisition_function_the_model_cannot_serve_is_refused_before_any_training(tmp_path, monkeypatch,
                                                                                        acquisition, options, needs):
    from robustal.engine.training import TrainConfig
    from robustal.errors import ConfigError
    from robustal.loop import LoopConfig
    from robustal.loop import active as loop_module
    from robustal.loop.experiment import RunSpec, run_experiment

    (tmp_path / "plain_nets.py").write_text(PLAIN)
    monkeypatch.setattr(loop_module, "fit", lambda *a, **k: pytest.fail("trained before checking the function"))
    spec = RunSpec("digits", LoopConfig(acquisition=acquisition, acquisition_options=options, initial=30,
                                        per_stage=30, budget=60, train=TrainConfig(mode="standard", epochs=1)),
                   model=f"{tmp_path / 'plain_nets.py'}:plain", eval_steps=0)
    with pytest.raises(ConfigError, match=needs):
        run_experiment(spec, tmp_path / "out")
    assert not (tmp_path / "out" / "results.db").exists()  # nothing stored either
    # through the API's loop, too
    from robustal.data import load_dataset
    from robustal.loop.experiment import model_factory

    digits = load_dataset("digits")
    with pytest.raises(ConfigError, match=needs):
        loop_module.ActiveLearningLoop(None, digits.splits(), spec.loop,
                                       reinit=model_factory(spec.model, digits))


def test_select_refuses_a_metric_the_model_cannot_serve_before_ranking(tmp_path, capsys):
    (tmp_path / "plain_nets.py").write_text(PLAIN)
    factory = f"{tmp_path / 'plain_nets.py'}:plain"
    model = tmp_path / "plain.pt"
    assert main(["train", "--dataset", "digits", "--model", factory, "--training", "standard", "--epochs", "1",
                 "--eval-steps", "0", "--train-size", "600", "--no-progress", "--save", str(model)]) == 0
    assert torch.load(model, weights_only=True)["model_name"] == factory  # recorded by absolute path
    capsys.readouterr()
    for argv in (["select", "--metric", "bald", "--n", "5", "--out", str(tmp_path / "p.csv")],
                 ["retrain-study", "--metrics", "random,entropy-dropout", "--sizes", "5", "--seeds", "0",
                  "--out", str(tmp_path / "rs")]):
        assert main([*argv, "--model", str(model), "--factory", factory]) == 2
        err = capsys.readouterr().err
        assert "needs MC dropout" in err and ("--metric bald" in err or "--metrics entropy-dropout" in err), err
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "rs" / "results.csv").exists()


def test_an_unknown_option_prints_the_commands_usage(capsys):
    assert main(["select", "--model", "m.pt", "--n", "5", "--out", "p.csv", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: robustal select") and "robustal select: error: unrecognized arguments: --bogus" in err
    assert main(["--bogus"]) == 2
    assert capsys.readouterr().err.startswith("usage: robustal [-h]")


def test_the_top_level_help_says_train_does_trades(capsys):
    assert main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "train one model (standard, PGD or TRADES)" in out


def test_a_users_factory_is_recorded_so_that_it_can_be_named_from_any_folder(tmp_path, monkeypatch, capsys):
    """A factory given by a relative file path is recorded by its absolute path; a module's factory with the
    module's file, which the refusal offers as the --factory that works from any folder (never imported by itself)."""
    import sys

    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / "plain_nets_rel.py").write_text(PLAIN)
    monkeypatch.chdir(home)
    by_file, by_module = home / "by-file.pt", home / "by-module.pt"
    common = ["--dataset", "digits", "--training", "standard", "--epochs", "1", "--eval-steps", "0", "--no-progress"]
    assert main(["train", *common, "--model", "plain_nets_rel.py:plain", "--save", str(by_file)]) == 0
    assert torch.load(by_file, weights_only=True)["model_name"] == f"{home / 'plain_nets_rel.py'}:plain"
    monkeypatch.syspath_prepend(str(home))
    monkeypatch.delitem(sys.modules, "plain_nets_rel", raising=False)
    assert main(["train", *common, "--model", "plain_nets_rel:plain", "--save", str(by_module)]) == 0
    sys.modules.pop("plain_nets_rel", None)
    record = torch.load(by_module, weights_only=True)
    assert record["model_name"] == "plain_nets_rel:plain"
    assert record["factory_file"] == str(home / "plain_nets_rel.py")
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(by_module), "--eval-steps", "0"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    suggested = f"--factory {home / 'plain_nets_rel.py'}:plain"
    assert "--factory plain_nets_rel:plain" in err and suggested in err
    for ckpt in (by_module, by_file):
        assert main(["evaluate", "--model", str(ckpt), *suggested.split(), "--eval-steps", "0"]) == 0
        assert capsys.readouterr().out.startswith("clean accuracy: ")


def test_a_retrain_study_of_a_run_checkpoint_is_keyed_by_its_training_samples():
    from robustal.data import load_dataset
    from robustal.engine.training import TrainConfig
    from robustal.loop.checkpoint import Checkpoint
    from robustal.studies.retrain import study_settings

    digits = load_dataset("digits")
    ckpt = Checkpoint("small-cnn", {}, 10, (1, 8, 8))
    prefix = study_settings(ckpt, digits, TrainConfig(), None, torch.arange(600))
    assert prefix["train_size"] == 600 and "trained_sha256" not in prefix  # as earlier studies stored it
    run = study_settings(ckpt, digits, TrainConfig(), None, torch.tensor([5, 9, 700]))
    other = study_settings(ckpt, digits, TrainConfig(), None, torch.tensor([5, 9, 701]))
    assert "train_size" not in run and run["trained_sha256"] != other["trained_sha256"]
