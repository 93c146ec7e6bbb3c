"""Reports: numbers equal the store's, figures are real PNGs, statistics on hand-made samples."""

from __future__ import annotations

import csv
import math

import pytest

from robustal.report import attack_text, checkpoint_labels, collect, summarize, write_report
from robustal.stats import (
    compare,
    compare_paired,
    mann_whitney,
    mean_std,
    normalized_auc,
    vargha_delaney_a12,
    wilcoxon_signed_rank,
)
from robustal.store import Store
from robustal.study import Study, run_study, save_study_copy


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
    assert "Robust accuracy under PGD-2 (ε = 0.2, step 0.25, random start)." in text  # 2.5·ε/2
    assert "### Runs at chance level" in text
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

    from robustal.picks import class_counts
    from robustal.report import RunResults
    from robustal.store import StageRecord

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

    from robustal.report import CURVES_CAPTION, plot_curves

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
