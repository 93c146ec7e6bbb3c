"""Training on the unlabeled pool: settings, batches, the teacher's pseudo-labels, and the rule that a pseudo-label is
never a label (never stored, exported or counted)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest
import torch
from torch import nn

from robustal.data import Split
from robustal.engine.pool_training import PoolConfig, Unlabeled, training_label
from robustal.engine.training import TrainConfig, fit
from robustal.errors import ConfigError, StoreError
from robustal.loop import LoopConfig
from robustal.loop.experiment import RunSpec, run_experiment
from robustal.loop.pseudo_labels import pseudo_label
from robustal.storage.schema import config_diff
from robustal.storage.store import Store

FAST = TrainConfig(mode="pgd", epochs=2, batch_size=32, attack_steps=2, min_steps=0, epsilon=0.2)
POOL = PoolConfig(mode="self-training", teacher_epochs=3)


def spec(pool: PoolConfig = POOL, mode: str = "pgd", **loop) -> RunSpec:
    cfg = LoopConfig(acquisition="random", initial=30, per_stage=30, budget=60, train=replace(FAST, mode=mode),
                     pool=pool)
    return RunSpec(dataset="digits", model="small-cnn", eval_steps=2, loop=replace(cfg, **loop))


@pytest.mark.parametrize("kwargs, match", [
    ({"share": 1.0}, r"'share' parameter of PoolConfig must be a float in \[0, 1\)"),
    ({"share": -0.1}, "'share' parameter"),
    ({"weight": -1.0}, "'weight' parameter"),
    ({"confidence": 1.0}, "'confidence' parameter"),
    ({"teacher_epochs": 0}, "'teacher_epochs' parameter"),
    ({"mode": "self-train"}, "must be one of 'none', 'self-training', 'consistency'. Got 'self-train'"),
    ({"teacher": "robust"}, "'teacher' parameter"),
    ({"steps": -1}, "'steps' parameter"),
    ({"mode": "consistency", "share": 0.0}, "A pool share of 0 adds no pool image"),
])
def test_bad_pool_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PoolConfig(**kwargs)


def test_the_pool_needs_adversarial_training_and_unlabeled_images():
    with pytest.raises(ConfigError, match="is for adversarial training; the training mode is 'standard'"):
        LoopConfig(train=TrainConfig(mode="standard"), pool=POOL)
    cfg = LoopConfig(initial=100, budget=500, train=TrainConfig(mode="pgd"), pool=POOL)
    cfg.check_pool(501)
    with pytest.raises(ConfigError, match=r"labels the whole pool \(500 samples\)"):
        cfg.check_pool(500)


def test_pool_batch_size_follows_the_share():
    assert PoolConfig(share=0.5).pool_batch(128) == 128
    assert PoolConfig(share=0.2).pool_batch(128) == 32
    assert PoolConfig(share=0.0).pool_batch(128) == 0
    assert PoolConfig(share=0.001).pool_batch(8) == 1  # a positive share adds at least one image


def test_pool_batches_are_shuffled_passes_over_every_image():
    u = Unlabeled(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), None, per_batch=4)
    batches = u.batches(torch.Generator().manual_seed(0))
    drawn = torch.cat([next(batches) for _ in range(5)])  # 20 = two whole passes
    assert all(len(b) == 4 for b in drawn.split(4))
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:].tolist()) == list(range(10))
    assert drawn[:10].tolist() != drawn[10:].tolist()  # each pass shuffled anew


def test_training_label_names_the_pool_mode():
    assert training_label("pgd", None) == training_label("pgd", "none") == "pgd"
    assert training_label("trades", "consistency") == "trades+consistency"


def _tiny_data(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return Split(x, torch.randint(0, 3, (n,), generator=g))


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


@pytest.mark.parametrize("mode", ["pgd", "trades"])
@pytest.mark.parametrize("targets", [True, False])
def test_the_pool_adds_images_to_each_step_never_steps(mode, targets):
    """A stage's cost is bounded by its labeled schedule: the pool changes the batches' size, not their number."""
    data = _tiny_data()
    cfg = replace(FAST, mode=mode, epochs=3, batch_size=16)
    plain = fit(_tiny_model(), data, None, cfg, seed=1)
    pool = _tiny_data(200, seed=1)
    unlabeled = Unlabeled(pool.x, pool.y if targets else None, per_batch=16)
    model = _tiny_model()
    with_pool = fit(model, data, None, cfg, seed=1, unlabeled=unlabeled)
    assert with_pool.steps == plain.steps == 3 * 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_pool_changes_what_is_learned():
    """Pool images whose pseudo-labels disagree with the labeled ones pull the model towards them."""
    data = _tiny_data()
    cfg = replace(FAST, epochs=3, batch_size=16)
    plain, pooled = _tiny_model(), _tiny_model()
    fit(plain, data, None, cfg, seed=1)
    pool = _tiny_data(200, seed=1)
    fit(pooled, data, None, cfg, seed=1, unlabeled=Unlabeled(pool.x, torch.full((200,), 2), per_batch=48, weight=5))
    x = data.x.float() / 255
    assert (pooled(x).argmax(1) == 2).float().mean() > (plain(x).argmax(1) == 2).float().mean()


def test_pool_training_is_refused_under_standard_training():
    pool = _tiny_data(10)
    with pytest.raises(ValueError, match="needs adversarial training"):
        fit(_tiny_model(), _tiny_data(), None, replace(FAST, mode="standard"),
            unlabeled=Unlabeled(pool.x, pool.y, per_batch=4))


class _Constant(nn.Module):
    """Predicts class ``c`` with probability ``p`` for every input."""

    def __init__(self, c: int, p: float = 0.9, classes: int = 3):
        super().__init__()
        logits = torch.full((classes,), 0.0)
        logits[c] = torch.log(torch.tensor(p * (classes - 1) / (1 - p)))
        self.register_buffer("logits", logits)
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * self.w


class _ByPixel(nn.Module):
    """Predicts the class written in an image's first pixel (0, 1 or 2), with probability 0.9."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        c = (x[:, 0, 0, 0] * 255).round().long()
        return torch.nn.functional.one_hot(c, 3).float() * torch.log(torch.tensor(18.0)) + 0 * self.w


def _images(classes: list[int]) -> torch.Tensor:
    x = torch.zeros(len(classes), 1, 8, 8, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.tensor(classes, dtype=torch.uint8)
    return x


def test_pseudo_labels_and_their_accuracy_against_the_true_labels():
    pool = Split(_images([1, 1, 0, 2, 2, 1]), torch.tensor([1, 1, 0, 1, 2, 1]))
    val = Split(_images([0, 1, 2, 2, 1]), torch.tensor([0, 1, 2, 0, 1]))
    unlabeled = torch.tensor([0, 2, 3, 4])
    args = dict(pool_x=pool.x, unlabeled=unlabeled, labeled=pool.subset(torch.tensor([1, 5])), val=val,
                model=_ByPixel(), fresh_model=lambda: pytest.fail("the model teacher trains nothing"), train=FAST,
                device="cpu", seed=0)
    out = pseudo_label(PoolConfig(mode="self-training", teacher="model"), true_labels=pool.y, **args)
    assert out.indices.tolist() == [0, 2, 3, 4] and out.labels.tolist() == [1, 0, 2, 2]
    assert out.accuracy == pytest.approx(3 / 4)  # pool image 3 is of class 1, its pseudo-label 2
    assert out.teacher_clean == pytest.approx(4 / 5) and not out.teacher_at_chance
    unknown = pseudo_label(PoolConfig(mode="self-training", teacher="model"), **args)
    assert unknown.accuracy is None  # a person's pool: no true labels, nothing claimed
    sure = pseudo_label(PoolConfig(mode="self-training", teacher="model", confidence=0.95), **args)
    assert len(sure.indices) == 0  # 0.9 < 0.95: no pseudo-label is confident enough


def test_a_teacher_at_chance_is_not_used():
    pool = Split(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([1, 1, 0, 1]))
    balanced = Split(torch.zeros(6, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 1, 1, 2, 2]))
    chance = pseudo_label(PoolConfig(mode="self-training", teacher="model"), pool_x=pool.x, unlabeled=torch.arange(4),
                          labeled=pool, val=balanced, model=_Constant(1), fresh_model=None, train=FAST, device="cpu",
                          seed=0)
    assert chance.teacher_at_chance and len(chance.indices) == 0  # 1/3 correct: what a constant scores


def test_consistency_uses_every_unlabeled_image_without_a_teacher():
    out = pseudo_label(PoolConfig(mode="consistency"), pool_x=torch.zeros(5, 1, 8, 8, dtype=torch.uint8),
                       unlabeled=torch.tensor([1, 3]), labeled=None, val=None, model=None, fresh_model=None,
                       train=FAST, device="cpu", seed=0)
    assert out.indices.tolist() == [1, 3] and out.labels is None and out.teacher_clean is None


@pytest.mark.parametrize("mode, pool_mode", [("pgd", "self-training"), ("trades", "consistency")])
def test_a_pseudo_label_never_becomes_a_stored_label(digits, tmp_path, mode, pool_mode):
    result = run_experiment(spec(replace(POOL, mode=pool_mode), mode=mode), tmp_path, name="r", dataset=digits)
    store = Store(tmp_path)
    labels = store.labels("r")
    picked = [i for picks in store.selections("r").values() for i in picks]
    assert sorted(labels) == sorted(picked) and len(labels) == 60  # only what was picked and labeled
    assert all(labels[i] == int(digits.train.y[i]) for i in labels)
    with sqlite3.connect(tmp_path / "results.db") as con:
        assert con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 60
    unlabeled = len(digits.train) - torch.tensor([30, 60])
    stages = store.stages("r")
    assert [s.pool_images for s in stages] == unlabeled.tolist()  # every unlabeled image, none of the labeled
    assert len(result.labeled) == 60
    if pool_mode == "self-training":
        assert all(0 <= s.pseudo_accuracy <= 1 and 0 <= s.teacher_clean <= 1 for s in stages)
    else:
        assert all(s.pseudo_accuracy is None and s.teacher_clean is None for s in stages)


def test_the_last_stage_only(digits):
    result = run_experiment(spec(replace(POOL, stages="last"), budget=90), None, dataset=digits)
    assert [s.pool_images is not None for s in result.stages] == [False, False, True]


def test_pool_steps_raise_the_steps_of_the_stages_that_train_on_the_pool_only(digits, monkeypatch):
    import robustal.loop.active as active

    real, seen = active.fit, []

    def recording(model, train, val, config, **kw):
        result = real(model, train, val, config, **kw)
        seen.append((kw.get("unlabeled") is not None, config.min_steps, result.steps))
        return result

    monkeypatch.setattr(active, "fit", recording)
    pool = PoolConfig(mode="consistency", stages="last", steps=20)  # no teacher: the pool is used at any accuracy
    run_experiment(spec(pool, budget=90, chance_recovery="none"), None, dataset=digits)
    assert [(pooled, floor) for pooled, floor, _ in seen] == [(False, 0), (False, 0), (True, 20)]
    assert seen[0][2] == 2 and seen[-1][2] == 20  # 30 labels: 2 epochs of one batch; the pool's stage: the floor


def test_pool_steps_never_lower_the_steps_of_the_labels():
    train = replace(FAST, min_steps=100)
    assert PoolConfig(mode="self-training", steps=40).train_config(train) is train
    assert PoolConfig(mode="self-training", steps=400).train_config(train).min_steps == 400


def test_a_run_does_not_resume_under_other_pool_settings(digits, tmp_path):
    run_experiment(spec(), tmp_path, name="r", dataset=digits, )
    with pytest.raises(StoreError, match="pool.mode: stored 'self-training', now 'none'"):
        run_experiment(spec(PoolConfig()), tmp_path, name="r", dataset=digits)
    with pytest.raises(StoreError, match="pool.share"):
        run_experiment(spec(replace(POOL, share=0.25)), tmp_path, name="r", dataset=digits)
    with pytest.raises(StoreError, match="pool.steps: stored 0, now 300"):
        run_experiment(spec(replace(POOL, steps=300)), tmp_path, name="r", dataset=digits)


def test_a_run_stored_before_the_pool_setting_counts_as_without_it():
    old = {"loop": {"budget": 60}}  # robustal 0.3 stored no pool settings
    assert config_diff(old, {"loop": {"budget": 60, "pool": PoolConfig().to_dict()}}) == []
    assert config_diff(old, {"loop": {"budget": 60, "pool": POOL.to_dict()}}) == [
        "loop.pool.mode: stored 'none', now 'self-training'"]
    before_steps = {k: v for k, v in POOL.to_dict().items() if k != "steps"}  # a pool run stored before --pool-steps
    assert config_diff({"loop": {"pool": before_steps}}, {"loop": {"pool": POOL.to_dict()}}) == []
    assert config_diff({"loop": {"pool": before_steps}}, {"loop": {"pool": replace(POOL, steps=9).to_dict()}}) == [
        "loop.pool.steps: stored 0, now 9"]


# --- when to stop labeling ------------------------------------------------------------------------------------------
from robustal.loop.stopping import StoppingRule, levels_off_stage  # noqa: E402


def test_the_stopping_rule_fires_on_a_plateau_of_the_best_validation_score():
    rule = StoppingRule(min_gain=0.01, patience=2)
    assert rule.stop_stage([0.2, 0.3, 0.4, 0.405, 0.41]) == 4  # 0.41 - 0.40 < 0.01 over the last two stages
    assert rule.stop_stage([0.2, 0.3, 0.4, 0.5]) is None
    assert rule.stop_stage([0.5, 0.1, 0.2]) == 2  # a dip counts from the best so far: no gain over 0.5
    assert rule.gain([0.2, 0.3], 1) is None  # too early to say
    assert rule.gain([0.2, None, 0.5], 2) is None  # an unscored stage says nothing
    with pytest.raises(ConfigError, match="'patience' parameter of StoppingRule"):
        StoppingRule(patience=0)


def test_a_curve_levels_off_where_no_later_stage_rises_more_than_the_tolerance():
    assert levels_off_stage([0.2, 0.5, 0.6, 0.605, 0.61, 0.6]) == 2  # 0.61 is within a point of 0.6
    assert levels_off_stage([0.2, 0.5, 0.6, 0.59, 0.62, 0.62]) == 4  # the dip at 0.59 is passed by 0.62
    assert levels_off_stage([0.2, 0.3, 0.4, 0.5]) is None  # still rising at the budget
    assert levels_off_stage([0.2, 0.3, 0.4, 0.41]) == 2  # exactly one point (a fraction of test images) counts
    assert levels_off_stage([0.2, 0.3, 0.4, 0.5], tolerance=0.25) == 1  # 0.3 is within 0.25 of every later stage
    assert levels_off_stage([0.2, None, 0.4]) is None and levels_off_stage([]) is None


def test_the_stopping_table_judges_the_rule_where_each_curve_levels_off():
    from robustal.reports.pool_report import stopping_section
    from robustal.reports.results import RunResults
    from robustal.storage.schema import StageRecord

    def run(seed, robust, val):
        stages = [StageRecord(stage=i, labeled=100 * (i + 1), clean=0.9, robust=r, val_score=v)
                  for i, (r, v) in enumerate(zip(robust, val, strict=True))]
        return RunResults(name=f"r{seed}", dataset="d", model="m", training="pgd", acquisition="random", seed=seed,
                          status="finished", stages=stages, config={"loop": {"initial": 100, "budget": 600}})

    level = [0.2, 0.4, 0.6, 0.6, 0.6, 0.6]  # test robustness that levels off at 300 labels (stage 2)
    runs = [run(0, level, [0.2, 0.4, 0.6, 0.6, 0.6, 0.6]),  # the rule stops at 500: two stages late
            run(1, level, [0.2, 0.6, 0.6, 0.6, 0.6, 0.6]),  # stops at 400: within a stage
            run(2, [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7])]  # rises to the end, never stops
    lines = stopping_section(runs, "d", "m")
    row = next(line for line in lines[-1].splitlines() if line.startswith("| pgd"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == ["3", "2", "500", "600", "0.000 ± 0.000", "0.000", "2", "300", "1 of 2"]
    assert "levels off" in lines[-3]


def test_a_run_stops_early_under_its_rule_and_goes_on_without_it(digits, tmp_path):
    always = StoppingRule(min_gain=1.0, patience=1)  # no stage can gain a whole accuracy: stops at stage 1
    stopped = run_experiment(spec(PoolConfig(), budget=120, stop=always), tmp_path, name="r", dataset=digits)
    assert [s.labeled for s in stopped.stages] == [30, 60]
    assert Store(tmp_path).status("r") == "finished"
    again = run_experiment(spec(PoolConfig(), budget=120, stop=always), tmp_path, name="r", dataset=digits)
    assert [s.labeled for s in again.stages] == [30, 60]  # nothing more
    full = run_experiment(spec(PoolConfig(), budget=120), tmp_path, name="r", dataset=digits)  # the rule is no setting
    assert [s.labeled for s in full.stages] == [30, 60, 90, 120]
    assert [s.robust for s in full.stages[:2]] == [s.robust for s in stopped.stages]


def test_status_and_report_show_the_pool_and_the_stopping_rule(digits, tmp_path, capsys):
    from robustal.cli import main
    from robustal.studies.report import write_report

    run_experiment(spec(budget=90), tmp_path, name="pool", dataset=digits)
    run_experiment(spec(PoolConfig(), budget=90), tmp_path, name="plain", dataset=digits)
    assert main(["status", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "pseudo-label acc" in text and "teacher clean" in text
    assert text.count("stopping rule (stop once validation gained less than 1 point(s) over the last 2 stage(s))") == 2
    report = write_report(tmp_path, entropies=False).read_text()
    stages = Store(tmp_path).stages("pool")
    assert "### Training on the unlabeled pool" in report
    section = report.split("### Training on the unlabeled pool")[1].split("###")[0]
    row = next(line for line in section.splitlines() if line.startswith("| pgd+self-training | random"))
    assert f"{stages[0].pseudo_accuracy:.3f}" in row and f"{stages[-1].teacher_clean:.3f}" in row
    assert "curves-pool-digits-small-cnn-pgd.png" in report and (tmp_path / "report" /
                                                                 "curves-pool-digits-small-cnn-pgd.png").is_file()
    assert "### When to stop labeling" in report
    assert main(["report", str(tmp_path), "--no-entropy", "--stop-gain", "0.02", "--stop-patience", "1"]) == 0
    judged = (tmp_path / "report" / "report.md").read_text()
    assert "stop once validation gained less than 2 point(s) over the last 1 stage(s)" in judged
    assert "never rises by more than 2 point(s) again" in judged and "given to `robustal report`" in judged


def test_a_study_of_the_pool_alone_gets_no_second_copy_of_its_curves(digits, tmp_path):
    from robustal.studies.report import write_report

    run_experiment(spec(budget=90), tmp_path, name="pool", dataset=digits)  # POOL: self-training
    report = write_report(tmp_path, entropies=False).read_text()
    assert "### Training on the unlabeled pool" in report
    figures = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert figures == ["curves-digits-small-cnn-pgd_self-training.png"]
    assert "curves-pool-" not in report


@pytest.mark.parametrize("median, shown", [(1000.0, 1000), (900, 900), (450.5, "450.5")])
def test_the_stopping_table_shows_a_median_label_count_as_a_count(median, shown):
    from robustal.reports.pool_report import _label_count

    assert _label_count(median) == shown
