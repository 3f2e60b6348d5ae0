"""Training-step speed of the `simple` presets against the `ddpm` presets for the same dataset (CPU, fp32).

    python bench/variant_ratio.py [--batch 32] [--rounds 5]
    python bench/variant_ratio.py --smoke        # seconds: the same code path at batch 2, one round

Each round times one training step (forward, backward, AdamW) of each preset's network, taking turns; the
median per-round ratio is printed. The issue asks for simple >= 1.8x ddpm (the original project reported ~2x).
"""

import argparse
import statistics
import sys
import time

import torch

from minidiffusion.config import load_config
from minidiffusion.data import image_shape
from minidiffusion.models.unet import build_model, count_parameters


def step_time(net, opt, x, t) -> float:
    start = time.perf_counter()
    net(x, t).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", default="mnist:mnist-simple,cifar10:cifar10-simple")
    parser.add_argument("--smoke", action="store_true", help="batch 2, one round, the mnist pair only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.rounds, args.pairs = 2, 1, "mnist:mnist-simple"
    medians = []
    for pair in args.pairs.split(","):
        names = pair.split(":")
        nets = []
        for name in names:
            cfg = load_config(name)
            channels, size = image_shape(cfg.data)
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
        medians.append(statistics.median(ratios))
        print(f"{names[1]} / {names[0]} speed: {medians[-1]:.2f}x (median of {args.rounds} rounds)")
    return medians


if __name__ == "__main__":
    main(sys.argv[1:])
