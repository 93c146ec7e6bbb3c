"""What AutoAttack costs on a stored model: wall and CPU seconds of ``robustal evaluate --attack autoattack`` on the
first N test images, for several N, in one process with a given number of torch threads.

A study's final attack (``[final_attack]``) runs one attack per worker process on one thread, so CPU seconds per
model are its cost on a loaded machine; the wall seconds are those of one attack on this many threads.

    .venv/bin/python benchmarks/autoattack_cost.py runs/pool-mnist --run mnist-8k-lenet5-pgd-random-s0 --n 200 1000
    .venv/bin/python benchmarks/autoattack_cost.py runs/pool-mnist --run mnist-8k-lenet5-pgd-random-s0 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time

import torch

from robustal.cli import main as robustal


def measure(folder: str, run: str, n: int) -> dict:
    """One ``robustal evaluate`` under AutoAttack: its JSON result plus wall and CPU seconds."""
    out = io.StringIO()
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(out):
        code = robustal(["evaluate", folder, "--run", run, "--attack", "autoattack", "--n", str(n), "--json",
                         "--no-progress"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if code != 0:
        raise SystemExit(f"robustal evaluate failed (exit {code}) on run {run!r} of {folder}")
    return {**json.loads(out.getvalue()), "wall": wall, "cpu": cpu}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="a results folder (run or study)")
    ap.add_argument("--run", required=True, help="the run whose final model is attacked")
    ap.add_argument("--n", type=int, nargs="+", default=[200, 1000], help="test images (default: 200 1000)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"AutoAttack (standard) on {args.run}, {args.threads} torch thread(s)\n")
    print("| test images | clean | AutoAttack robust | wall s | CPU s | CPU s per image |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        r = measure(args.folder, args.run, n)
        print(f"| {n} | {r['clean']:.3f} | {r['robust']:.3f} | {r['wall']:.1f} | {r['cpu']:.1f} | "
              f"{r['cpu'] / n:.3f} |", flush=True)


if __name__ == "__main__":
    main()
