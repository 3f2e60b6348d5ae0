#!/usr/bin/env python
"""A picture of classifier-free guidance at work: one row per weight w, one image per class, the same noise in every
column, drawn from a class-conditional run by the library's own sampler.

    python scripts/cfg_sweep.py runs/mnist-cond --weights 0,1,1.5,2.5,4 --out runs/cfg_sweep.png
"""

import argparse
import sys

import torch

import minidiffusion
from minidiffusion.errors import UserError
from minidiffusion.images import make_class_grid, save_png


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a class-conditional run directory or checkpoint")
    p.add_argument("--weights", default="0,1,1.5,2.5,4", help="classifier-free guidance weights, one row each")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/cfg_sweep.png")
    args = p.parse_args(argv)
    try:
        model = minidiffusion.load(args.run)
        if not model.classes:
            raise UserError(f"{args.run}: not a class-conditional run (train with data.conditional=true)")
        weights = [float(w) for w in args.weights.split(",")]
        n = len(model.classes)
        rows = [model.sample(n, seed=args.seed, cfg_weight=w) for w in weights]  # image k: class k, seed k, any w
        labels = torch.arange(len(weights)).repeat_interleave(n)
        save_png(make_class_grid(torch.cat(rows), labels, [f"w = {w:g}" for w in weights]), args.out)
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: rows w = {args.weights}, columns {', '.join(model.classes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
