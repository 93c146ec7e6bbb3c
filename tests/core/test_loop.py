"""The active-learning loop: stages, reproducibility, resume after SIGKILL, errors, the Python API."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from torch import nn

from robustal.data import Split
from robustal.engine.attacks import AttackConfig
from robustal.engine.training import TrainConfig
from robustal.errors import ConfigError, StoreError, UnknownNameError
from robustal.loop import LoopConfig, run_active_learning
from robustal.loop.experiment import RunSpec, run_experiment
from robustal.storage.store import Store

FAST = TrainConfig(mode="pgd", epochs=2, batch_size=32, attack_steps=2, min_steps=0)


def digits_spec(acquisition="dre", seed=0, **loop) -> RunSpec:
    cfg = LoopConfig(acquisition=acquisition, initial=30, per_stage=30, budget=90, train=FAST, seed=seed)
    return RunSpec(dataset="digits", model="small-cnn", eval_steps=3, loop=replace(cfg, **loop))


def test_stage_sizes_end_exactly_at_the_budget():
    assert LoopConfig(initial=100, per_stage=100, budget=350).stage_sizes() == [100, 100, 100, 50]
    assert LoopConfig(initial=100, per_stage=100, budget=100).stage_sizes() == [100]


@pytest.mark.parametrize("kwargs, match", [
    ({"per_stage": 0}, "'per_stage' parameter of LoopConfig must be an int in \\[1, inf\\]"),
    ({"initial": 500, "budget": 100}, "initial labeled set \\(500\\) is larger than the budget \\(100\\)"),
    ({"initial": 0}, "'initial' parameter"),
    ({"acquisition": "entropyy"}, "Unknown acquisition function 'entropyy'. Did you mean 'entropy'"),
    ({"acquisition": "dre", "acquisition_options": {"bins": 0}}, "'bins' parameter of dre"),
])
def test_loop_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LoopConfig(**kwargs)


def test_budget_larger_than_pool(digits):
    spec = digits_spec(budget=5000)
    with pytest.raises(ConfigError, match=r"budget \(5000\) is larger than the pool \(1297 samples\)"):
        run_experiment(spec, None, dataset=digits)


def test_unknown_acquisition_is_an_unknown_name_error():
    with pytest.raises(UnknownNameError):
        LoopConfig(acquisition="nope")


def test_run_labels_distinct_samples_and_records_every_stage(digits, tmp_path):
    result = run_experiment(digits_spec(), tmp_path, name="r", dataset=digits)
    assert [s.labeled for s in result.stages] == [30, 60, 90]
    assert len(result.labeled) == 90 == len(set(result.labeled.tolist()))
    store = Store(tmp_path)
    assert store.status("r") == "finished"
    picks = store.selections("r")
    assert [len(picks[s]) for s in range(3)] == [30, 30, 30]
    assert torch.equal(torch.tensor([i for s in range(3) for i in picks[s]]), result.labeled)
    for s in store.stages("r"):
        assert 0 <= s.robust <= s.clean <= 1


def test_same_seed_same_selections_other_seed_different(digits):
    a = run_experiment(digits_spec(seed=1), None, dataset=digits)
    b = run_experiment(digits_spec(seed=1), None, dataset=digits)
    c = run_experiment(digits_spec(seed=2), None, dataset=digits)
    assert torch.equal(a.labeled, b.labeled)
    assert [(s.clean, s.robust) for s in a.stages] == [(s.clean, s.robust) for s in b.stages]
    assert not torch.equal(a.labeled, c.labeled)


def test_finished_run_is_not_redone(digits, tmp_path):
    first = run_experiment(digits_spec(), tmp_path, name="r", dataset=digits)
    t0 = time.perf_counter()
    again = run_experiment(digits_spec(), tmp_path, name="r", dataset=digits)
    assert time.perf_counter() - t0 < 5
    assert [s.clean for s in again.stages] == [s.clean for s in first.stages]


def test_resuming_with_another_configuration_is_refused(digits, tmp_path):
    run_experiment(digits_spec(), tmp_path, name="r", dataset=digits)
    with pytest.raises(StoreError, match="different configuration.*acquisition: stored 'dre', now 'entropy'"):
        run_experiment(digits_spec(acquisition="entropy"), tmp_path, name="r", dataset=digits)


def _stages_in(db) -> int:
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("SELECT COUNT(*) FROM stages").fetchone()[0]
    except sqlite3.Error:
        return 0


RUN_ARGS = ["run", "--dataset", "digits", "--model", "small-cnn", "--training", "pgd", "--acquisition", "entropy",
            "--initial", "30", "--per-stage", "30", "--budget", "150", "--epochs", "6", "--batch-size", "32",
            "--attack-steps", "2", "--eval-steps", "3", "--seed", "3", "--min-steps", "0", "--no-progress",
            "--name", "r"]


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(tmp_path):
    cmd = [sys.executable, "-m", "robustal.cli", *RUN_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, capture_output=True, env=env, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.time() + 240
    while _stages_in(killed / "results.db") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.1)  # into the next stage's training
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= _stages_in(killed / "results.db") < 5
    subprocess.run([*cmd, "--out", str(killed)], check=True, capture_output=True, env=env, timeout=300)

    whole, resumed = Store(tmp_path / "whole"), Store(killed)
    assert resumed.selections("r") == whole.selections("r")
    assert resumed.stages("r") != []
    metrics = lambda s: [(r.stage, r.labeled, r.clean, r.robust, r.best_epoch, r.val_score) for r in s.stages("r")]
    assert metrics(resumed) == metrics(whole)
    assert resumed.status("r") == "finished"
    assert len(list((killed / "checkpoints" / "r").glob("stage-*.pt"))) == 1


def test_sigterm_ends_a_run_as_an_interrupt_does(tmp_path):
    """A scheduler's stop (SIGTERM) marks the run interrupted and says how to resume, as Ctrl-C does; it does not
    leave the run recorded as running, its tracker open, and no word said."""
    out = tmp_path / "terminated"
    proc = subprocess.Popen([sys.executable, "-m", "robustal.cli", *RUN_ARGS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while _stages_in(out / "results.db") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be terminated"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert "robustal run: terminated (SIGTERM). Finished stages are saved in" in err
    assert Store(out).status("r") == "interrupted"


class UserNet(nn.Module):
    """A user's own model: no robustal base class."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


def test_python_api_with_own_model_and_float_tensors(digits):
    splits = digits.splits()
    as_float = lambda s: Split(s.x.float() / 255, s.y)
    torch.manual_seed(0)
    cfg = LoopConfig(acquisition="entropy", initial=50, per_stage=50, budget=150, seed=0,
                     train=TrainConfig(mode="pgd", epsilon=0.2, epochs=2, attack_steps=2),
                     eval_attack=AttackConfig("pgd", 0.2, 0.01, 5))
    result = run_active_learning(UserNet(), as_float(splits.pool), as_float(splits.val), as_float(splits.test), cfg,
                                 device="cpu")
    assert [s.labeled for s in result.stages] == [50, 100, 150]
    assert all(s.robust is not None and s.robust <= s.clean for s in result.stages)
    assert isinstance(result.model, UserNet)


def test_robust_accuracy_rises_over_stages_on_real_mnist(mnist_npz):
    """LeNet-5 under PGD training on real MNIST images: more (well-chosen) labels, more robustness."""
    cfg = LoopConfig(acquisition="dre", initial=200, per_stage=600, budget=1400, seed=0,
                     train=TrainConfig(mode="pgd", epochs=6, batch_size=64, epsilon_warmup=3, min_steps=0))
    spec = RunSpec(dataset=str(mnist_npz), model="lenet5", eval_steps=10, loop=cfg)
    stages = run_experiment(spec, None).stages
    assert stages[-1].robust > stages[0].robust + 0.05


class Constant(nn.Module):
    """Predicts class 2 for every input; its parameters cannot change that at the learning rates used here."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 0.0, 5.0] + [0.0] * 7))
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.bias.expand(len(x), -1) + self.scale * x.flatten(1).mean(1, keepdim=True)


def _constant_run(digits, tmp_path, recovery, name="c"):
    splits = digits.splits()
    cfg = LoopConfig(acquisition="random", initial=30, per_stage=30, budget=90, seed=0, chance_recovery=recovery,
                     train=TrainConfig(mode="pgd", epsilon=0.2, epochs=1, lr=1e-9, attack_steps=1),
                     eval_attack=AttackConfig("pgd", 0.2, 0.05, 2))
    return run_active_learning(Constant(), splits.pool, splits.val, splits.test, cfg, store=Store(tmp_path),
                               name=name)


def test_a_stage_at_chance_is_warned_about_and_flagged(digits, tmp_path):
    from robustal.errors import ChanceLevelWarning

    with pytest.warns(ChanceLevelWarning, match=r"'c', stage 0 \(30 labels\): validation clean accuracy 0\.\d+ is at "
                                                r"chance level .*it continues as it is \(chance_recovery='none'\)"):
        result = _constant_run(digits, tmp_path, "none")
    assert [s.at_chance for s in result.stages] == [True, True, True]
    stored = Store(tmp_path).stages("c")
    assert [s.at_chance for s in stored] == [True, True, True] and [s.recovery for s in stored] == ["", "", ""]
    majority = torch.bincount(digits.splits().val.y).max().item() / len(digits.splits().val)
    assert all(s.val_clean <= 1.5 * majority for s in stored)


def test_chance_recovery_retrains_from_new_weights_and_warms_up_the_next_stage(digits, tmp_path, monkeypatch):
    from robustal.loop import active as loop

    warmups = []
    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda m, tr, v, cfg, **kw: warmups.append(cfg.epsilon_warmup) or
                        real_fit(m, tr, v, cfg, **kw))
    with pytest.warns(UserWarning):
        _constant_run(digits, tmp_path, "reinit")
    # Each stage: a first fit (stage 0 fresh; later stages warm up because the last ended at chance), then a retry
    # from new weights, always with the warm-up.
    assert warmups == [2, 2, 2, 2, 2, 2]
    assert [s.recovery for s in Store(tmp_path).stages("c")] == ["reinit", "reinit", "reinit"]
    warmups.clear()
    with pytest.warns(UserWarning):
        _constant_run(digits, tmp_path / "none", "none")
    assert warmups == [2, 0, 0]  # without recovery only the fresh model warms up


def test_a_learning_run_is_not_at_chance(digits, recwarn):
    from robustal.errors import ChanceLevelWarning

    cfg = LoopConfig(acquisition="random", initial=50, per_stage=50, budget=100, seed=0,
                     train=TrainConfig(mode="standard", epochs=5, batch_size=32, min_steps=50))
    result = run_experiment(RunSpec(dataset="digits", model="small-cnn", eval_steps=0, loop=cfg), None,
                            dataset=digits)
    assert not any(s.at_chance for s in result.stages)
    assert not [w for w in recwarn if issubclass(w.category, ChanceLevelWarning)]


def test_a_chosen_epsilon_is_also_the_evaluation_budget(digits):
    from robustal.loop.experiment import resolve

    spec = digits_spec()
    _, loop = resolve(replace(spec, loop=replace(spec.loop, train=replace(FAST, epsilon=0.1))), digits)
    assert loop.train.epsilon == 0.1 and loop.eval_attack.epsilon == 0.1
    assert loop.eval_attack.step_size == pytest.approx(2.5 * 0.1 / 3)  # a 3-step evaluation: 2.5·ε/k
    _, loop = resolve(spec, digits)
    assert loop.eval_attack.epsilon == digits.epsilon == 0.2


def test_reduced_step_evaluations_take_madry_steps():
    from robustal.data import Dataset
    from robustal.engine.evaluation import paper_attack

    d = Dataset("d", Split(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)),
                Split(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64)), 10,
                epsilon=0.3, step_size=0.01)
    assert paper_attack(d).step_size == 0.01 and paper_attack(d).steps == 50  # the paper's PGD-50
    assert paper_attack(d, 20).step_size == pytest.approx(0.0375)  # PGD-20 at 0.01 could not even reach ε
    assert paper_attack(d, 100).step_size == 0.01
    assert d.with_epsilon(0.1).step_size == pytest.approx(0.01 / 3)


@pytest.mark.slow
def test_the_default_recipe_leaves_chance_level_at_the_first_stage_on_real_mnist(mnist_npz):
    """docs/recipe.md in small: PGD training of LeNet-5 from 100 real MNIST labels with the default recipe is never
    at chance level, and its robustness grows (robustal 0.1's defaults sat at chance here)."""
    cfg = LoopConfig(acquisition="random", initial=100, per_stage=100, budget=300, seed=3,
                     train=TrainConfig(mode="pgd"))
    stages = run_experiment(RunSpec(dataset=str(mnist_npz), model="lenet5", eval_steps=20, loop=cfg), None).stages
    assert not any(s.at_chance for s in stages)
    assert stages[0].robust > 0.1 and stages[-1].robust > stages[0].robust
