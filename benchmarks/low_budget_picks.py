"""What acquisition functions pick at the low budget: class balance and coverage of 100 picks after 100 random labels.

For each seed, LeNet-5 is trained with the robust-al-mnist study's PGD recipe on 100 random labels of the 8 000-image
MNIST pool (no validation split, to keep it short); then each function picks 100 more from the same model. Per
function, over the seeds: the rarest class among the 200 labels, the total-variation distance between their class
histogram and the pool's, and coverage -- the 1-nearest-neighbour accuracy of the 200 labeled images on the whole
pool in pixel space (model-free: higher = the labels represent the pool better). It measures the picks, not the
robustness of a model trained on them (that is the study's job).

    .venv/bin/python benchmarks/low_budget_picks.py --seeds 0 1 2
    .venv/bin/python benchmarks/low_budget_picks.py --functions random typiclust typiclust:embedding=features
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

from robustal.acquisition import SelectionContext, create_acquisition
from robustal.data.dataset import Split
from robustal.engine.training import TrainConfig, fit
from robustal.models import create_model

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from acquisition import DEFAULT_MNIST, load_mnist  # noqa: E402

#: The robust-al-mnist study's training recipe (studies/robust-al-mnist.toml).
RECIPE = TrainConfig(mode="pgd", epsilon=0.3, epochs=10, batch_size=128, min_steps=100, optimizer="adam", lr=1e-3,
                     attack_steps=10, epsilon_warmup=2)


def parse_function(spec: str) -> tuple[str, str, dict]:
    """``name`` or ``name:key=value,key=value`` → (label, name, options)."""
    name, _, opts = spec.partition(":")
    options = {}
    for pair in filter(None, opts.split(",")):
        key, _, value = pair.partition("=")
        options[key] = int(value) if value.isdigit() else value
    return spec, name, options


def one_nn_accuracy(x: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor, chunk: int = 2048) -> float:
    """Accuracy on the whole pool of the 1-nearest-neighbour classifier (pixel L2) of the labeled images."""
    ref = x[labeled].flatten(1).float()
    ref_sq = (ref * ref).sum(1)
    correct = 0
    for s in range(0, len(x), chunk):
        a = x[s:s + chunk].flatten(1).float()
        d2 = (a * a).sum(1, keepdim=True) - 2 * a @ ref.T + ref_sq
        correct += int((y[labeled][d2.argmin(1)] == y[s:s + chunk]).sum())
    return correct / len(x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--functions", nargs="+",
                        default=["random", "dre", "typiclust", "typiclust:embedding=features", "badge", "dre-balanced",
                                 "robust-boundary"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    functions = [parse_function(f) for f in args.functions]

    images, labels = load_mnist(DEFAULT_MNIST)
    pool_x, pool_y = images[:8000], labels[:8000]
    pool_share = torch.bincount(pool_y, minlength=10).double() / len(pool_y)
    rows: dict[str, list[tuple[int, float, float]]] = {label: [] for label, _, _ in functions}
    for seed in args.seeds:
        initial = torch.randperm(len(pool_x), generator=torch.Generator().manual_seed(seed))[:100].sort().values
        torch.manual_seed(seed)
        model = create_model("lenet5", num_classes=10, in_channels=1, image_size=32)
        fit(model, Split(pool_x[initial], pool_y[initial]), None, RECIPE, seed=seed)
        model.eval()
        predicted = SelectionContext(model, pool_x, initial, torch.Generator()).predictions().probs.argmax(1)
        print(f"seed {seed}: the 100-label model predicts {len(predicted.unique())} classes", file=sys.stderr)
        for label, name, options in functions:
            ctx = SelectionContext(model, pool_x, initial, torch.Generator().manual_seed(seed), epsilon=0.3)
            picks = create_acquisition(name, **options).select(ctx, 100).indices
            labeled = torch.cat([initial, picks])
            counts = torch.bincount(pool_y[labeled], minlength=10)
            tv = 0.5 * float((counts.double() / len(labeled) - pool_share).abs().sum())
            rows[label].append((int(counts.min()), tv, one_nn_accuracy(pool_x, pool_y, labeled)))
            print(f"  {label}: {counts.tolist()}", file=sys.stderr, flush=True)

    print(f"MNIST pool of 8 000, LeNet-5 PGD-trained on 100 random labels, 100 picks; seeds {args.seeds}; "
          f"mean (min–max) over seeds.\n")
    print("| function | rarest class of 200 | class TV distance to the pool | 1-NN pixel accuracy on the pool |")
    print("|---|---:|---:|---:|")
    for label, values in rows.items():
        cells = []
        for i, fmt in ((0, "{:.1f} ({:.0f}–{:.0f})"), (1, "{:.3f} ({:.3f}–{:.3f})"), (2, "{:.3f} ({:.3f}–{:.3f})")):
            column = [v[i] for v in values]
            cells.append(fmt.format(statistics.mean(column), min(column), max(column)))
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
