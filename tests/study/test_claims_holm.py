"""scripts/claims_holm.py: finals and areas are taken as the report takes them, runs are paired by seed, and each
family is Holm-adjusted as a whole."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from robustal.reports.stats import compare_paired, holm, normalized_auc

STAGE_FIELDS = ("run", "training", "acquisition", "seed", "status", "stage", "labeled", "robust")


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("claims_holm")


def _stages(training: str, acq: str, seed: int, robust: list[float], status: str = "finished") -> list[dict]:
    return [{"run": f"{training}-{acq}-s{seed}", "training": training, "acquisition": acq, "seed": str(seed),
             "status": status, "stage": str(i), "labeled": str(100 * (i + 1)), "robust": str(v)}
            for i, v in enumerate(robust)]


def _write(path: Path, fields, rows) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_final_is_the_last_stage_and_references_are_left_out(script):
    rows = [*_stages("pgd", "random", 0, [0.1, 0.3, 0.2]), *_stages("pgd", "dre", 0, [0.2, 0.25, 0.4]),
            *_stages("pgd", "all-labels", 0, [0.8]), *_stages("pgd", "dre", 1, [0.1, 0.2], status="running"),
            *_stages("trades", "dre", 2, [0.5, 0.6])]
    random.Random(0).shuffle(rows)  # the CSV's order must not decide which stage is final
    measures = script.run_measures(rows, "pgd")
    assert set(measures) == {"random", "dre"}
    assert measures["random"] == {0: (0.2, normalized_auc([100, 200, 300], [0.1, 0.3, 0.2]))}
    assert measures["dre"][0][0] == 0.4


def test_a_family_pairs_by_seed_and_is_adjusted_as_a_whole(script):
    base = {s: 0.5 for s in range(8)}
    up = {s: 0.5 + 0.01 * (s + 1) for s in range(8)}
    mixed = {s: 0.5 + (0.01 if s % 2 else -0.02) * (s + 1) for s in range(8)}
    short = {s: 0.6 + 0.01 * s for s in range(4, 10)}  # seeds 4-7 only in common with base
    rows = script.paired_family([("up", up, base), ("mixed", mixed, base), ("short", short, base)])
    common = [sorted(set(x) & set(base)) for x in (up, mixed, short)]
    expected = [compare_paired([x[s] for s in seeds], [base[s] for s in seeds])
                for x, seeds in zip((up, mixed, short), common, strict=True)]
    assert [r[1] for r in rows] == [8, 8, 4]
    assert [r[5] for r in rows] == [c.p for c in expected]
    assert [r[6] for r in rows] == holm([c.p for c in expected])
    assert rows[0][6] > rows[0][5]  # adjusted over three tests, not one


def test_prints_every_family_from_the_files(script, tmp_path, capsys):
    stages = []
    for seed in range(6):
        for acq, shift in (("random", 0.0), ("dre", 0.02), ("entropy", -0.05), ("badge", 0.01)):
            stages += _stages("pgd", acq, seed, [0.2, 0.4 + shift + 0.001 * seed * (acq == "dre")])
    trials = [{"metric": m, "size": str(n), "seed": str(s), "robust_after": str(0.4 + 0.01 * s + (m == "dre") * 0.01)}
              for m in ("random", "dre", "entropy") for n in (100, 500) for s in range(5)]
    legacy = [{"run": f"mnist-8k-lenet5-pgd-{a}-s{s}", "n": "200", "clean": "0.9", "pgd": "0.6",
               "autoattack": str(0.5 + 0.01 * s)} for a in ("random", "dre") for s in range(5)]
    stored = [{"run": f"mnist-8k-lenet5-pgd-entropy-s{s}", "attack": "autoattack", "robust": str(0.4 + 0.01 * s)}
              for s in range(5)]
    args = ["--stages", str(_write(tmp_path / "stages.csv", STAGE_FIELDS, stages)),
            "--earlier", str(_write(tmp_path / "earlier.csv", STAGE_FIELDS, stages)),
            "--retrain", str(_write(tmp_path / "retrain.csv", ("metric", "size", "seed", "robust_after"), trials)),
            "--attacks", str(_write(tmp_path / "final-attacks.csv", legacy[0], legacy)),
            str(_write(tmp_path / "attacks.csv", stored[0], stored))]
    assert script.main(args) == 0
    out = capsys.readouterr().out
    assert "| paper-mnist: dre − random | 6 |" in out and "| robust-al-mnist: dre − random | 6 |" in out
    assert out.count("Holm over the 3 functions (3 comparisons)") == 2  # final and AUC: dre, entropy, badge
    assert "Holm over the 2 comparisons" in out  # dre against random and entropy; badge is beyond the paper
    assert "aa-vs-random" in out and "Holm over the 2 functions attacked (2 comparisons)" in out
    assert "| entropy | 5 | -0.100000 | 0 / 5 |" in out  # entropy − random under AutoAttack, seed by seed
    assert "aa-dre-vs-paper" in out and out.count("Holm over the 2 comparisons") == 2
    assert "retrain-100" in out and "retrain-500" in out and out.count("Holm over the 2 metrics") == 2


def test_refuses_files_without_random_and_dre(script, tmp_path):
    path = _write(tmp_path / "stages.csv", STAGE_FIELDS, _stages("pgd", "random", 0, [0.1, 0.2]))
    with pytest.raises(SystemExit, match="no finished PGD runs of random and dre"):
        script.main(["--stages", str(path), "--earlier", str(path), "--retrain", str(tmp_path / "none.csv")])
    with pytest.raises(SystemExit, match="not found"):
        script.main(["--stages", str(tmp_path / "missing.csv")])


def test_autoattack_finals_read_both_files_and_refuse_two_figures_for_one_model(script, tmp_path):
    legacy = [{"run": "mnist-8k-lenet5-pgd-dre-s3", "n": "200", "clean": "0.9", "pgd": "0.6", "autoattack": "0.5"},
              {"run": "mnist-8k-lenet5-trades-dre-s3", "n": "200", "clean": "0.9", "pgd": "0.7", "autoattack": "0.6"},
              {"run": "mnist-8k-lenet5-pgd-random-s4", "n": "", "clean": "", "pgd": "", "autoattack": ""}]
    stored = [{"run": "mnist-8k-lenet5-pgd-least-confidence-s1", "attack": "autoattack", "robust": "0.4"},
              {"run": "mnist-8k-lenet5-pgd-least-confidence-s1", "attack": "autoattack-fast", "robust": "0.45"},
              {"run": "mnist-8k-lenet5-pgd+self-training-random-s0", "attack": "autoattack", "robust": "0.7"},
              {"run": "mnist-8k-lenet5-pgd-dre-s3", "attack": "autoattack", "robust": "0.5"}]  # the same figure
    paths = [_write(tmp_path / "final-attacks.csv", legacy[0], legacy), _write(tmp_path / "attacks.csv", stored[0],
                                                                               stored)]
    # TRADES, the pool's runs, the fast attack and rows not attacked yet are left out.
    assert script.autoattack_finals(paths) == {"dre": {3: 0.5}, "least-confidence": {1: 0.4}}
    stored[-1]["robust"] = "0.55"
    _write(paths[1], stored[0], stored)
    with pytest.raises(SystemExit, match="pgd-dre-s3 has AutoAttack 0.5 in .*final-attacks.csv and 0.55 in"):
        script.autoattack_finals(paths)
