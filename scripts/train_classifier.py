#!/usr/bin/env python
"""Retrain the digit classifier behind `minidiffusion evaluate --features classifier` (fixed seed, ~1 min on CPU).

    python scripts/train_classifier.py                          # MNIST -> src/minidiffusion/weights/
    python scripts/train_classifier.py --dataset fashion-mnist  # needs the Fashion-MNIST files
"""

import argparse
import logging
import sys

from minidiffusion.errors import UserError
from minidiffusion.features.classifier import train_classifier, weights_path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    p.add_argument("--root", default="", help="data folder (default: the dataset's usual place)")
    p.add_argument("--out", default=None, help="default: the package's weights/<dataset>_classifier.safetensors")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        meta = train_classifier(args.dataset, args.out, root=args.root, epochs=args.epochs, seed=args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out or weights_path(args.dataset)}: test accuracy {meta['test_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
