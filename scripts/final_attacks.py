"""The final models of a study's runs under a stronger attack: AutoAttack beside the paper's PGD-50.

For every finished run of ``DIR`` whose training mode and acquisition function are selected, the run's final model
(its last stored checkpoint, loaded with ``weights_only=True``) is evaluated on the first ``--n`` test images: clean
accuracy, robust accuracy under the run's own evaluation attack (PGD-50, step 0.01, random start, each image judged
by the worst of its iterates), and under AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square; Croce & Hein
2020, through pyautoattack). Rows go to ``DIR/final-attacks.csv`` (run, n, clean, pgd, pgd_last, autoattack, seconds),
rewritten atomically after each run, so an interrupted evaluation resumes; ``robustal report DIR`` reads the file.
``pgd_last`` is the same PGD-50 judged on its last iterate only (the paper's and robustal 0.2's rule), to show what
the any-iterate rule changes.

    python scripts/final_attacks.py runs/paper-mnist --training pgd trades \\
        --acquisitions random dre badge typiclust dre-balanced robust-boundary --n 200
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

COLUMNS = ("run", "n", "clean", "pgd", "pgd_last", "autoattack", "seconds")


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    from robustal.outputs import atomic_write_bytes

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def evaluate_run(root: Path, run, n: int, seed: int) -> dict:
    """Clean, PGD (the run's evaluation attack) and AutoAttack accuracy of the run's final model on ``n`` images."""
    from robustal.attacks import AttackConfig
    from robustal.checkpoint import trusted_model_name
    from robustal.data import load_dataset
    from robustal.evaluation import evaluate
    from robustal.experiment import model_factory
    from robustal.models.memory_format import apply_memory_format
    from robustal.store import Store

    t0 = time.perf_counter()
    dataset = load_dataset(run.config["dataset"])
    model = model_factory(trusted_model_name(run.model, None, f"Run {run.name!r}"), dataset)()
    model.load_state_dict(Store(root, create=False).load_checkpoint(run.name, run.final.stage)["model"])
    train = run.config["loop"]["train"]
    apply_memory_format(model, "cpu", train.get("memory_format", "contiguous"))
    test = dataset.splits().test.subset(torch.arange(n))
    pgd = AttackConfig(**run.config["loop"]["eval_attack"])
    res_pgd = evaluate(model, test, replace(pgd, rule=run.eval_rule), seed=seed)
    res_last = evaluate(model, test, replace(pgd, rule="last-iterate"), seed=seed)
    res_aa = evaluate(model, test, AttackConfig("autoattack", epsilon=pgd.epsilon), seed=seed)
    return {"run": run.name, "n": n, "clean": res_pgd.clean, "pgd": res_pgd.robust, "pgd_last": res_last.robust,
            "autoattack": res_aa.robust, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="a study's results folder")
    ap.add_argument("--training", nargs="+", default=["pgd", "trades"])
    ap.add_argument("--acquisitions", nargs="+", default=None, help="default: every function")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: every seed")
    ap.add_argument("--n", type=int, default=200, help="the first N test images (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the attacks' random choices")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from robustal.results import collect

    out = args.dir / "final-attacks.csv"
    rows = read_rows(out)
    done = {r["run"] for r in rows if int(r["n"]) == args.n}
    runs = [r for r in collect(args.dir) if r.status == "finished" and r.training in args.training
            and (args.acquisitions is None or r.acquisition in args.acquisitions)
            and (args.seeds is None or r.seed in args.seeds) and r.name not in done]
    print(f"{len(runs)} final models to evaluate on {args.n} test images ({len(done)} done before)", file=sys.stderr)
    for i, run in enumerate(runs, 1):
        row = evaluate_run(args.dir, run, args.n, args.seed)
        rows = [r for r in rows if r["run"] != run.name] + [row]
        write_rows(out, rows)
        print(f"[{i}/{len(runs)}] {run.name}: clean {row['clean']:.3f}, PGD {row['pgd']:.3f}, "
              f"AutoAttack {row['autoattack']:.3f} ({row['seconds']} s)", file=sys.stderr, flush=True)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
