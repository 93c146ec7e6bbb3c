"""scripts/compare_runs.py: runs of two results folders are paired by seed (finished runs of the named prefix only),
under the run's own attack and every final attack both groups have."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustal.storage.schema import StageRecord
from robustal.storage.store import Store


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("compare_runs")


def _store(folder: Path, prefix: str, finals: dict[int, tuple[float, float | None]], status: str = "finished",
           steps: int = 50):
    """Runs ``prefix-sSEED`` with one stage (clean 0.9, robust as given, under PGD-``steps``) and an AutoAttack row
    where given."""
    store = Store(folder)
    config = {"loop": {"eval_attack": {"name": "pgd", "steps": steps}}}
    for seed, (robust, autoattack) in finals.items():
        name = f"{prefix}-s{seed}"
        store.start_run(name, config, seed, device="cpu")
        store.add_stage(name, StageRecord(stage=0, labeled=100, clean=0.9, robust=robust), torch.tensor([seed]), None)
        store.set_status(name, status)
        if autoattack is not None:
            store.add_final_attack({"run": name, "attack": "autoattack", "version": "standard", "n": 200, "seed": 0,
                                    "clean": 0.9, "pgd": robust, "robust": autoattack, "seconds": 1.0,
                                    "provenance": {}, "created": 0.0})
    return store


def test_runs_are_paired_by_seed_across_folders(script, tmp_path, capsys):
    _store(tmp_path / "a", "pool-random", {0: (0.70, 0.65), 1: (0.72, 0.66), 2: (0.69, 0.60), 5: (0.9, 0.9)})
    _store(tmp_path / "b", "pgd-random", {0: (0.60, 0.50), 1: (0.62, 0.55), 2: (0.70, 0.58), 3: (0.1, 0.1)})
    _store(tmp_path / "b", "pgd-random-extra", {0: (0.0, 0.0)})  # another prefix: never paired
    assert script.main([f"{tmp_path / 'a'}:pool-random", f"{tmp_path / 'b'}:pgd-random"]) == 0
    out = capsys.readouterr().out
    assert "paired seeds: 0, 1, 2" in out
    pgd = next(line for line in out.splitlines() if line.startswith("| PGD-50"))
    assert pgd.split("|")[2:6] == [" 0.703 ", " 0.640 ", " +0.063 ", " 2 / 1 "]
    autoattack = next(line for line in out.splitlines() if line.startswith("| autoattack (200 images)"))
    assert autoattack.split("|")[4:6] == [" +0.093 ", " 3 / 0 "]
    assert autoattack.split("|")[6].strip() == "0.250"  # 3 pairs: the least an exact test can give


def test_unfinished_runs_and_attacks_one_side_lacks_are_left_out(script, tmp_path, capsys):
    _store(tmp_path / "a", "x", {0: (0.7, None), 1: (0.7, None)})
    _store(tmp_path / "a", "x", {2: (0.1, None)}, status="interrupted")
    _store(tmp_path / "b", "y", {0: (0.6, 0.5), 1: (0.6, 0.5), 2: (0.6, 0.5)})
    assert script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y"]) == 0
    out = capsys.readouterr().out
    assert "paired seeds: 0, 1\n" in out and "autoattack" not in out.split("paired seeds")[1]


def test_bad_groups_say_what_to_give(script, tmp_path):
    with pytest.raises(SystemExit, match="not FOLDER:PREFIX"):
        script.main(["nocolon", "b:c"])
    with pytest.raises(SystemExit, match="holds no results.db"):
        script.main([f"{tmp_path}:x", f"{tmp_path}:y"])
    _store(tmp_path / "a", "x", {0: (0.7, None)})
    _store(tmp_path / "b", "y", {1: (0.6, None)})
    with pytest.raises(SystemExit, match="share no seed"):
        script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y"])
    with pytest.raises(SystemExit, match="no finished run named z-sSEED"):
        script.main([f"{tmp_path / 'a'}:z", f"{tmp_path / 'b'}:y"])


def test_a_stage_by_its_label_count_and_final_attacks_only_on_the_final_stage(script, tmp_path, capsys):
    b = _store(tmp_path / "b", "y", {0: (0.6, 0.5), 1: (0.62, 0.55), 2: (0.7, 0.6)})
    for seed, robust in ((0, 0.8), (1, 0.9)):  # seeds 0 and 1 go on to 300 labels; seed 2 ends at 100
        b.add_stage(f"y-s{seed}", StageRecord(stage=1, labeled=300, clean=0.95, robust=robust), torch.tensor([7]),
                    None)
    _store(tmp_path / "a", "x", {0: (0.7, 0.65), 1: (0.7, 0.6), 2: (0.7, 0.6)})
    assert script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y@100"]) == 0
    out = capsys.readouterr().out
    # at 100 labels: seeds 0 and 1's first stage (not their final one), seed 2's final stage with its AutoAttack row
    pgd = next(line for line in out.splitlines() if line.startswith("| PGD-50"))
    assert pgd.split("|")[3] == " 0.640 " and "at 100 labels (3 finished seeds" in out
    assert "autoattack" not in out.split("paired seeds")[1]  # seeds 0 and 1's AutoAttack is of their 300-label model
    assert script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y@300"]) == 0
    out = capsys.readouterr().out
    assert "note: y-s2 has no stage at 300 labels (its stages: 100); left out" in out
    assert "paired seeds: 0, 1\n" in out
    assert next(line for line in out.splitlines() if line.startswith("| autoattack")).split("|")[3] == " 0.525 "
    with pytest.raises(SystemExit, match="no finished run named y-sSEED at 500 labels"):
        script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y@500"])
    with pytest.raises(SystemExit, match="FOLDER:PREFIX@LABELS"):
        script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y@many"])


def test_a_report_folder_pairs_with_a_results_folder(script, tmp_path, capsys):
    """A committed report folder (stages.csv, attacks.csv) stands in for a results folder that is gone."""
    _store(tmp_path / "a", "x", {0: (0.70, 0.65), 1: (0.72, 0.66), 2: (0.69, 0.60)})
    report = tmp_path / "report"
    report.mkdir()
    header = "run,dataset,model,training,acquisition,seed,status,stage,labeled,clean,robust\n"
    rows = [f"y-s{seed},d,m,pgd,random,{seed},finished,{stage},{100 * (stage + 1)},0.9,{robust}\n"
            for seed, finals in ((0, (0.2, 0.60)), (1, (0.3, 0.62)), (2, (0.1, 0.70))) for stage, robust in
            enumerate(finals)]
    rows.append("y-s3,d,m,pgd,random,3,interrupted,0,100,0.9,0.99\n")  # unfinished: left out
    (report / "stages.csv").write_text(header + "".join(rows))
    (report / "attacks.csv").write_text("run,attack,version,n,clean,pgd,robust,seconds,machine\n"
                                        "y-s0,autoattack,standard,200,0.9,0.6,0.5,1.0,cpu\n"
                                        "y-s1,autoattack,standard,200,0.9,0.6,0.55,1.0,cpu\n"
                                        "y-s2,autoattack,standard,200,0.9,0.6,0.58,1.0,cpu\n")
    assert script.main([f"{tmp_path / 'a'}:x", f"{report}:y"]) == 0
    out = capsys.readouterr().out
    assert "paired seeds: 0, 1, 2\n" in out
    pgd = next(line for line in out.splitlines() if line.startswith("| PGD-50"))
    assert "B's from its stages.csv" in pgd and pgd.split("|")[3:6] == [" 0.640 ", " +0.063 ", " 2 / 1 "]
    autoattack = next(line for line in out.splitlines() if line.startswith("| autoattack (200 images)"))
    assert autoattack.split("|")[3:5] == [" 0.543 ", " +0.093 "]
    assert script.main([f"{tmp_path / 'a'}:x", f"{report}:y@100"]) == 0  # the first stages: no final attack
    out = capsys.readouterr().out.split("paired seeds")[1]
    assert "autoattack" not in out and "| 0.200 |" in out
    assert script.main([f"{report}:y", f"{report}:y@100"]) == 0  # two report folders: no attack named
    robust = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| robust"))
    assert "the evaluation attack of stages.csv" in robust and robust.split("|")[2:4] == [" 0.640 ", " 0.200 "]


def test_different_evaluation_attacks_are_not_paired(script, tmp_path, capsys):
    _store(tmp_path / "a", "x", {0: (0.7, None), 1: (0.7, None)})
    _store(tmp_path / "b", "y", {0: (0.6, None), 1: (0.6, None)}, steps=20)
    assert script.main([f"{tmp_path / 'a'}:x", f"{tmp_path / 'b'}:y"]) == 0
    out = capsys.readouterr().out
    assert "different attacks (PGD-50 (all test images), PGD-20 (all test images)); not paired" in out
    assert "| PGD" not in out and "| clean |" in out
