"""Would the all-label references gain from longer training? Train one of a study's all-label runs for longer.

The issue asks that the all-label baselines be "trained as long as it helps" and that we show more would not help.
This re-runs one all-label run of the study file exactly (same spec, seed, data order and validation seeds) but for
``--epochs`` epochs, validating every epoch, and reports:

* every epoch's validation clean and robust accuracy (the score the run keeps its epoch by);
* the epoch the study's setting would keep (best of the first N epochs, N the study's epochs) and the one the longer
  run keeps, each with its test clean and robust accuracy under the study's evaluation (PGD-50 for ``pgd``).

The first N epochs are the study's run itself (training and validation are seeded per epoch), so the first figure
must match the study's stored run; the script says whether it does when given the study's output folder.

    python scripts/reference_plateau.py studies/paper-mnist.toml --training pgd --seed 0 --epochs 60 \
        --store runs/paper-mnist --out runs/reference-plateau-pgd-s0.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="the study file (TOML) holding the all-label grid")
    parser.add_argument("--training", default="pgd", choices=["standard", "pgd", "trades"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--acquisition", default="all-labels",
                        help="the reference's name in the study (default: all-labels; paper-mnist also has "
                             "all-labels-60ep)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the longer run (default: 60)")
    parser.add_argument("--store", help="the study's output folder, to check the first epochs against its run")
    parser.add_argument("--out", required=True, help="JSON lines: one per epoch, then a summary line")
    args = parser.parse_args(argv)

    import robustal.engine.training as training_module
    from robustal._runtime import derive_seed
    from robustal.engine.evaluation import evaluate
    from robustal.errors import RobustalError
    from robustal.loop.experiment import model_factory, resolve, run_experiment
    from robustal.reports.results import fit_steps
    from robustal.studies.study import Study

    try:
        study = Study.load(args.study)
    except RobustalError as e:
        sys.exit(f"error: {e}")
    wanted = f"-{args.training}-{args.acquisition}-s{args.seed}"
    tasks = [t for t in study.tasks() if t.name.endswith(wanted)]
    if len(tasks) != 1:
        sys.exit(f"error: {args.study} has {len(tasks)} runs ending in {wanted!r}; expected exactly one all-label run "
                 "for this --training and --seed.")
    task = tasks[0]
    if task.spec.loop.initial != task.spec.loop.budget:
        sys.exit(f"error: {task.name} is not an all-label run (one stage with initial = budget labels); pick the "
                 "reference with --acquisition.")
    study_epochs = task.spec.loop.train.epochs
    if args.epochs <= study_epochs:
        sys.exit(f"error: --epochs {args.epochs} must exceed the study's {study_epochs} epochs.")
    if (task.spec.loop.train.validate_last or study_epochs) < study_epochs:
        sys.exit("error: the study validates only the last epochs of its all-label runs; the first epochs of a longer "
                 "run would then not be the study's run.")
    longer = replace(task.spec.loop.train, epochs=args.epochs, validate_last=args.epochs)
    labels = task.spec.loop.initial
    per_epoch = [fit_steps(labels, cfg.to_dict()) // cfg.epochs for cfg in (task.spec.loop.train, longer)]
    if per_epoch[0] != per_epoch[1]:
        sys.exit(f"error: min_steps = {longer.min_steps} makes an epoch of the study's run {per_epoch[0]} batches and "
                 f"one of the longer run {per_epoch[1]}, so the longer run would not start as the study's run; set "
                 "min_steps = 0 in the study's all-label grid.")
    spec = replace(task.spec, loop=replace(task.spec.loop, train=longer))
    dataset = spec.load_data()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("")
    early = {"key": (float("-inf"), float("-inf")), "epoch": 0, "state": None}
    real_evaluate = training_module.evaluate
    epochs: list[dict] = []

    def validate(model, val, attack, *, device, seed):
        result = real_evaluate(model, val, attack, device=device, seed=seed)
        epoch = len(epochs) + 1
        row = {"epoch": epoch, "val_clean": result.clean, "val_robust": result.robust}
        epochs.append(row)
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        score = result.robust if attack is not None else result.clean
        print(f"epoch {epoch}: validation clean {result.clean:.3f}, score {score:.3f}", flush=True)
        if epoch <= study_epochs and (score, result.clean) >= early["key"]:  # fit's rule: ties go to the later epoch
            early.update(key=(score, result.clean), epoch=epoch, state=copy.deepcopy(model.state_dict()))
        return result

    training_module.evaluate = validate
    try:
        result = run_experiment(spec, None, dataset=dataset, name=task.name)
    finally:
        training_module.evaluate = real_evaluate
    final = result.stages[-1]
    model_name, loop_cfg = resolve(spec, dataset)
    model = model_factory(model_name, dataset)()
    model.load_state_dict(early["state"])
    test = dataset.splits().test
    ev = evaluate(model, test, loop_cfg.eval_attack, seed=derive_seed(spec.loop.seed, "eval", 0))
    summary = {"run": task.name, "study_epochs": study_epochs, "epochs": args.epochs,
               "kept_within_study_epochs": early["epoch"], "score_within": early["key"][0],
               "test_clean_within": ev.clean, "test_robust_within": ev.robust,
               "kept": final.best_epoch, "score": final.val_score,
               "test_clean": final.clean, "test_robust": final.robust}
    if args.store:
        with sqlite3.connect(Path(args.store) / "results.db") as db:
            row = db.execute("select best_epoch, val_score, clean, robust from stages where run = ? and stage = 0",
                             (task.name,)).fetchone()
        if row is not None:
            summary["stored"] = dict(zip(["best_epoch", "val_score", "clean", "robust"], row, strict=True))
            summary["reproduces_stored"] = (row[0] == early["epoch"] and abs(row[1] - early["key"][0]) < 1e-9
                                            and abs(row[3] - ev.robust) < 1e-9)
    with out.open("a") as f:
        f.write(json.dumps(summary) + "\n")
    print(f"{task.name}: best of the first {study_epochs} epochs = epoch {early['epoch']} (validation "
          f"{early['key'][0]:.3f}; test clean {ev.clean:.3f}, robust {ev.robust:.3f}); best of {args.epochs} = epoch "
          f"{final.best_epoch} (validation {final.val_score:.3f}; test clean {final.clean:.3f}, robust "
          f"{final.robust:.3f})")
    if "reproduces_stored" in summary:
        print(f"the first {study_epochs} epochs reproduce the study's stored run: {summary['reproduces_stored']}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # one core per process, as the study's workers
    raise SystemExit(main())
