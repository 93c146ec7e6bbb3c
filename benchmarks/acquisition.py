"""Wall time of every acquisition function, as a multiple of one inference pass over the pool.

LeNet-5, briefly trained on the labeled part of a pool of real MNIST test images (32×32), picks 100 and 1 000
samples from the unlabeled rest. One inference pass (``predict`` over the whole pool, best of 3) is measured in the
same run, and each function's time is given as a ratio to it, so the numbers carry over between machines.

    .venv/bin/python benchmarks/acquisition.py                  # all functions, Markdown table on stdout
    .venv/bin/python benchmarks/acquisition.py --functions egl dfal --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robustal.acquisition import SelectionContext, create_acquisition, list_acquisitions, predict
from robustal.data.dataset import Split
from robustal.data.readers import read_idx
from robustal.engine.training import TrainConfig, fit
from robustal.models import create_model

#: The real MNIST test set beside the repository (../shared/datasets/mnist), or $ROBUSTAL_TEST_MNIST as for the tests.
DEFAULT_MNIST = Path(os.environ.get("ROBUSTAL_TEST_MNIST",
                                    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"))
MC_PASSES = 10
NUM_CLASSES = 10
#: MNIST's L∞ budget, for robust-boundary's attack (the loop passes the training ε).
EPSILON = 0.3
#: robust-boundary's default PGD steps: each is a forward and a backward pass.
BOUNDARY_STEPS = 5


def load_mnist(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST test images as uint8 ``(N, 1, 32, 32)`` (28×28 padded by 2 pixels, as LeNet-5 expects) and labels."""
    images = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None]
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def targets(name: str, n: int) -> float | None:
    """The ratio to one inference pass each function should stay under (None: no target at this size)."""
    if name in ("bald", "entropy-dropout"):
        return 1.3 * MC_PASSES
    if name == "k-center":
        return 30.0 if n == 1000 else None
    if name == "dfal":
        return 50.0 if n == 1000 else None
    if name == "egl":
        return 3.0 * NUM_CLASSES
    if name == "badge":  # one pass with features, then k-means++ in the 840-dimensional gradient space
        return 3.0
    if name == "typiclust":  # pixel PCA (once per pool), k-means into labeled + n clusters (at most 500), typicality
        return 5.0
    if name == "robust-boundary":  # the prediction pass, then PGD-k and the final logits: ≤ 3 passes per step
        return 1.0 + 3.0 * (BOUNDARY_STEPS + 1)
    return 1.3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-dir", type=Path, default=DEFAULT_MNIST,
                        help="folder with t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    parser.add_argument("--pool", type=int, default=9000)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--picks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--functions", nargs="+", default=list_acquisitions(), choices=list_acquisitions())
    parser.add_argument("--epochs", type=int, default=10, help="standard training epochs on the labeled samples")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared 2-core machine 2 threads ran up to 10× slower)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="best of this many timings per function and size, as for the inference pass")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    images, labels = load_mnist(args.mnist_dir)
    pool_x, pool_y = images[:args.pool], labels[:args.pool]
    held_out = Split(images[args.pool:], labels[args.pool:])
    labeled = torch.randperm(args.pool, generator=torch.Generator().manual_seed(args.seed))[:args.labeled].sort().values

    torch.manual_seed(args.seed)
    model = create_model("lenet5", num_classes=NUM_CLASSES, in_channels=1, image_size=32)
    fit(model, Split(pool_x[labeled], pool_y[labeled]), None, TrainConfig(epochs=args.epochs), seed=args.seed)
    model.eval()
    accuracy = float("nan")
    if len(held_out):
        accuracy = (predict(model, held_out.x).probs.argmax(1) == held_out.y).float().mean().item()

    inference = min(_timed(lambda: predict(model, pool_x, batch_size=1024)) for _ in range(3))

    rows = []
    for name in args.functions:
        cells = []
        for n in args.picks:
            def run(name=name, n=n):
                ctx = SelectionContext(model, pool_x, labeled, torch.Generator().manual_seed(args.seed),
                                       epsilon=EPSILON)
                create_acquisition(name).select(ctx, n)
            seconds = min(_timed(run) for _ in range(args.repeat))
            ratio = seconds / inference
            target = targets(name, n)
            cells.append((seconds, ratio, target))
            print(f"{name} n={n}: {seconds:.3f} s = {ratio:.1f}× inference", file=sys.stderr, flush=True)
        rows.append((name, cells))

    print(f"LeNet-5, {args.epochs} epoch(s) on {args.labeled} labeled MNIST test images "
          f"(held-out accuracy {accuracy:.1%}); pool {args.pool} ({args.pool - args.labeled} unlabeled); "
          f"{args.threads} CPU thread(s), torch {torch.__version__}.")
    print(f"One inference pass over the {args.pool}-image pool: {inference * 1000:.0f} ms (best of 3).\n")
    header = "| function | " + " | ".join(f"pick {n} (s) | ×inference | target" for n in args.picks) + " |"
    print(header)
    print("|---|" + "---:|---:|---|" * len(args.picks))
    for name, cells in rows:
        parts = []
        for seconds, ratio, target in cells:
            mark = "–" if target is None else f"≤ {target:g} {'✓' if ratio <= target else '✗'}"
            parts.append(f"{seconds:.3f} | {ratio:.1f} | {mark}")
        print(f"| {name} | " + " | ".join(parts) + " |")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
