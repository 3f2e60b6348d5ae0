"""Training-step speed of the `simple` presets against the `ddpm` presets for the same dataset (CPU, fp32).

    python bench/variant_ratio.py [--batch 32] [--rounds 5]

Each round times one training step (forward, backward, AdamW) of each preset's network, taking turns; the
median per-round ratio is printed. The issue asks for simple >= 1.8x ddpm (the original project reported ~2x).
"""

import argparse
import statistics
import time

import torch

from minidiffusion.cli import dataset_shape
from minidiffusion.config import load_config
from minidiffusion.models.unet import build_model, count_parameters


def step_time(net, opt, x, t) -> float:
    start = time.perf_counter()
    net(x, t).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", default="mnist:mnist-simple,cifar10:cifar10-simple")
    args = parser.parse_args()
    for pair in args.pairs.split(","):
        names = pair.split(":")
        nets = []
        for name in names:
            cfg = load_config(name)
            channels, size = dataset_shape(cfg)
            net = build_model(cfg.model, channels, size)
            x, t = torch.randn(args.batch, channels, size, size), torch.randint(0, 1000, (args.batch,))
            opt = torch.optim.AdamW(net.parameters())
            step_time(net, opt, x, t)  # warm-up
            nets.append((name, net, opt, x, t))
        ratios, times = [], {n[0]: [] for n in nets}
        for _ in range(args.rounds):
            pair_times = [step_time(net, opt, x, t) for _, net, opt, x, t in nets]
            for (name, *_), dt in zip(nets, pair_times):
                times[name].append(dt)
            ratios.append(pair_times[0] / pair_times[1])
        for name, net, *_ in nets:
            speed = args.batch / statistics.median(times[name])
            print(f"{name:16s} {count_parameters(net):>11,} params  {speed:8.1f} img/s")
        print(f"{names[1]} / {names[0]} speed: {statistics.median(ratios):.2f}x (median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
