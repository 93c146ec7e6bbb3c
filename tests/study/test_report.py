"""Reports: numbers equal the store's, figures are real PNGs, statistics on hand-made samples."""

from __future__ import annotations

import csv
import math

import pytest

from robustal.reports.results import collect, fit_steps, summarize
from robustal.reports.stats import (
    compare,
    compare_paired,
    holm,
    mann_whitney,
    mean_ranks,
    mean_std,
    normalized_auc,
    smallest_p_mann_whitney,
    smallest_p_signed_rank,
    vargha_delaney_a12,
    wilcoxon_signed_rank,
)
from robustal.storage.store import Store
from robustal.studies.report import attack_text, checkpoint_labels, write_report
from robustal.studies.study import Study
from robustal.studies.study_run import run_study, save_study_copy
from study_files import grid_toml, study_toml


def test_a12_on_hand_made_samples():
    assert vargha_delaney_a12([1, 2, 3], [1, 2, 3]) == 0.5
    assert vargha_delaney_a12([4, 5, 6], [1, 2, 3]) == 1.0
    assert vargha_delaney_a12([1, 2, 3], [4, 5, 6]) == 0.0
    assert vargha_delaney_a12([1, 3], [2]) == 0.5
    assert vargha_delaney_a12([2, 2], [2, 1]) == 0.75  # (0.5 + 1 + 0.5 + 1) / 4
    with pytest.raises(ValueError):
        vargha_delaney_a12([], [1])


def test_mann_whitney_agrees_with_a12():
    c = compare([4, 5, 6], [1, 2, 3])
    assert c.u == 9.0 and c.a12 == 1.0 and c.p == pytest.approx(0.1)  # exact two-sided p for 3 vs 3: 2/20
    c = compare([1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5])
    assert c.a12 == pytest.approx(c.u / 16) and 0 < c.p <= 1


def _brute_force_p(x, y):
    """Two-sided p by relabelling the pooled values every possible way, with scipy's U for each split."""
    import itertools

    from scipy.stats import mannwhitneyu

    pooled, n = list(x) + list(y), len(x)
    centre = n * len(y) / 2
    obs = abs(mannwhitneyu(x, y).statistic - centre)
    splits = list(itertools.combinations(range(len(pooled)), n))
    hits = 0
    for s in splits:
        a = [pooled[i] for i in s]
        b = [pooled[i] for i in range(len(pooled)) if i not in s]
        hits += abs(mannwhitneyu(a, b).statistic - centre) >= obs - 1e-9
    return hits / len(splits)


@pytest.mark.parametrize("x, y", [
    ([0.61, 0.58, 0.66], [0.41, 0.52, 0.47]),              # 3 vs 3, no ties: the smallest two-sided p, 2/20
    ([0.5, 0.5, 0.6], [0.5, 0.4, 0.4]),                    # ties across the samples
    ([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]),                    # all tied: p = 1
    ([0.3, 0.7, 0.2, 0.9, 0.5], [0.4, 0.45, 0.1, 0.8]),    # unequal sizes
])
def test_mann_whitney_p_is_exact_for_few_seeds(x, y):
    u, p, exact = mann_whitney(x, y)
    assert exact and p == pytest.approx(_brute_force_p(x, y))
    from scipy.stats import mannwhitneyu

    assert u == mannwhitneyu(x, y).statistic


def test_three_seeds_against_three_never_claim_p_below_0_1():
    _, p, _ = mann_whitney([0.61, 0.58, 0.66], [0.41, 0.52, 0.47])
    assert p == pytest.approx(0.1)  # the normal approximation said 0.077


def test_mann_whitney_falls_back_to_the_normal_approximation_for_many_seeds():
    x, y = [i / 40 for i in range(20)], [i / 40 + 0.1 for i in range(20)]
    _, p, exact = mann_whitney(x, y)
    from scipy.stats import mannwhitneyu

    assert not exact and p == pytest.approx(mannwhitneyu(x, y, method="asymptotic").pvalue)


def _brute_force_signed_rank_p(diffs):
    """Two-sided p by flipping the signs of the non-zero differences every possible way, W+ from scipy's ranks."""
    import itertools

    from scipy.stats import rankdata

    d = [v for v in diffs if v != 0]
    ranks = rankdata([abs(v) for v in d])
    centre = sum(ranks) / 2
    obs = abs(sum(r for r, v in zip(ranks, d, strict=True) if v > 0) - centre)
    patterns = list(itertools.product([False, True], repeat=len(d)))
    return sum(abs(sum(r for r, up in zip(ranks, pat, strict=True) if up) - centre) >= obs - 1e-9
               for pat in patterns) / len(patterns)


@pytest.mark.parametrize("diffs", [
    [0.02, 0.03, 0.01],                                   # 3 pairs, all higher: the smallest two-sided p, 2/8
    [-0.011, -0.007, 0.011, -0.002, 0.02, 0.0, 0.017, 0.03, 0.02, 0.007],  # a zero and tied magnitudes
    [0.1, -0.1, 0.1, -0.1],                               # every magnitude tied
    [0.05, -0.01, 0.04, 0.03, 0.02, -0.02, 0.06],
])
def test_signed_rank_p_is_exact_for_few_pairs(diffs):
    w, p, exact = wilcoxon_signed_rank(diffs)
    assert exact and p == pytest.approx(_brute_force_signed_rank_p(diffs))
    from scipy.stats import wilcoxon

    nonzero = [v for v in diffs if v != 0]
    assert w == pytest.approx(wilcoxon(nonzero, alternative="greater").statistic)  # W+, the sum of positive ranks


def test_signed_rank_without_ties_agrees_with_scipys_exact_test():
    from scipy.stats import wilcoxon

    diffs = [0.05, -0.01, 0.04, 0.03, 0.021, -0.02, 0.06, 0.011]
    assert wilcoxon_signed_rank(diffs)[1] == pytest.approx(wilcoxon(diffs, method="exact").pvalue)


def test_signed_rank_edge_cases():
    assert wilcoxon_signed_rank([0.0, 0.0]) == (0.0, 1.0, True)
    assert wilcoxon_signed_rank([0.01, 0.02, 0.03])[1] == pytest.approx(0.25)  # never below 2/8 with 3 pairs
    many = [(-1) ** i * (i + 1) / 100 + 0.005 for i in range(25)]
    _, p, exact = wilcoxon_signed_rank(many)
    from scipy.stats import wilcoxon

    assert not exact and p == pytest.approx(wilcoxon(many, correction=False, method="approx").pvalue)


def test_compare_paired_counts_wins_and_losses():
    c = compare_paired([0.6, 0.5, 0.7, 0.4], [0.5, 0.5, 0.6, 0.45])
    assert (c.pairs, c.higher, c.lower) == (4, 2, 1) and c.mean_diff == pytest.approx(0.0375)
    assert c.p == pytest.approx(wilcoxon_signed_rank([0.1, 0.0, 0.1, -0.05])[1])
    with pytest.raises(ValueError):
        compare_paired([0.1, 0.2], [0.1])


def test_attack_text_and_checkpoints():
    assert attack_text({"name": "pgd", "epsilon": 0.3, "step_size": 0.01, "steps": 50, "random_start": True}) == \
        "PGD-50 (ε = 0.3, step 0.01, random start)"
    assert attack_text({"name": "autoattack", "epsilon": 8 / 255}) == "autoattack (ε = 0.03137)"
    assert attack_text(None).startswith("none")
    pgd = {"name": "pgd", "epsilon": 0.3, "step_size": 0.01, "steps": 50, "random_start": True}
    assert attack_text(pgd, "any-iterate").endswith("random start; an image counts as not robust once any iterate "
                                                    "fools it)")
    assert attack_text(pgd, "last-iterate").endswith("; only the last iterate judged)")
    assert checkpoint_labels(list(range(100, 1001, 100))) == [300, 500, 1000]
    assert checkpoint_labels([30, 60, 90]) == [30, 60, 90]


def test_auc_and_mean_std():
    assert normalized_auc([100, 200, 300], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert normalized_auc([100, 300], [0.2, 0.4]) == pytest.approx(0.3)
    assert normalized_auc([100], [0.42]) == 0.42
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert mean_std([0.5]) == (0.5, 0.0)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, tiny_writer):
    folder = tmp_path_factory.mktemp("study")
    path = tiny_writer(folder, training=("standard", "pgd"), acquisitions=("random", "entropy"), seeds=(0, 1))
    out = folder / "out"
    save_study_copy(path, out)
    run_study(Study.load(path), out)
    return out


def test_report_numbers_equal_the_store(finished_study, tmp_path):
    md = write_report(finished_study, tmp_path / "rep")
    store = Store(finished_study)
    runs = {r["name"]: r for r in store.runs()}
    with open(tmp_path / "rep" / "stages.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(store.stages(n)) for n in runs) == 8 * 3
    for row in rows:
        s = store.stages(row["run"])[int(row["stage"])]
        assert (int(row["labeled"]), float(row["clean"]), float(row["robust"])) == (s.labeled, s.clean, s.robust)
        assert float(row["train_seconds"]) == s.train_seconds
        assert row["training"] == runs[row["run"]]["config"]["loop"]["train"]["mode"]
        assert int(row["seed"]) == runs[row["run"]]["seed"]
    summaries = {(s.training, s.acquisition): s for s in summarize(collect(finished_study))}
    assert len(summaries) == 4
    s = summaries[("pgd", "entropy")]
    finals = [store.stages(f"digits-small-cnn-pgd-entropy-s{seed}")[-1] for seed in (0, 1)]
    assert s.final_clean == [f.clean for f in finals] and s.final_robust == [f.robust for f in finals]
    assert s.clean == mean_std([f.clean for f in finals])
    stages = [store.stages(f"digits-small-cnn-pgd-entropy-s{seed}") for seed in (0, 1)]
    aucs = [normalized_auc([x.labeled for x in st], [x.robust for x in st]) for st in stages]
    assert s.auc_robust == mean_std(aucs)
    text = md.read_text()
    assert f"{s.robust[0]:.3f} ± {s.robust[1]:.3f}" in text and f"{s.auc_robust[0]:.3f} ± {s.auc_robust[1]:.3f}" in text
    c = compare(s.final_robust, summaries[("pgd", "random")].final_robust)
    assert f"{c.a12:.3f}" in text
    assert "4 of 8" not in text and "8 of 8 runs finished" in text
    # 2.5·ε/2, and the rule that judged robustness named
    assert ("Robust accuracy under PGD-2 (ε = 0.2, step 0.25, random start; an image counts as not robust once "
            "any iterate fools it).") in text
    assert "### Runs at chance level" in text
    assert "gap to the all-label reference" not in text and "### References" not in text  # no reference runs
    rand = [store.stages(f"digits-small-cnn-pgd-random-s{seed}")[-1] for seed in (0, 1)]
    paired = compare_paired([f.robust for f in finals], [f.robust for f in rand])
    line = next(ln for ln in text.splitlines() if ln.startswith("| pgd") and "entropy" in ln and "/" in ln)
    assert f"{paired.mean_diff:+.3f}" in line and f"{paired.higher} / {paired.lower}" in line
    assert f"{paired.p:.3f}" in line
    for row in rows:
        s = store.stages(row["run"])[int(row["stage"])]
        assert int(row["at_chance"]) == int(s.at_chance)
    std = [store.stages(f"digits-small-cnn-standard-entropy-s{seed}")[-1] for seed in (0, 1)]
    modes = compare_paired([f.robust for f in finals], [f.robust for f in std])
    line = next(ln for ln in text.splitlines() if ln.replace(" ", "").startswith("|pgd|standard|entropy|"))
    assert f"{modes.mean_diff:+.3f}" in line and f"{modes.higher} / {modes.lower}" in line


def test_figures_are_real_pngs(finished_study, tmp_path):
    import matplotlib.image as mpimg

    md = write_report(finished_study, tmp_path / "rep")
    pngs = sorted((tmp_path / "rep").glob("*.png"))
    assert {p.name for p in pngs} == {f"{kind}-digits-small-cnn-{mode}.png" for kind in ("curves", "entropy")
                                      for mode in ("standard", "pgd")}
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(p)
        assert img.shape[0] > 200 and img.shape[1] > 300 and img.var() > 0
        assert f"]({p.name})" in md.read_text()


def test_class_balance_counts_the_labels_of_every_pick(finished_study, tmp_path):
    import numpy as np

    from robustal.data import load_dataset

    text = write_report(finished_study, tmp_path / "rep").read_text()
    store = Store(finished_study)
    runs = [r for r in collect(finished_study) if (r.training, r.acquisition) == ("pgd", "entropy")]
    y = load_dataset(runs[0].config["dataset"]).splits().pool.y.numpy()
    counts = [np.bincount(y[[i for v in store.selections(r.name).values() for i in v]], minlength=10) for r in runs]
    section = text[text.index("### Class balance of the labeled set"):]
    line = next(ln for ln in section.splitlines() if ln.startswith("| pgd") and "entropy" in ln)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == [str(len(runs)), str(int(counts[0].sum())), f"{np.mean([c.min() for c in counts]):.1f}",
                         str(min(c.min() for c in counts)), f"{np.mean([c.max() for c in counts]):.1f}",
                         str(max(c.max() for c in counts))]


def test_class_balance_prefers_the_labels_a_person_gave(tmp_path):
    import torch

    from robustal.reports.picks import class_counts
    from robustal.reports.results import RunResults
    from robustal.storage.schema import StageRecord

    store = Store(tmp_path)
    store.start_run("r", {"dataset": "mine"}, seed=0)
    store.add_stage("r", StageRecord(0, 4, 0.5, 0.2), torch.tensor([0, 1, 2, 3]), None)
    store.add_labels("r", 0, torch.tensor([0, 1]), torch.tensor([2, 2]))  # a person overruled the pool's labels
    run = RunResults("r", "mine", "m", "pgd", "random", 0, "finished", store.stages("r"), {})
    assert class_counts(tmp_path, run, torch.tensor([0, 1, 1, 0]), 3).tolist() == [1, 1, 2]


def test_report_of_an_unfinished_study_lists_what_is_missing(finished_study, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_study, copy)
    Store(copy).set_status("digits-small-cnn-pgd-entropy-s1", "interrupted")
    text = write_report(copy, entropies=False).read_text()
    assert "7 of 8 runs finished" in text
    assert (copy / "report" / "report.md").is_file()


def test_report_needs_a_results_folder(tmp_path):
    from robustal.errors import ConfigError

    with pytest.raises(ConfigError, match="holds no results.db"):
        write_report(tmp_path)


class _NotAState:
    """A pickled object where a checkpoint holds tensors: weights_only loading refuses it."""


def test_report_warns_on_the_terminal_for_each_damaged_checkpoint_and_still_exits_0(finished_study, tmp_path,
                                                                                     capsys):
    """A missing, pickled or truncated final checkpoint leaves its run out of the entropy section: one warning line
    per run on stderr naming it and why, the report written all the same, and the exit code 0 (documented)."""
    import shutil

    import torch

    from robustal.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(finished_study, copy)
    store = Store(copy)
    damaged = {"digits-small-cnn-pgd-entropy-s0": "missing", "digits-small-cnn-pgd-random-s1": "pickled",
               "digits-small-cnn-standard-entropy-s1": "truncated"}
    for name, how in damaged.items():
        path = store.checkpoint_path(name, store.stages(name)[-1].stage)
        if how == "missing":
            path.unlink()
        elif how == "pickled":
            torch.save({"model": _NotAState()}, path)
        else:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    capsys.readouterr()
    assert main(["report", str(copy), "--out", str(tmp_path / "rep")]) == 0
    captured = capsys.readouterr()
    warnings = [ln for ln in captured.err.splitlines() if ln.startswith("robustal report: warning: ")]
    assert len(warnings) == 3, captured.err
    for name in damaged:
        line = next(ln for ln in warnings if name in ln)
        assert "left out of the report's entropy distributions" in line and "checkpoint" in line
    assert "3 part(s) left out" in captured.out and "Traceback" not in captured.err
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Left out of the entropy distributions:" in text and all(name in text for name in damaged)
    assert "8 of 8 runs finished" in text  # the tables are whole


def test_the_report_says_what_the_curves_band_is_and_the_figure_draws_it(finished_study, tmp_path, monkeypatch):
    import matplotlib.axes
    import numpy as np

    from robustal.reports.figures import CURVES_CAPTION, plot_curves

    text = write_report(finished_study, tmp_path / "rep", entropies=False).read_text()
    curves = text[text.index("### Curves"):]
    assert CURVES_CAPTION in curves.split("![")[0]
    assert "± one standard deviation over those seeds" in CURVES_CAPTION and "n − 1" in CURVES_CAPTION
    bands = []
    fill = matplotlib.axes.Axes.fill_between
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between",
                        lambda ax, x, lo, hi, **kw: bands.append((list(x), lo, hi)) or fill(ax, x, lo, hi, **kw))
    runs = collect(finished_study)
    plot_curves(runs, "digits", "small-cnn", "pgd", tmp_path / "c.png")
    entropy = [r for r in runs if (r.training, r.acquisition) == ("pgd", "entropy")]
    robust = np.array([[s.robust for s in r.stages] for r in entropy])
    x, lo, hi = bands[3]  # random (clean, robust), then entropy (clean, robust)
    assert x == [s.labeled for s in entropy[0].stages]
    np.testing.assert_allclose(lo, robust.mean(0) - robust.std(0, ddof=1))
    np.testing.assert_allclose(hi, robust.mean(0) + robust.std(0, ddof=1))


# --- the smallest attainable p, ranks, optimizer steps ----------------------------------------------------------------
@pytest.mark.parametrize("n, m", [(3, 3), (3, 4), (2, 5), (4, 4)])
def test_the_smallest_mann_whitney_p_is_the_least_p_of_any_arrangement(n, m):
    """No ordering of n values against m gives a smaller exact p than 2 / C(n + m, n); complete separation gives it."""
    import itertools

    least = min(mann_whitney([float(i) for i in split], [float(i) for i in range(n + m) if i not in split])[1]
                for split in itertools.combinations(range(n + m), n))
    assert smallest_p_mann_whitney(n, m) == pytest.approx(least) == pytest.approx(2 / math.comb(n + m, n))


def test_smallest_p_values_for_the_seed_counts_of_the_studies():
    assert smallest_p_mann_whitney(3, 3) == pytest.approx(0.1)
    assert smallest_p_mann_whitney(10, 10) == pytest.approx(2 / 184_756)
    assert smallest_p_mann_whitney(1, 1) == 1.0
    assert smallest_p_signed_rank(3) == 0.25 and smallest_p_signed_rank(5) == 0.0625
    assert smallest_p_signed_rank(10) == pytest.approx(2 / 1024) and smallest_p_signed_rank(0) == 1.0
    with pytest.raises(ValueError):
        smallest_p_mann_whitney(0, 3)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 6, 8])
def test_the_smallest_signed_rank_p_is_the_least_p_of_any_sign_pattern(k):
    import itertools

    magnitudes = [0.01 * (i + 1) for i in range(k)]
    least = min(wilcoxon_signed_rank([m if up else -m for m, up in zip(magnitudes, signs, strict=True)])[1]
                for signs in itertools.product([False, True], repeat=k))
    assert smallest_p_signed_rank(k) == pytest.approx(least)


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.02, 0.03, 0.04: x4, x3, x2, x1 = 0.04, 0.06, 0.06 (kept >= the one before), 0.06 (likewise)
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 0.5 x 1 < 0.4 x 2: kept at 0.8
    assert holm([0.7, 0.6]) == [1.0, 1.0]  # capped at 1
    assert holm([0.002]) == [0.002] and holm([]) == []


def test_mean_ranks_by_hand():
    values = {"a": {0: 0.5, 1: 0.7}, "b": {0: 0.6, 1: 0.7, 2: 0.1}, "c": {0: 0.4, 1: 0.2}}
    seeds, ranks = mean_ranks(values)
    # seed 0: b 1, a 2, c 3; seed 1: a and b tie for first (1.5 each), c 3; seed 2: not every name has it
    assert seeds == [0, 1] and ranks == {"a": 1.75, "b": 1.25, "c": 3.0}
    assert mean_ranks({"a": {0: 1.0}, "b": {1: 1.0}}) == ([], {})


@pytest.mark.parametrize("n, batch_size, epochs, min_steps", [
    (8000, 128, 30, 100), (100, 128, 10, 100), (1000, 128, 10, 100), (1297, 32, 2, 0), (65, 32, 3, 0),
    (7, 1, 2, 0), (300, 64, 4, 50), (129, 128, 1, 0), (257, 128, 1, 0)])
def test_fit_steps_follow_the_training_rule(n, batch_size, epochs, min_steps):
    """Counted against the batches training really makes (a last batch of one joins the previous; min_steps)."""
    import torch

    from robustal.engine.training import TrainConfig, _epoch_batches

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, min_steps=min_steps)
    batches = _epoch_batches(n, cfg, torch.Generator().manual_seed(0))
    assert sum(map(len, batches)) >= n
    assert fit_steps(n, cfg.to_dict()) == epochs * len(batches)
    assert fit_steps(8000, {"epochs": 30, "batch_size": 128, "min_steps": 100}) == 1890  # paper-mnist's references


# --- all-label references, ranking, AUC tests, final attacks ----------------------------------------------------------
REFERENCE_GRIDS = (grid_toml(("random", "entropy", "margin"), ("pgd",), (0, 1, 2), several=True),
                   grid_toml(("random", "entropy"), ("standard",), (0, 1), several=True),
                   grid_toml(("all-labels",), ("standard", "pgd"), (0, 1), several=True,
                             loop={"initial": 1297, "budget": 1297}, train={"epochs": 2, "validate_last": 2}))


@pytest.fixture(scope="module")
def reference_study(tmp_path_factory, tiny_settings):
    """Active learning under PGD (3 functions, 3 seeds) and standard training (2 functions, 2 seeds), and all-label
    references (digits' whole pool of 1 297, one stage) of both modes, 2 seeds."""
    folder = tmp_path_factory.mktemp("refs")
    path = folder / "refs.toml"
    path.write_text(study_toml(*REFERENCE_GRIDS, name="tiny-refs", settings=tiny_settings,
                               extra='[acquisition.all-labels]\nfunction = "random"\n'))
    out = folder / "out"
    save_study_copy(path, out)
    run_study(Study.load(path), out)
    return out


@pytest.fixture(scope="module")
def reference_report(reference_study, tmp_path_factory):
    return write_report(reference_study, tmp_path_factory.mktemp("rep")).read_text()


def _section(text: str, title: str) -> str:
    """The Markdown from heading ``title`` to the next heading of the same or a higher level."""
    level = title.split(" ")[0]
    start = text.index(title + "\n")
    ends = [text.find(f"\n{h} ", start + 1) for h in ("#" * i for i in range(1, len(level) + 1))]
    return text[start:min([e for e in ends if e > 0] or [len(text)])]


def _row(section: str, *lead: str) -> list[str]:
    """The cells of the table row of ``section`` whose leading cells are ``lead``."""
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:len(lead)] == list(lead):
            return cells
    raise AssertionError(f"no row {lead} in:\n{section}")


def _finals(store, names):
    return [store.stages(n)[-1] for n in names]


def _pm(values):
    import statistics

    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def test_a_run_on_the_whole_pool_is_a_reference(reference_study):
    runs = collect(reference_study)
    refs = {r.name for r in runs if r.is_reference}
    assert refs == {f"digits-small-cnn-{mode}-all-labels-s{s}" for mode in ("standard", "pgd") for s in (0, 1)}
    assert all(r.config["pool"] == 1297 == r.final.labeled and len(r.stages) == 1 for r in runs if r.is_reference)
    summaries = {(s.training, s.acquisition): s for s in summarize(runs)}
    assert summaries[("pgd", "all-labels")].reference and not summaries[("pgd", "random")].reference


def test_references_are_rows_of_the_final_table_with_the_gap_to_them(reference_study, reference_report):
    store = Store(reference_study)
    table = _section(reference_report, "### Final accuracy and area under the curves")
    lines = [ln for ln in table.splitlines() if ln.startswith("| pgd") or ln.startswith("| standard")]
    order = [[c.strip() for c in ln.strip("|").split("|")][:2] for ln in lines]
    assert order == [["pgd", "random"], ["pgd", "entropy"], ["pgd", "margin"], ["pgd", "all-labels (reference)"],
                     ["standard", "random"], ["standard", "entropy"], ["standard", "all-labels (reference)"]]
    for mode in ("pgd", "standard"):
        ref = _finals(store, [f"digits-small-cnn-{mode}-all-labels-s{s}" for s in (0, 1)])
        row = _row(table, mode, "all-labels (reference)")
        assert row[2:] == ["2", "1297", _pm([f.clean for f in ref]), _pm([f.robust for f in ref]), "-", "-", "-"]
        seeds = (0, 1, 2) if mode == "pgd" else (0, 1)
        for acq in ("random", "entropy"):
            finals = _finals(store, [f"digits-small-cnn-{mode}-{acq}-s{s}" for s in seeds])
            gap = sum(f.robust for f in finals) / len(finals) - sum(f.robust for f in ref) / 2
            assert _row(table, mode, acq)[-1] == f"{gap:+.3f}"


def test_references_are_never_compared_with_random(reference_report):
    for title in ("### Ranking of the functions", "### Runs at chance level",
                  "### Each function vs random (two-sided Mann–Whitney U",
                  "### Each function vs random, paired by seed", "### Each training mode vs pgd",
                  "### Entropy of the selected samples vs the pool", "### Class balance of the labeled set"):
        start = reference_report.index(title)
        end = reference_report.find("\n### ", start + 1)
        section = reference_report[start:end if end > 0 else None]
        assert "all-labels" not in section and "| pgd" in section, title


def test_the_references_section_counts_steps_and_kept_epochs(reference_study, reference_report):
    import statistics

    import torch

    from robustal.engine.training import TrainConfig, _epoch_batches

    store = Store(reference_study)
    section = _section(reference_report, "### References: all labels")

    def steps(n, epochs):
        return epochs * len(_epoch_batches(n, TrainConfig(epochs=epochs, batch_size=32, min_steps=0),
                                           torch.Generator().manual_seed(0)))

    al = {mode: [sum(steps(s.labeled, 1) for s in store.stages(f"digits-small-cnn-{mode}-{a}-s{seed}"))
                 for a, seed in runs]
          for mode, runs in (("pgd", [(a, s) for a in ("random", "entropy", "margin") for s in (0, 1, 2)]),
                             ("standard", [(a, s) for a in ("random", "entropy") for s in (0, 1)]))}
    for mode in ("standard", "pgd"):
        ref = _finals(store, [f"digits-small-cnn-{mode}-all-labels-s{s}" for s in (0, 1)])
        best = [f.best_epoch for f in ref]
        row = _row(section, mode, "all-labels")
        assert row[2:7] == ["2", "1297", "2", str(steps(1297, 2)), f"{statistics.median(al[mode]):g}"]
        assert row[7] == f"{min(best)} / {statistics.median(best):g} / {max(best)}"
        assert row[8:] == [_pm([f.clean for f in ref]), _pm([f.robust for f in ref])]
        last = sum(b == 2 for b in best)
        sentence = next(ln for ln in section.splitlines() if ln.startswith(f"- {mode}:"))
        assert (f"the last in {last} of 2 seeds" in sentence) if last else ("never the last" in sentence)
        # 1 of 2 is half: often
        assert ("more training might help" in sentence) == (last >= 1)
    assert "validated epochs: all)" in section  # validate_last = epochs = 2


def test_the_curves_draw_each_reference_as_a_dotted_line(reference_study, tmp_path, monkeypatch):
    import matplotlib.figure

    from robustal.reports.figures import plot_curves

    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    store = Store(reference_study)
    ref = _finals(store, [f"digits-small-cnn-pgd-all-labels-s{s}" for s in (0, 1)])
    plot_curves(collect(reference_study), "digits", "small-cnn", "pgd", tmp_path / "c.png")
    (fig,) = figures
    for ax, key in zip(fig.axes, ("clean", "robust"), strict=True):
        dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        assert len(dotted) == 1 and dotted[0].get_label() == "all-labels (1297 labels)"
        assert list(dotted[0].get_ydata()) == pytest.approx([sum(getattr(f, key) for f in ref) / 2] * 2)
        assert {ln.get_label() for ln in ax.get_lines() if ln.get_linestyle() != ":"} == {"random", "entropy",
                                                                                         "margin"}


def test_the_kept_epoch_says_whether_more_training_would_help():
    from robustal.studies.report import _kept_epoch_sentence

    assert "more training might help" in _kept_epoch_sentence("pgd", [30, 30, 12, 30], 30)
    assert "the last in 3 of 4 seeds" in _kept_epoch_sentence("pgd", [30, 30, 12, 30], 30)
    # paper-mnist's PGD references: rarely the last epoch, but late at the median -- still rising (60 epochs helped)
    late = _kept_epoch_sentence("pgd", [25, 27, 27, 29, 28, 30, 29, 29, 29, 29], 30)
    assert "more training might help" in late and "median kept epoch 29 of 30, the last in 1 of 10 seeds" in late
    assert "more training would likely help little" in _kept_epoch_sentence("pgd", [30, 12, 14, 20], 30)
    plateau = _kept_epoch_sentence("standard", [29, 27, 28, 29, 25, 30, 22, 20, 12, 11], 30)  # median 26: noise
    assert "likely help little" in plateau and "median kept epoch 26 of 30" in plateau
    never = _kept_epoch_sentence("trades", [18, 22, 25], 30)
    assert "never the last (median 22, latest 25 of 30)" in never and "unlikely to help" in never


def test_the_gap_is_to_the_most_robust_reference_of_the_mode():
    from robustal.reports.results import Summary
    from robustal.studies.report import _final_table

    def summary(acq, robust, reference=False):
        return Summary("digits", "small-cnn", "pgd", acq, 3, 90 if not reference else 1297, (0.9, 0.01),
                       (robust, 0.01), (0.8, 0.01), (robust - 0.1, 0.01), [0.9] * 3, [robust] * 3, reference)

    cell = [summary("random", 0.5), summary("all-labels", 0.7, True), summary("all-labels-60ep", 0.8, True),
            summary("all-labels-5ep", 0.6, True)]
    text = "\n".join(_final_table(cell))
    assert _row(text, "pgd", "random")[-1] == "-0.300"
    assert "pgd: all-labels-60ep, 0.800" in text
    assert [_row(text, "pgd", f"{a} (reference)")[5] for a in ("all-labels", "all-labels-60ep", "all-labels-5ep")] \
        == ["0.700 ± 0.010", "0.800 ± 0.010", "0.600 ± 0.010"]


def test_the_entropy_histogram_is_labelled_and_readable(tmp_path, monkeypatch):
    import matplotlib.figure
    import numpy as np

    from robustal.reports.figures import plot_entropies

    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    rng = np.random.default_rng(0)
    data = {f"f{i}": (rng.random(500) * 3, rng.random(40) * 3) for i in range(5)}
    plot_entropies(data, "title", tmp_path / "e.png")
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == list(data)
    for ax in panels:
        assert "entropy" in ax.get_xlabel() and "bits" in ax.get_xlabel() and ax.get_ylabel() == "density"
        assert ax.xaxis.label.get_fontsize() >= 11 and ax.title.get_fontsize() >= 12
        assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 10
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["pool (all samples)", "selected"]
    width, height = fig.get_size_inches()
    assert width / 3 >= 4 and height / 2 >= 3.5  # 3 columns, 2 rows of panels


def test_picks_does_not_import_the_report():
    import subprocess
    import sys
    from pathlib import Path

    import robustal

    src = str(Path(robustal.__file__).parents[1])
    code = ("import sys, robustal.reports.picks; "
            "assert 'robustal.studies.report' not in sys.modules, 'picks imported the report'; "
            "import robustal.studies.report")
    result = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": src}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _rank_by_hand(values: dict[str, float]) -> dict[str, float]:
    """Rank 1 for the highest; ties: the mean of the ranks they span."""
    return {k: sum(w > v for w in values.values()) + (sum(w == v for w in values.values()) + 1) / 2
            for k, v in values.items()}


def test_the_ranking_table_by_hand(reference_study, reference_report):
    store = Store(reference_study)
    section = _section(reference_report, "### Ranking of the functions")
    functions = ("random", "entropy", "margin")
    finals = {a: {s: store.stages(f"digits-small-cnn-pgd-{a}-s{s}")[-1] for s in (0, 1, 2)} for a in functions}
    means = {}
    for key in ("robust", "clean"):
        ranks = [_rank_by_hand({a: getattr(finals[a][s], key) for a in functions}) for s in (0, 1, 2)]
        means[key] = {a: sum(r[a] for r in ranks) / 3 for a in functions}
    rows = [ln for ln in section.splitlines() if ln.startswith("| pgd")]
    listed = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]
    assert [row[1] for row in listed] == sorted(functions, key=lambda a: (means["robust"][a], means["clean"][a]))
    for row in listed:
        assert row[2:] == ["3 (3 functions)", f"{means['robust'][row[1]]:.2f}", f"{means['clean'][row[1]]:.2f}"]
    assert _row(section, "standard", "random")[2] == "2 (2 functions)"


def test_tables_say_when_the_seeds_cannot_reach_significance(reference_report):
    mw = _section(reference_report, "### Each function vs random (two-sided Mann–Whitney U across seeds, exact where "
                                    "the seeds allow; Â12 = P(function > random))")
    assert _row(mw, "pgd", "entropy")[2:4] == ["3 vs 3", "0.100"]  # 2 / C(6, 3)
    assert _row(mw, "standard", "entropy")[2:4] == ["2 vs 2", "0.333"]  # 2 / C(4, 2)
    note = next(ln for ln in mw.splitlines() if "cannot reach" in ln or "can reach" in ln)
    assert mw.index(note) < mw.index("| training") and "No row of this table can reach p < 0.05" in note
    paired = _section(reference_report, "#### Final accuracy")
    row = _row(paired, "pgd", "entropy")
    for higher_lower, least in ((row[4], row[6]), (row[8], row[10])):
        k = sum(int(v) for v in higher_lower.split(" / "))
        assert least == f"{2 / 2 ** k:.3f}"
    assert "can reach p < 0.05" in paired.split("| training")[0]


def test_a_table_lists_only_the_rows_that_cannot_reach_significance():
    from robustal.reports.comparisons import paired, paired_table

    many = {s: (0.5 + 0.01 * s, 0.31) for s in range(6)}  # 6 seeds, higher in each: min p 2 / 2^6
    few = {s: (0.5 + 0.01 * s, 0.3) for s in range(3)}  # 3 seeds; robust equal in each: no non-zero pair, min p 1
    base = {s: (0.4, 0.3) for s in range(6)}
    rows = paired([(["pgd", "a"], many, base), (["pgd", "b"], few, base)])
    lines = paired_table(rows, ["training", "acquisition"], ["clean", "robust"])
    assert lines[0].startswith("1 of 2 rows cannot reach p < 0.05") and "pgd / b (min p 1.000)" in lines[0]
    assert "pgd / a" not in lines[0]
    assert _row(lines[-1], "pgd", "a")[2:] == ["6", "+0.125", "6 / 0", f"{2 / 64:.3f}", f"{2 / 64:.3f}", "+0.010",
                                               "6 / 0", f"{2 / 64:.3f}", f"{2 / 64:.3f}"]
    assert _row(lines[-1], "pgd", "b")[2:] == ["3", "+0.110", "3 / 0", "0.250", "0.250", "+0.000", "0 / 0", "1.000",
                                               "1.000"]


def test_the_area_under_the_curves_paired_with_random(reference_study, reference_report):
    import numpy as np

    store = Store(reference_study)
    section = _section(reference_report, "#### Area under the curves")

    def auc(name, key):
        stages = store.stages(name)
        x, y = [s.labeled for s in stages], [getattr(s, key) for s in stages]
        return float(np.sum(np.diff(x) * (np.array(y[1:]) + np.array(y[:-1])) / 2) / (x[-1] - x[0]))

    for acq in ("entropy", "margin"):
        row = _row(section, "pgd", acq)
        for key, cells in (("clean", row[3:7]), ("robust", row[7:11])):
            d = [round(auc(f"digits-small-cnn-pgd-{acq}-s{s}", key) - auc(f"digits-small-cnn-pgd-random-s{s}", key),
                       12) for s in (0, 1, 2)]
            assert cells[0] == f"{sum(d) / 3:+.3f}"
            assert cells[1] == f"{sum(v > 0 for v in d)} / {sum(v < 0 for v in d)}"
            assert cells[2] == f"{_brute_force_signed_rank_p(d):.3f}"
    assert "No function is higher than random on both final robust accuracy and its area under the curve" in \
        reference_report


def test_one_function_against_each_other_of_its_mode_paired_by_seed(reference_study):
    from robustal.reports.comparisons import versus_section

    store, runs = Store(reference_study), collect(reference_study)
    section = "\n".join(versus_section(runs, "digits", "small-cnn", function="margin"))
    assert section.startswith("\n### margin vs each other function, paired by seed")
    for acq in ("random", "entropy"):
        row = _row(section, "pgd", acq)
        for i, key in ((3, "clean"), (7, "robust")):
            d = [round(getattr(store.stages(f"digits-small-cnn-pgd-margin-s{s}")[-1], key)
                       - getattr(store.stages(f"digits-small-cnn-pgd-{acq}-s{s}")[-1], key), 12) for s in (0, 1, 2)]
            assert row[i:i + 3] == [f"{sum(d) / 3:+.3f}", f"{sum(v > 0 for v in d)} / {sum(v < 0 for v in d)}",
                                    f"{_brute_force_signed_rank_p(d):.3f}"]
    assert "| standard" not in section  # margin ran under PGD only; references are never compared
    assert versus_section(runs, "digits", "small-cnn") == []  # no dre runs in this study: no section


def test_a_function_that_beats_random_on_both_robust_measures_is_named():
    from robustal.reports.comparisons import _beats_random, paired

    base = {s: (0.9, 0.5) for s in range(8)}
    better = {s: (0.9 + 0.001 * (s % 2), 0.52 + 0.002 * s) for s in range(8)}  # robust +0.020 to +0.034
    finals = paired([(["pgd", "x"], better, base)])
    aucs = paired([(["pgd", "x"], better, base)])
    sentence, _, corrected = _beats_random(finals, aucs)
    assert "holds for: pgd / x" in corrected  # one function compared: Holm changes nothing
    assert sentence.startswith("Higher than random on both") and "pgd / x (robust +0.027, p = 0.008" in sentence
    assert "clean +0.001, p = 0.125" in sentence  # 4 seeds higher, 4 equal: 2 / 2^4
    worse = paired([(["pgd", "x"], {s: (0.9, 0.48) for s in range(8)}, base)])
    assert _beats_random(finals, worse)[0].startswith("No function is higher")


def test_a_winner_that_may_be_luck_of_many_comparisons_is_said_to_be():
    """p = 0.008 against random is below 0.05 on its own, not once corrected for six functions compared (x 6)."""
    from robustal.reports.comparisons import _beats_random, paired

    base = {s: (0.9, 0.5) for s in range(8)}
    better = {s: (0.9, 0.52 + 0.002 * s) for s in range(8)}  # all 8 seeds higher: p = 2 / 2^8
    level = {s: (0.9, 0.5 + 0.01 * (-1) ** s) for s in range(8)}  # 4 higher, 4 lower
    rows = [(["pgd", "x"], better, base)] + [(["pgd", f"other{i}"], level, base) for i in range(5)]
    lines = _beats_random(paired(rows), paired(rows))
    assert "pgd / x (robust +0.027, p = 0.008" in lines[0] and "Holm-adjusted p = 0.047 and 0.047" in lines[0]
    assert "(6 under pgd)" in lines[-1] and "holds for: pgd / x" in lines[-1]
    rows += [(["pgd", "other5"], level, base)] * 2  # eight functions: 0.0078 x 8 = 0.0625
    lines = _beats_random(paired(rows), paired(rows))
    assert "(8 under pgd)" in lines[-1] and "none of them stays below" in lines[-1]


def _attacks_csv(path, rows):
    path.write_text("run,n,clean,pgd,autoattack\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_final_models_under_autoattack_from_a_partial_file(reference_study, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_study, copy)
    name = "digits-small-cnn-pgd-{}-s{}".format
    rows = [(name("random", 0), 200, 0.9, 0.60, 0.50), (name("random", 1), 200, 0.91, 0.62, 0.55),
            (name("random", 2), 200, 0.92, 0.58, 0.52), (name("entropy", 0), 200, 0.88, 0.64, 0.49),
            (name("entropy", 1), 200, 0.87, 0.65, 0.52), (name("entropy", 2), "", "", "", ""),  # not attacked yet
            (name("all-labels", 0), 200, 0.95, 0.70, 0.61), ("some-other-run", 200, 0.5, 0.4, 0.3)]
    _attacks_csv(copy / "final-attacks.csv", rows)
    text = write_report(copy, tmp_path / "rep", entropies=False).read_text()
    section = _section(text, "### Final models under AutoAttack")
    assert "6 of the 17 finished runs' final models; 1 row(s) with an empty cell left out" in section
    assert "Left out, not a finished run of this folder: some-other-run." in section
    assert "first 200 test images" in section and (tmp_path / "rep" / "final-attacks.csv").is_file()
    assert not (tmp_path / "rep" / "attacks.csv").exists()  # no stored rows: the legacy file is the only source
    cells = {"random": rows[:3], "entropy": rows[3:5]}
    means = {a: [sum(r[i] for r in rs) / len(rs) for i in (3, 4)] for a, rs in cells.items()}  # PGD, AutoAttack
    for acq, rs in cells.items():
        ranks = [str(1 + sum(means[b][i] > means[acq][i] for b in means)) for i in (0, 1)]
        flagged = sum(r[3] - r[4] > 0.05 for r in rs)  # robustal.engine.masking's PGD → AutoAttack gap check
        assert _row(section, "pgd", acq)[2:] == [str(len(rs)), _pm([r[2] for r in rs]), _pm([r[3] for r in rs]),
                                                 _pm([r[4] for r in rs]),
                                                 f"{sum(r[3] - r[4] for r in rs) / len(rs):+.3f}", *ranks,
                                                 f"{flagged} / {len(rs)}"]
    assert _row(section, "pgd", "entropy")[-3:-1] == ["1", "2"]  # first by PGD, second by AutoAttack
    assert "models are flagged: PGD overstates robustness" in section
    assert _row(section, "pgd", "all-labels (reference)")[2:4] == ["1", "0.950 (n=1)"]  # one seed: no "± 0.000"
    assert not any(ln.startswith("| pgd") and "margin" in ln for ln in section.splitlines())
    paired = section[section.index("Each function vs random under both attacks"):]
    row = _row(paired, "pgd", "entropy")
    d_pgd, d_aa = [0.64 - 0.60, 0.65 - 0.62], [0.49 - 0.50, 0.52 - 0.55]  # seeds 0 and 1: both attacked
    assert row[2:] == ["2", f"{sum(d_pgd) / 2:+.3f}", "2 / 0", f"{_brute_force_signed_rank_p(d_pgd):.3f}", "0.500",
                         f"{sum(d_aa) / 2:+.3f}", "0 / 2", f"{_brute_force_signed_rank_p(d_aa):.3f}", "0.500"]
    assert "all-labels" not in paired


@pytest.mark.parametrize("content, problem", [
    ("run,n,clean,pgd\nx,200,0.9,0.6\n", "missing column(s) autoattack"),
    ("run,n,clean,pgd,autoattack\nx,200,0.9,0.6,0.5\nx,200,0.9,0.6,0.5\n", "line 3: run 'x' is listed twice"),
    ("run,n,clean,pgd,autoattack\nx,200,90,60,50\n", "line 2: n must be at least 1 and the accuracies in [0, 1]"),
    ("run,n,clean,pgd,autoattack\nx,two hundred,0.9,0.6,0.5\n", "line 2: n must be a whole number"),
])
def test_a_bad_final_attacks_file_leaves_its_section_out_with_the_reason(finished_study, tmp_path, content, problem):
    import shutil

    from robustal.errors import ReportWarning

    copy = tmp_path / "copy"
    shutil.copytree(finished_study, copy)
    (copy / "final-attacks.csv").write_text(content)
    with pytest.warns(ReportWarning, match="final-attacks.csv") as caught:
        text = write_report(copy, tmp_path / "rep", entropies=False).read_text()
    assert problem in str(caught[0].message)
    section = _section(text, "### Final models under AutoAttack")
    assert "Skipped:" in section and problem in section
    assert "### Final accuracy and area under the curves" in text  # the rest of the report stands


def test_the_evaluation_rule_of_a_run_is_stored_or_inferred():
    """The rule a run's robust accuracy used: as stored; else robustal 0.2's last-iterate rule, unless the run
    records validate_last (the any-iterate rule came with it)."""
    from robustal.reports.results import RunResults

    def run(attack: dict, train: dict) -> RunResults:
        return RunResults("r", "d", "m", "pgd", "random", 0, "finished", [], {"loop": {"eval_attack": attack,
                                                                                    "train": train}})

    assert run({"name": "pgd", "rule": "last-iterate"}, {"validate_last": 5}).eval_rule == "last-iterate"
    assert run({"name": "pgd"}, {"validate_last": 5}).eval_rule == "any-iterate"
    assert run({"name": "pgd"}, {"epochs": 10}).eval_rule == "last-iterate"


def _add_final_rows(store, rows, attack, machine=None):
    """Final-attack rows ``(run, clean, pgd, robust)`` under ``attack``, as robustal attack stores them."""
    from robustal.storage.provenance import provenance

    where = {**provenance("cpu"), **(machine or {})}
    for run, clean, pgd, robust in rows:
        store.add_final_attack({"run": run, "attack": attack, "version": attack, "n": 10, "seed": 0, "clean": clean,
                                "pgd": pgd, "robust": robust, "seconds": 1.0, "provenance": where, "created": 0.0})


def test_the_report_reads_both_attacks_from_the_store_beside_the_legacy_file(reference_study, tmp_path):
    """AutoAttack from the store and the legacy CSV (a run the table lacks), AutoAttack-fast in its own section; each
    says which attack its verdicts rest on and the machine that attacked."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_study, copy)
    name = "digits-small-cnn-pgd-{}-s{}".format
    store = Store(copy)
    standard = [(name("random", s), 0.9, 0.6, 0.50 + 0.01 * s) for s in range(3)] + \
               [(name("entropy", s), 0.9, 0.7, 0.60 + 0.01 * s) for s in range(2)]
    _add_final_rows(store, standard, "autoattack")
    _attacks_csv(copy / "final-attacks.csv", [(name("entropy", 2), 200, 0.9, 0.7, 0.62),
                                              (name("random", 0), 200, 0.1, 0.1, 0.1)])  # the table's row wins
    _add_final_rows(store, [(r, c, p, a + 0.05) for r, c, p, a in standard], "autoattack-fast",
                    {"cpu": "Other CPU", "isa": "AVX2"})
    text = write_report(copy, tmp_path / "rep", entropies=False).read_text()
    aa = _section(text, "### Final models under AutoAttack")
    assert ("results.db, table final_attacks; each row in [attacks.csv](attacks.csv)) and "
            "[final-attacks.csv](final-attacks.csv) (1 rows)") in aa
    # Every stored row is in attacks.csv beside the report (the legacy file's are not: it is copied as it is), so the
    # sections can be recomputed from committed files.
    with open(tmp_path / "rep" / "attacks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["attack"]) for r in rows] == sorted((r, a) for r, *_ in standard
                                                             for a in ("autoattack", "autoattack-fast"))
    by_key = {(r["run"], r["attack"]): r for r in rows}
    assert float(by_key[(name("entropy", 1), "autoattack")]["robust"]) == 0.61
    assert float(by_key[(name("entropy", 1), "autoattack-fast")]["robust"]) == 0.66
    assert by_key[(name("random", 2), "autoattack-fast")]["machine"].startswith("Other CPU (AVX2)")
    assert _row(aa, "pgd", "random")[5] == _pm([0.50, 0.51, 0.52])  # not the CSV's 0.1
    assert _row(aa, "pgd", "entropy")[2:6] == ["3", "0.900 ± 0.000", "0.700 ± 0.000", _pm([0.60, 0.61, 0.62])]
    assert "Which attack each verdict rests on" in aa and "rests on AutoAttack (standard" in aa
    fast = _section(text, "### Final models under AutoAttack-fast")
    assert "fast version (APGD-CE, APGD-T only" in fast and "Attacked on Other CPU (AVX2)" in fast
    assert _row(fast, "pgd", "random")[5] == _pm([0.55, 0.56, 0.57])
    assert "| training | acquisition | runs | clean | PGD | AutoAttack-fast |" in " ".join(fast.split())


def test_the_report_header_says_plainly_when_runs_came_from_several_machines(reference_study, tmp_path):
    """A second machine faked by editing two runs' stored versions: the header names both, with their run counts."""
    import json
    import shutil
    import sqlite3

    copy = tmp_path / "copy"
    shutil.copytree(reference_study, copy)
    runs = Store(copy).runs()
    text = write_report(copy, tmp_path / "one", entropies=False).read_text()
    assert f"Machine: {runs[0]['versions']['cpu']} ({runs[0]['versions']['isa']})" in text
    con = sqlite3.connect(copy / "results.db")
    for run in runs[:2]:
        other = {**run["versions"], "cpu": "Far CPU", "isa": "AVX512", "threads": 16}
        con.execute("UPDATE runs SET versions = ? WHERE name = ?", (json.dumps(other), run["name"]))
    con.commit()
    con.close()
    text = write_report(copy, tmp_path / "two", entropies=False).read_text()
    assert f"**These {len(runs)} runs were computed on 2 different machines**" in text
    assert "- Far CPU (AVX512), 16 threads, cpu: 2 runs" in text
    assert f"thread, cpu: {len(runs) - 2} runs" in text  # the tests run torch on one thread


def test_the_committed_paper_mnist_final_attacks_file_stays_readable():
    """docs/results/paper-mnist/final-attacks.csv (robustal 0.3's script) is read as AutoAttack's rows."""
    from pathlib import Path

    from robustal.reports.final_attacks import read_final_attacks, store_sources

    path = Path(__file__).resolve().parents[2] / "docs" / "results" / "paper-mnist" / "final-attacks.csv"
    rows, incomplete = read_final_attacks(path)
    assert len(rows) == len(path.read_text().splitlines()) - 1 - incomplete
    (source,) = store_sources([], (rows, incomplete))
    assert source.attack == "autoattack" and source.rows == rows and "final-attacks.csv" in source.source


def test_the_share_of_the_references_robustness_is_given_under_both_attacks(reference_study, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_study, copy)
    name = "digits-small-cnn-pgd-{}-s{}".format
    rows = [(name("random", s), 0.9, 0.4, 0.3) for s in range(2)] + [(name("entropy", s), 0.9, 0.6, 0.3)
                                                                      for s in range(2)]
    rows += [(name("all-labels", s), 0.95, 0.8, 0.6) for s in range(2)]
    _add_final_rows(Store(copy), rows, "autoattack")
    section = _section(write_report(copy, tmp_path / "rep", entropies=False).read_text(),
                       "### Final models under AutoAttack")
    assert ("- pgd: the all-label reference all-labels (2 runs: PGD 0.800, AutoAttack 0.600); the functions reach "
            "PGD 50% to 75% (best entropy); AutoAttack 50% to 50% (best random) of its robust accuracy.") in section


def test_matplotlibs_font_cache_note_stays_out_of_the_output(caplog):
    """Issue 27.7: "Matplotlib is building the font cache; this may take a moment." leaked into a study's output."""
    import logging

    from robustal.reports.figures import pyplot

    pyplot()
    fonts = logging.getLogger("matplotlib.font_manager")
    with caplog.at_level(logging.WARNING):
        fonts.warning("Matplotlib is building the font cache; this may take a moment.")
        fonts.warning("findfont: Font family 'Nope' not found.")
    assert [r.getMessage() for r in caplog.records] == ["findfont: Font family 'Nope' not found."]


def test_the_pool_is_compared_with_the_same_training_without_it_under_both_attacks(reference_study, tmp_path):
    """A training mode with the pool (pgd+self-training) against the same mode without it, seed by seed, under PGD
    and AutoAttack: the runs with the pool are copies of the random runs with the pool recorded in their settings."""
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference_study, copy)
    (copy / "study.toml").unlink()  # every run of the store is reported
    store = Store(copy)
    plain, pooled = "digits-small-cnn-pgd-random-s{}".format, "digits-small-cnn-pgd+self-training-random-s{}".format
    for seed in range(3):
        record = store.export_run(plain(seed))
        run = list(record["run"])
        config = json.loads(run[1])
        config["loop"]["pool"] = {"mode": "self-training"}
        run[0], run[1] = pooled(seed), json.dumps(config)
        record.update(run=tuple(run), final_attacks=[],
                      selections=[(pooled(seed), *row[1:]) for row in record["selections"]],
                      labels=[(pooled(seed), *row[1:]) for row in record["labels"]])
        store.import_run(record)
    _add_final_rows(store, [(plain(s), 0.9, 0.6, 0.5) for s in range(3)]
                    + [(pooled(s), 0.9, 0.7 + 0.01 * s, 0.6 + 0.02 * s) for s in range(3)], "autoattack")
    text = write_report(copy, tmp_path / "rep", entropies=False).read_text()
    section = _section(text, "### Final models under AutoAttack")
    row = _row(section, "pgd+self-training", "pgd", "random")
    assert row[3:6] == ["3", "+0.110", "3 / 0"]  # PGD: 0.70, 0.71, 0.72 against 0.60
    assert row[8:10] == ["+0.120", "3 / 0"]  # AutoAttack: 0.60, 0.62, 0.64 against 0.50
