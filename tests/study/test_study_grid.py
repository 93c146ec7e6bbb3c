"""Study files: parsing, validation messages, grid expansion; running a study, interrupting it and resuming it."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from robustal.cli import main
from robustal.errors import ConfigError, DataError, UnknownNameError
from robustal.loop.experiment import run_experiment
from robustal.storage.store import Store
from robustal.studies.executors import run_local
from robustal.studies.study import Study
from robustal.studies.study_run import load_study_copy, run_study, save_study_copy

BASE = {"grid": {"datasets": ["digits"], "training": ["standard"], "acquisitions": ["random"], "seeds": [0]}}


def study(**sections) -> Study:
    data = {k: dict(v) for k, v in BASE.items()}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return Study.from_dict(data, source="s.toml")


def test_load_and_expand_the_grid(make_study):
    s = Study.load(make_study(training=("standard", "pgd"), acquisitions=("random", "least-confidence", "dre"),
                              seeds=(0, 1)))
    assert (s.name, s.datasets, s.training, s.seeds) == ("tiny", ("digits",), ("standard", "pgd"), (0, 1))
    tasks = s.tasks()
    assert len(tasks) == 1 * 1 * 2 * 3 * 2
    assert tasks[0].name == "digits-small-cnn-standard-random-s0"
    assert "digits-small-cnn-pgd-least-confidence-s1" in {t.name for t in tasks}
    assert len({t.name for t in tasks}) == len(tasks)
    t = next(t for t in tasks if t.name == "digits-small-cnn-pgd-dre-s1")
    loop = t.spec.loop
    assert (loop.acquisition, loop.seed, loop.train.mode, loop.budget, loop.per_stage) == ("dre", 1, "pgd", 90, 30)
    assert loop.acquisition_options == {"bins": 10} and t.spec.eval_steps == 2 and loop.train.epochs == 1
    assert [t.name for t in s.tasks()] == [t.name for t in tasks]  # deterministic


def test_models_per_dataset_and_default_model():
    s = study(grid={"datasets": ["digits", "mnist"], "models": {"mnist": ["lenet5", "vgg8"]}})
    assert [t.name for t in s.tasks()] == ["digits-small-cnn-standard-random-s0", "mnist-lenet5-standard-random-s0",
                                           "mnist-vgg8-standard-random-s0"]
    assert s.tasks()[0].spec.model is None  # the dataset's default, resolved when the run starts


def test_npz_paths_are_relative_to_the_study_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my.npz").write_bytes(b"")
    (tmp_path / "s.toml").write_text('[grid]\ndatasets = ["data/my.npz"]\nmodels = ["lenet5"]\n'
                                     'training = ["pgd"]\nacquisitions = ["entropy"]\nseeds = [3]\n')
    s = Study.load(tmp_path / "s.toml")
    (task,) = s.tasks()
    assert task.name == "my-lenet5-pgd-entropy-s3"
    assert task.spec.dataset == str((tmp_path / "data" / "my.npz").resolve())
    s.check_data()
    (tmp_path / "data" / "my.npz").unlink()
    with pytest.raises(DataError, match="not found"):
        s.check_data()


@pytest.mark.parametrize("sections, match", [
    ({"grid": {"seed": [0]}}, r"unknown key 'seed' in \[grid\]\. Did you mean 'seeds'\? Valid keys: datasets, models"),
    ({"loop": {"budgett": 5}}, r"unknown key 'budgett' in \[loop\]\. Did you mean 'budget'\?"),
    ({"train": {"epoch": 5}}, r"unknown key 'epoch' in \[train\]\. Did you mean 'epochs'\?"),
    ({"studdy": {}}, r"unknown key 'studdy' in \[top level\]"),
    ({"acquisition": {"dre": {"bins": 5}}}, r"unknown key 'dre' in \[acquisition\]\. .*Valid keys: random"),
    ({"grid": {"seeds": []}}, r"seeds must be a non-empty list"),
    ({"grid": {"training": ["pgdd"]}}, r"'mode' parameter of TrainConfig must be one of 'standard', 'pgd'"),
    ({"loop": {"per_stage": 0}}, r"'per_stage' parameter of LoopConfig"),
    ({"train": {"lr": -1.0}}, r"'lr' parameter of TrainConfig"),
    ({"train": {"augment": "rotate"}}, r"'augment' parameter of TrainConfig must be one of 'crop', 'flip'"),
    ({"loop": {"eval_steps": -1}}, r"'eval_steps' parameter of \[loop\] of s.toml must be an int in \[0, inf\]"),
])
def test_config_errors(sections, match):
    with pytest.raises(ConfigError, match=match):
        study(**sections)


@pytest.mark.parametrize("grid, match", [
    ({"acquisitions": ["entropyy"]}, "Unknown acquisition function 'entropyy'. Did you mean 'entropy'"),
    ({"models": ["lenet"]}, "Unknown model 'lenet'. Did you mean 'lenet5'"),
    ({"datasets": ["mnits"]}, "Unknown dataset 'mnits'. Did you mean 'mnist'"),
])
def test_unknown_names(grid, match):
    with pytest.raises(UnknownNameError, match=match):
        study(grid=grid)


def test_bad_toml_and_missing_file(tmp_path):
    (tmp_path / "bad.toml").write_text("[grid\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Study.load(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="not found"):
        Study.load(tmp_path / "none.toml")


def test_interrupted_study_finishes_only_what_is_missing(make_study, tmp_path, digits):
    s = Study.load(make_study(acquisitions=("random", "entropy", "dre")))
    tasks = s.tasks()
    out = tmp_path / "out"
    run_local(tasks[:2], out)  # the first two runs finish ...

    class Stop(Exception):
        pass

    def stop(result):  # ... the third is interrupted after its first stage
        raise Stop

    with pytest.raises(Stop):
        run_experiment(tasks[2].spec, out, name=tasks[2].name, dataset=digits, on_stage=stop)
    store = Store(out)
    before = {r["name"]: r for r in store.runs()}
    assert before[tasks[2].name]["status"] == "interrupted" and len(store.stages(tasks[2].name)) == 1
    stage0 = store.stages(tasks[2].name)[0]
    done = []
    results = run_study(s, out, on_done=lambda name, stages: done.append(name))
    after = {r["name"]: r for r in store.runs()}
    assert all(r["status"] == "finished" for r in after.values()) and len(after) == 3
    for t in tasks[:2]:
        assert after[t.name] == before[t.name]  # untouched: same rows, same timestamps
    assert store.stages(tasks[2].name)[0] == stage0  # resumed after its finished stage, not redone
    assert [r.labeled for r in results[tasks[2].name]] == [30, 60, 90]
    assert sorted(done) == sorted(t.name for t in tasks)


def test_cli_study_then_report(make_study, tmp_path, capsys):
    path = make_study(acquisitions=("random", "entropy"))
    out = tmp_path / "out"
    assert main(["study", str(path), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "digits-small-cnn" in printed and "robustal report" in printed
    assert "local executor, 1 worker;" in captured.err and "1 workers" not in captured.err  # issue 27.7
    assert "(n=1)" in printed and "± 0.000" not in printed  # one seed: the value alone (issue 27.7)
    assert (out / "study.toml").read_text() == path.read_text()
    assert [t.name for t in load_study_copy(out).tasks()] == [t.name for t in Study.load(path).tasks()]
    # a second call has nothing to do
    assert main(["study", str(path), "--out", str(out), "--no-progress"]) == 0
    (tmp_path / "head.md").write_text("Made with `robustal study tiny.toml`.\n")
    assert main(["report", str(out), "--no-entropy", "--header", str(tmp_path / "head.md")]) == 0
    text = (out / "report" / "report.md").read_text()
    assert text.startswith("# Report: tiny\n\nMade with `robustal study tiny.toml`.")
    assert "(n=1)" in text and "± 0.000" not in text


def test_cli_study_errors(tmp_path, capsys):
    (tmp_path / "s.toml").write_text('[grid]\ndatasets = ["digits"]\ntraining = ["pgd"]\n'
                                     'acquisitions = ["bald", "egll"]\nseeds = [0]\n')
    assert main(["study", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "Unknown acquisition function 'egll'. Did you mean 'egl'?" in capsys.readouterr().err


def test_a_refused_study_leaves_the_copy_of_the_study_that_made_the_results(make_study, tmp_path, monkeypatch):
    """Every check runs before DIR/study.toml is written: a model that does not fit the data (a registered one too
    big for 8×8 digits here) or a missing Ray refuses the study and leaves the copy, and nothing else, in place."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.toml").write_text("# the study that made these results\n")
    (out / "study-source.txt").write_text("/elsewhere\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    lenet = make_study()
    lenet.write_text(lenet.read_text().replace('["small-cnn"]', '["lenet5"]'))
    with pytest.raises(ConfigError, match=r"Cannot build model 'lenet5' \(models in .*tiny\.toml\): .*at least 16"):
        run_study(Study.load(lenet), out, study_file=lenet)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as where it is not installed
    good = make_study()
    with pytest.raises(ConfigError, match=r"The Ray executor needs Ray: pip install 'robustal\[ray\]'"):
        run_study(Study.load(good), out, executor="ray", study_file=good)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_save_study_copy_keeps_relative_paths_working(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"")
    (tmp_path / "s.toml").write_text('[grid]\ndatasets = ["d.npz"]\nmodels = ["lenet5"]\ntraining = ["pgd"]\n'
                                     'acquisitions = ["dre"]\nseeds = [0]\n')
    save_study_copy(tmp_path / "s.toml", tmp_path / "out")
    copy = load_study_copy(tmp_path / "out")
    assert copy.tasks()[0].spec.dataset == str((tmp_path / "d.npz").resolve())


def test_shipped_studies_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "studies"
    cpu = Study.load(root / "paper-cpu.toml")
    assert len(cpu.tasks()) == 1 * 1 * 2 * 12 * 3
    assert cpu.tasks()[0].spec.dataset == str((root.parent / "mnist-8k.npz").resolve())
    main_study = Study.load(root / "robust-al-mnist.toml")
    names = [t.name for t in main_study.tasks()]
    assert len(names) == 4 * 10 + 2 * 10 and len(set(names)) == 60
    assert sum("-trades-" in n for n in names) == 20 and "mnist-8k-lenet5-pgd-dre-proportional-s9" in names
    full = Study.load(root / "paper.toml")
    assert len(full.tasks()) == (1 + 1 + 1 + 4) * 2 * 12 * 3
    assert {t.name.split("-pgd-")[0] for t in full.tasks() if "-pgd-" in t.name} == {
        "mnist-lenet5", "fashion-mnist-lenet5", "svhn-vgg8", "cifar10-resnet18", "cifar10-preact-resnet18",
        "cifar10-vgg16", "cifar10-wide-resnet"}
    # The AutoAttack re-run must repeat paper-mnist's runs of the ten other functions exactly, or its figures would
    # not be those runs' figures.
    paper = {t.name: t.spec for t in Study.load(root / "paper-mnist.toml").tasks()}
    rerun = Study.load(root / "paper-mnist-autoattack.toml")
    assert len(rerun.tasks()) == 10 * 10 and all(t.spec == paper[t.name] for t in rerun.tasks())
    assert (rerun.final_attack.attack, rerun.final_attack.n) == ("autoattack", 200)
    # pool-steps2000-mnist is pool-steps-mnist's random grid with 2 000 pool steps instead of 1 000, and
    # pool-trades-steps1000-mnist is pool-trades-steps2000-mnist with 1 000 instead of 2 000: nothing else differs.
    specs = {}
    for base, variant, steps in (("pool-steps-mnist", "pool-steps2000-mnist", 2000),
                                 ("pool-trades-steps2000-mnist", "pool-trades-steps1000-mnist", 1000)):
        specs[base] = {t.name: t.spec for t in Study.load(root / f"{base}.toml").tasks()}
        tasks = Study.load(root / f"{variant}.toml").tasks()
        assert len(tasks) == 10 and all(t.spec.loop.pool.steps == steps for t in tasks)
        assert all(replace(t.spec, loop=replace(t.spec.loop, pool=specs[base][t.name].loop.pool))
                   == specs[base][t.name] for t in tasks)
    steps1000 = specs["pool-steps-mnist"]
    # pool-budget300-mnist and pool-budget500-mnist are the same random grid with a budget of 300 or 500 labels
    # instead of 1 000, nothing else.
    for budget in (300, 500):
        smaller = Study.load(root / f"pool-budget{budget}-mnist.toml").tasks()
        assert len(smaller) == 10 and all(t.spec.loop.budget == budget for t in smaller)
        assert all(replace(t.spec, loop=replace(t.spec.loop, budget=1000)) == steps1000[t.name] for t in smaller)
    # pool-budget2000-mnist goes on from pool-mnist's random runs with the pool at every stage: only the budget
    # differs, so its first 1 000 labels are those runs again.
    pool_mnist = {t.name: t.spec for t in Study.load(root / "pool-mnist.toml").tasks()}
    longer = Study.load(root / "pool-budget2000-mnist.toml").tasks()
    assert len(longer) == 4 and all(t.spec.loop.budget == 2000 and t.spec.loop.pool.stages == "all" for t in longer)
    assert all(replace(t.spec, loop=replace(t.spec.loop, budget=1000)) == pool_mnist[t.name] for t in longer)


def test_named_acquisition_variants(tmp_path):
    s = study(grid={"acquisitions": ["random", "dre", "dre-proportional"]},
              acquisition={"dre-proportional": {"function": "dre", "rounding": "proportional"}})
    tasks = {t.name: t for t in s.tasks()}
    variant = tasks["digits-small-cnn-standard-dre-proportional-s0"].spec
    assert (variant.loop.acquisition, variant.loop.acquisition_options) == ("dre", {"rounding": "proportional"})
    assert variant.acquisition_label == "dre-proportional"
    assert tasks["digits-small-cnn-standard-dre-s0"].spec.acquisition_label is None
    with pytest.raises(UnknownNameError, match="Unknown acquisition function 'drex'"):
        study(grid={"acquisitions": ["v"]}, acquisition={"v": {"function": "drex"}})
    with pytest.raises(ConfigError, match="'rounding' parameter of dre"):
        study(grid={"acquisitions": ["v"]}, acquisition={"v": {"function": "dre", "rounding": "up"}})


def test_several_grids_make_a_partial_cross_product():
    data = {"grid": [
        {"datasets": ["digits"], "training": ["pgd"], "acquisitions": ["random", "entropy"], "seeds": [0, 1]},
        {"datasets": ["digits"], "training": ["trades"], "acquisitions": ["random"], "seeds": [0, 1]},
    ]}
    s = Study.from_dict(data, source="s.toml")
    assert [t.name for t in s.tasks()] == [
        "digits-small-cnn-pgd-random-s0", "digits-small-cnn-pgd-random-s1", "digits-small-cnn-pgd-entropy-s0",
        "digits-small-cnn-pgd-entropy-s1", "digits-small-cnn-trades-random-s0", "digits-small-cnn-trades-random-s1"]
    assert s.training == ("pgd", "trades") and s.acquisitions == ("random", "entropy")
    data["grid"].append(data["grid"][1])
    with pytest.raises(ConfigError, match=r"the grids give the same run twice \(digits-small-cnn-trades-random-s0"):
        Study.from_dict(data, source="s.toml")
    with pytest.raises(ConfigError, match=r"\[grid #2\] needs 'seeds'"):
        Study.from_dict({"grid": [data["grid"][0], {"datasets": ["digits"], "training": ["pgd"],
                                                    "acquisitions": ["random"]}]}, source="s.toml")


def test_a_grid_overrides_the_study_loop_and_train_settings():
    """All-label references beside active-learning runs: one grid trains on the whole pool, longer."""
    data = {"grid": [
        {"datasets": ["digits"], "training": ["pgd"], "acquisitions": ["random"], "seeds": [0]},
        {"datasets": ["digits"], "training": ["pgd"], "acquisitions": ["all-labels"], "seeds": [0],
         "loop": {"initial": 1297, "budget": 1297, "eval_steps": 10}, "train": {"epochs": 30, "augment": "flip"}}],
        "loop": {"initial": 30, "per_stage": 30, "budget": 90, "eval_steps": 20}, "train": {"epochs": 2},
        "acquisition": {"all-labels": {"function": "random"}}}
    s = Study.from_dict(data, source="s.toml")
    al, ref = s.tasks()
    assert (al.spec.loop.initial, al.spec.loop.budget, al.spec.loop.train.epochs, al.spec.eval_steps) == (30, 90, 2, 20)
    assert (ref.spec.loop.initial, ref.spec.loop.budget, ref.spec.loop.train.epochs, ref.spec.eval_steps) == \
        (1297, 1297, 30, 10)
    assert ref.spec.loop.train.augment == ("flip",) and al.spec.loop.train.augment is None
    assert ref.name == "digits-small-cnn-pgd-all-labels-s0" and ref.spec.loop.acquisition == "random"
    data["grid"][1]["train"] = {"epoch": 3}
    with pytest.raises(ConfigError, match=r"unknown key 'epoch' in \[grid #2.train\]. Did you mean 'epochs'"):
        Study.from_dict(data, source="s.toml")
    data["grid"][1]["train"] = {"epochs": 0}
    with pytest.raises(ConfigError, match="epochs"):
        Study.from_dict(data, source="s.toml")


@pytest.mark.parametrize("model, share", [("lenet5", 0.25), ("small-cnn", 0.25), ("vgg8", 0.5), ("resnet18", 0.5),
                                          ("wide-resnet", 1.0), ("mymodule:factory", 1.0), (None, 0.25)])
def test_ray_gpu_share_follows_the_model_size(model, share):
    from robustal.loop import LoopConfig
    from robustal.loop.experiment import RunSpec
    from robustal.studies.executors import gpu_share

    assert gpu_share(RunSpec(dataset="mnist", model=model, loop=LoopConfig())) == share  # None: mnist's lenet5


def test_a_grid_runs_each_pool_mode_with_the_studys_pool_settings():
    s = study(grid={"training": ["pgd"], "pool": ["none", "self-training"], "seeds": [0, 1]},
              pool={"share": 0.25, "teacher": "model", "steps": 500})
    names = [t.name for t in s.tasks()]
    assert names == ["digits-small-cnn-pgd-random-s0", "digits-small-cnn-pgd+self-training-random-s0",
                     "digits-small-cnn-pgd-random-s1", "digits-small-cnn-pgd+self-training-random-s1"]
    plain, pooled = s.tasks()[:2]
    assert plain.spec.loop.pool.mode == "none"
    assert (pooled.spec.loop.pool.mode, pooled.spec.loop.pool.share, pooled.spec.loop.pool.teacher,
            pooled.spec.loop.pool.steps) == ("self-training", 0.25, "model", 500)


@pytest.mark.parametrize("sections, match", [
    ({"pool": {"mode": "self-training"}}, r"unknown key 'mode' in \[pool\]"),
    ({"pool": {"sharee": 0.5}}, "Did you mean 'share'"),
    ({"pool": {"share": 1.5}}, "'share' parameter of PoolConfig"),
    ({"grid": {"training": ["pgd"], "pool": ["self-train"]}}, "'pool' parameter"),
    ({"grid": {"pool": ["self-training"]}}, "is for adversarial training; the training mode is 'standard'"),
])
def test_bad_pool_settings_in_a_study_name_the_file(sections, match):
    with pytest.raises(ConfigError, match=match):
        study(**sections)
