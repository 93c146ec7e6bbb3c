"""Channels-last vs contiguous memory, per registered model, side by side: the measurement behind each model's
``channels_last_on_cpu`` (robustal.models.memory_format).

For every registered architecture (at its usual input: 1×32×32 for LeNet-5, 1×8×8 for small-cnn, 3×32×32 for the
CIFAR/SVHN nets) it times, in alternating rounds on the same inputs and weights, a PGD step (forward + input-gradient
backward, the unit of adversarial training, validation and evaluation) and a training step (forward + parameter
backward + Adam), once with the model contiguous and once channels-last, and prints the medians, the speed-up, the
largest logit difference, and whether the model's registered choice agrees with the measurement (channels-last where
it is at least 1.1 times faster on both the PGD step and the training step).

    .venv/bin/python benchmarks/channels_last.py                    # all models, 1 thread
    .venv/bin/python benchmarks/channels_last.py --models lenet5 vgg8 --threads 2 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from robustal.models import create_model, list_models
from robustal.models.memory_format import apply_memory_format

#: (channels, size, batch) per model: its dataset's images, a batch that a 2-core CPU times in well under a second.
INPUTS = {"lenet5": (1, 32, 128), "small-cnn": (1, 8, 128), "vgg8": (3, 32, 64), "vgg16": (3, 32, 32),
          "resnet18": (3, 32, 32), "preact-resnet18": (3, 32, 32), "wide-resnet": (3, 32, 8)}
#: Speed-up, on both the PGD step and the training step, from which channels-last is worth choosing.
THRESHOLD = 1.1


def pgd_step(model, x, y) -> None:
    x = x.detach().requires_grad_(True)
    torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)


def train_step(model, opt, x, y) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps: int, device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def measure(name: str, device: torch.device, rounds: int, reps: int) -> dict:
    c, s, b = INPUTS.get(name, (3, 32, 32))
    torch.manual_seed(0)
    base = create_model(name, num_classes=10, in_channels=c, image_size=s).to(device)
    models = {}
    for fmt in ("contiguous", "channels-last"):
        m = copy.deepcopy(base)
        apply_memory_format(m, device, fmt)
        models[fmt] = m
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(b, c, s, s, generator=gen).to(device)
    y = torch.randint(0, 10, (b,), generator=gen).to(device)
    times = {(fmt, kind): [] for fmt in models for kind in ("pgd", "train")}
    opts = {fmt: torch.optim.Adam(m.parameters(), lr=1e-3) for fmt, m in models.items()}
    for fmt, m in models.items():  # warm-up (first calls allocate and pick kernels)
        m.eval()
        pgd_step(m, x, y)
        m.train()
        train_step(m, opts[fmt], x, y)
    for _ in range(rounds):
        for fmt, m in models.items():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
            times[fmt, "pgd"].append(timed(lambda m=m: pgd_step(m, x, y), reps, device))
            for p in m.parameters():
                p.requires_grad_(True)
            m.train()
            times[fmt, "train"].append(timed(lambda m=m, fmt=fmt: train_step(m, opts[fmt], x, y), reps, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    check = create_model(name, num_classes=10, in_channels=c, image_size=s).to(device).eval()
    cl = copy.deepcopy(check)
    apply_memory_format(cl, device, "channels-last")
    with torch.no_grad():
        diff = float((check(x) - cl(x)).abs().max())
    speedup = med["contiguous", "pgd"] / med["channels-last", "pgd"]
    registered = bool(getattr(base, "channels_last_on_cpu", False))
    return {"model": name, "batch": b, "pgd_contig": med["contiguous", "pgd"], "pgd_cl": med["channels-last", "pgd"],
            "pgd_speedup": speedup, "train_speedup": med["contiguous", "train"] / med["channels-last", "train"],
            "diff": diff, "registered": registered,
            "agrees": registered == (speedup >= THRESHOLD and med["contiguous", "train"] / med["channels-last", "train"]
                                     >= THRESHOLD)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    ap.add_argument("--reps", type=int, default=3, help="steps per round, format and kind")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"channels-last vs contiguous on {device} ({args.threads} thread(s)), PGD step = forward + input-gradient "
          f"backward, train step = forward + backward + Adam; medians of {args.rounds} alternating rounds\n")
    print("| model | batch | PGD step contiguous (ms) | PGD step channels-last (ms) | PGD speed-up | train speed-up | "
          "max logit diff | channels_last_on_cpu | agrees |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models or list_models():
        r = measure(name, device, args.rounds, args.reps)
        print(f"| {r['model']} | {r['batch']} | {1000 * r['pgd_contig']:.1f} | {1000 * r['pgd_cl']:.1f} | "
              f"{r['pgd_speedup']:.2f}x | {r['train_speedup']:.2f}x | {r['diff']:.1e} | {r['registered']} | "
              f"{'yes' if r['agrees'] else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
