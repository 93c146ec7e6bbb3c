"""Oracles: a labelling function that answers later stops the run; running again asks for the same samples, never
twice for one sample, and ends as a run whose labels were there all along."""

from __future__ import annotations

import pytest
import torch

from robustal.data import Split
from robustal.engine.training import TrainConfig
from robustal.errors import ConfigError
from robustal.labeling.oracle import CallableOracle, DatasetOracle
from robustal.loop import LoopConfig, run_active_learning
from robustal.models import create_model
from robustal.storage.store import Store

CFG = LoopConfig(acquisition="entropy", initial=30, per_stage=30, budget=90, seed=1,
                 train=TrainConfig(mode="standard", epochs=1, batch_size=32))


class Person:
    """Answers from the true labels, except that it is "away" (returns None) for the stages in ``away``."""

    def __init__(self, truth: torch.Tensor, away: set[int]):
        self.truth, self.away, self.asked = truth, away, []
        self.calls = 0

    def __call__(self, indices, images):
        self.calls += 1
        if self.calls in self.away:
            return None
        self.asked += indices.tolist()
        return self.truth[indices]


def _model():
    torch.manual_seed(0)
    return create_model("small-cnn")


def _run(digits, person, root):
    s = digits.splits()
    hidden = Split(s.pool.x, torch.full_like(s.pool.y, -1))  # the pool's labels are unknown to the loop
    return run_active_learning(_model(), hidden, s.val, s.test, CFG, store=Store(root), name="p", oracle=person)


def test_a_late_answer_stops_the_run_and_the_same_samples_are_asked_again(digits, tmp_path):
    truth = digits.splits().pool.y
    person = Person(truth, away={2})  # answers stage 0, is away when stage 1 asks, answers when run again
    first = _run(digits, person, tmp_path)
    assert first.waiting is not None and (first.waiting.stage, first.waiting.n) == (1, 30)
    assert [s.labeled for s in first.stages] == [30]
    assert Store(tmp_path).status("p") == "waiting"
    pending, _ = Store(tmp_path).pending("p", 1)
    second = _run(digits, person, tmp_path)
    assert second.waiting is None and [s.labeled for s in second.stages] == [30, 60, 90]
    assert Store(tmp_path).selections("p")[1] == pending.tolist()  # the very samples that were requested
    assert len(person.asked) == len(set(person.asked)) == 90  # nobody is asked twice for one sample
    assert Store(tmp_path).labels("p") == {i: int(truth[i]) for i in person.asked}
    # ...and the result equals a run whose labels were there all along
    always = tmp_path / "always"
    s = digits.splits()
    whole = run_active_learning(_model(), s.pool, s.val, s.test, CFG, store=Store(always), name="p")
    assert Store(always).selections("p") == Store(tmp_path).selections("p")
    assert [(r.clean, r.val_score) for r in whole.stages] == [(r.clean, r.val_score) for r in second.stages]


def test_oracles_check_their_answers():
    images = torch.zeros(5, 1, 8, 8, dtype=torch.uint8)
    assert DatasetOracle(torch.tensor([3, 1, 4, 1, 5])).labels(0, torch.tensor([4, 0])).tolist() == [5, 3]
    with pytest.raises(ConfigError, match="returned 1 labels for 2 samples"):
        CallableOracle(lambda i, x: [1], images).labels(0, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="each in 0..2"):
        CallableOracle(lambda i, x: [1, 7], images, num_classes=3).labels(0, torch.tensor([0, 1]))
