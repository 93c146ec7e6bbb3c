"""PGD-10 adversarial training throughput of robustal's ``fit`` against a minimal hand-written PyTorch loop doing the
same work, side by side in one run; and what a CIFAR-10-scale stage and ``studies/paper.toml`` cost.

Both sides train the same architecture on the same CIFAR-shaped uint8 data (random images: throughput does not
depend on their content) with Adam and PGD-10 (random start, step 2.5·ε/10, ε = 8/255), at each batch size and
precision asked for (bf16: autocast + channels-last memory on CUDA, as robustal does). Figures are samples per
second (best of ``--repeats``), and the ratio robustal / plain loop at the same precision (target ≥ 0.95), and
bf16 / fp32 (target ≥ 2 at batch 512 on an H100/H200).

The stage estimate times one CIFAR-10-scale stage piece by piece -- training on 10 000 labels for 10 epochs,
validation robust accuracy (PGD-10) on 5 000 images after every epoch, test PGD-50 on 5 000 images -- from measured
throughputs (the attacks timed on every image: an upper bound, since evaluation attacks only the images still
classified correctly), and sums such stages over every run of ``studies/paper.toml`` (each dataset's model,
its stages up to the budget, one run at a time) into GPU-hours.

    python benchmarks/gpu_training.py                          # on the GPU: the full table and the estimate
    python benchmarks/gpu_training.py --device cpu --quick     # a smoke test anywhere (small sizes, no targets)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import torch
import torch.nn.functional as F

from robustal.data.dataset import Split
from robustal.engine.training import TrainConfig, fit
from robustal.models import create_model

EPSILON = 8 / 255


def data(n: int, device: str, channels: int = 3, size: int = 32) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return Split(x, torch.randint(0, 10, (n,), generator=g))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(model, split: Split, batch: int, precision: str, device: str) -> None:
    """The minimal loop: uint8 → float on the device, PGD-10 from a random start, one Adam step per batch."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bf16 = precision == "bf16"
    channels_last = bf16 and device.startswith("cuda")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = (lambda: torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)) if bf16 \
        else contextlib.nullcontext
    x_all, y_all = split.x.to(device), split.y.to(device)
    step = 2.5 * EPSILON / 10
    model.train()
    for start in range(0, len(split), batch):
        x = x_all[start:start + batch].float().div_(255)
        y = y_all[start:start + batch]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with amp():
            adv = (x + torch.empty_like(x).uniform_(-EPSILON, EPSILON)).clamp_(0, 1)
            for _ in range(10):
                adv.requires_grad_(True)
                loss = F.cross_entropy(model(adv), y, reduction="sum")
                (g,) = torch.autograd.grad(loss, adv)
                adv = torch.min(torch.max(adv.detach() + step * g.sign(), x - EPSILON), x + EPSILON).clamp_(0, 1)
            loss = F.cross_entropy(model(adv).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def robustal_fit(model, split: Split, batch: int, precision: str, device: str) -> None:
    cfg = TrainConfig(mode="pgd", epochs=1, batch_size=batch, epsilon=EPSILON, epsilon_warmup=0, precision=precision)
    fit(model, split, None, cfg, device=device)


def throughput(kind: str, model_name: str, n: int, batch: int, precision: str, device: str, repeats: int) -> float:
    """Best-of-``repeats`` samples/s of one epoch over ``n`` samples (after one warm-up epoch)."""
    split = data(n, device)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=3, image_size=32).to(device)
    run = plain_loop if kind == "plain" else robustal_fit
    run(model, data(2 * batch, device), batch, precision, device)  # warm-up: kernels, allocator, autotuning
    best = 0.0
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run(model, split, batch, precision, device)
        sync(device)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def eval_throughput(model_name: str, n: int, steps: int, device: str, batch: int = 500) -> float:
    """Samples/s of the robust-accuracy attack (PGD-``steps``, fp32, eval mode) run on every one of ``n`` images:
    an upper bound, as evaluation attacks only the images still classified correctly."""
    from robustal.engine.attacks import AttackConfig
    from robustal.models.base import frozen

    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_channels=3, image_size=32).to(device)
    split = data(n, device)
    attack = AttackConfig("pgd", EPSILON, 2 / 255, steps)
    x_all, y_all = split.x.to(device).float() / 255, split.y.to(device)
    with frozen(model):
        attack.run(model, x_all[:64], y_all[:64])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            attack.run(model, x_all[start:start + batch], y_all[start:start + batch])
        sync(device)
    return n / (time.perf_counter() - t0)


def stage_seconds(train_sps: float, val_sps: float, test_sps: float, labels: int, epochs: int = 10,
                  val: int = 5000, test: int = 5000) -> float:
    return epochs * labels / train_sps + epochs * val / val_sps + test / test_sps


def study_hours(per_model: dict[str, tuple[float, float, float]]) -> tuple[float, list[str]]:
    """GPU-hours of studies/paper.toml from (train, val, test) samples/s per model, one run at a time."""
    from pathlib import Path

    from robustal.data.registry import default_model_for
    from robustal.studies.study import Study

    study = Study.load(Path(__file__).resolve().parents[1] / "studies" / "paper.toml")
    total, lines = 0.0, []
    for task in study.tasks():
        model = task.spec.model or default_model_for(task.spec.dataset)
        if model not in per_model:
            continue
        train_sps, val_sps, test_sps = per_model[model]
        sizes = task.spec.loop.stage_sizes()
        labels = [sum(sizes[:k + 1]) for k in range(len(sizes))]
        seconds = sum(stage_seconds(train_sps if task.spec.loop.train.mode != "standard" else 11 * train_sps,
                                    val_sps, test_sps, n, epochs=task.spec.loop.train.epochs) for n in labels)
        total += seconds
    lines.append(f"{len(study.tasks())} runs in studies/paper.toml")
    return total / 3600, lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batches", default="128,512")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--samples", type=int, default=4096, help="samples per timed epoch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cost-models", default="lenet5,vgg8,resnet18,preact-resnet18,vgg16,wide-resnet",
                   help="models whose throughput feeds the paper.toml estimate (each timed briefly)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script itself")
    args = p.parse_args()
    if args.quick:
        args.samples, args.repeats, args.batches, args.model, args.cost_models = 64, 1, "32", "small-cnn", ""
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    print(f"# PGD-10 training, {args.model}, CIFAR-shaped data, on {name} (torch {torch.__version__})\n")
    print("| batch | precision | robustal samples/s | plain loop samples/s | robustal / plain |")
    print("|---|---|---|---|---|")
    results = {}
    for batch in map(int, args.batches.split(",")):
        for precision in args.precisions.split(","):
            r = throughput("robustal", args.model, args.samples, batch, precision, args.device, args.repeats)
            q = throughput("plain", args.model, args.samples, batch, precision, args.device, args.repeats)
            results[batch, precision] = (r, q)
            print(f"| {batch} | {precision} | {r:,.0f} | {q:,.0f} | {r / q:.3f} |", flush=True)
    for batch in map(int, args.batches.split(",")):
        if (batch, "fp32") in results and (batch, "bf16") in results:
            r32, r16 = results[batch, "fp32"][0], results[batch, "bf16"][0]
            print(f"\nbatch {batch}: robustal bf16 / fp32 = {r16 / r32:.2f}")
    if not args.cost_models:
        return
    per_model = {}
    print("\n# Cost of studies/paper.toml (fp32 training at batch 128, one run at a time)\n")
    print("| model | train samples/s | validation (PGD-10) samples/s | test (PGD-50) samples/s | "
          "10 000-label stage (s) |")
    print("|---|---|---|---|---|")
    for model in args.cost_models.split(","):
        n = max(512, args.samples // 4)
        train_sps = throughput("robustal", model, n, 128, "fp32", args.device, 1)
        val_sps = eval_throughput(model, 1024, 10, args.device)
        test_sps = eval_throughput(model, 1024, 50, args.device)
        per_model[model] = (train_sps, val_sps, test_sps)
        print(f"| {model} | {train_sps:,.0f} | {val_sps:,.0f} | {test_sps:,.0f} | "
              f"{stage_seconds(train_sps, val_sps, test_sps, 10_000):,.0f} |", flush=True)
    hours, lines = study_hours(per_model)
    print(f"\n{lines[0]}: about {hours:,.0f} GPU-hours on {name} (one run at a time; standard-training runs "
          "counted at 11x the PGD throughput)")


if __name__ == "__main__":
    sys.exit(main())
