"""Throughput of standard vs PGD-k adversarial training steps of LeNet-5 on the CPU, measured side by side.

A PGD-k step costs k attack passes (forward + input-gradient backward) plus one training step, so the ideal is
k + 1 standard steps. Prints samples/s for each and the ratio PGD-k step time / ((k + 1) × standard step time);
robustal's target is ≤ 1.5.

    python benchmarks/adversarial_training.py [--steps 10] [--batch-size 128] [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from robustal.engine.training import TrainConfig
from robustal.models import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps k")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    ap.add_argument("--iters", type=int, default=20, help="training steps per round and mode")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = create_model("lenet5")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 1, 32, 32, generator=gen)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen)
    attack = TrainConfig(mode="pgd", epsilon=0.3, attack_steps=args.steps).train_attack()

    def step(adversarial: bool) -> None:  # exactly what robustal.engine.training.fit does per batch
        xb = attack.run(model, x, y, generator=gen) if adversarial else x
        loss = F.cross_entropy(model(xb), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(adversarial: bool) -> float:
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step(adversarial)
        return (time.perf_counter() - t0) / args.iters

    model.train()
    for adversarial in (False, True):  # warm-up
        step(adversarial)
    standard, pgd = [], []
    for _ in range(args.rounds):
        standard.append(timed(False))
        pgd.append(timed(True))
    t_std, t_pgd = statistics.median(standard), statistics.median(pgd)
    ratio = t_pgd / ((args.steps + 1) * t_std)
    print(f"LeNet-5, batch {args.batch_size}, {args.threads} thread(s), torch {torch.__version__}, "
          f"median of {args.rounds} alternating rounds of {args.iters} steps")
    print(f"standard training: {args.batch_size / t_std:10.0f} samples/s ({1000 * t_std:.2f} ms/step)")
    print(f"PGD-{args.steps} training:  {args.batch_size / t_pgd:10.0f} samples/s ({1000 * t_pgd:.2f} ms/step)")
    print(f"ratio PGD-{args.steps} step / ((k+1) x standard step): {ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
