"""Class-conditional MNIST, scored: how often a sample is the digit asked for, and at what cost in quality and variety.

    python bench/cond.py runs/cond                 # the run's own sampling settings
    python bench/cond.py runs/cond --table         # classifier-free guidance, autoguidance and both, w = 0 .. 4,
                                                   # guided everywhere and on the run's noise interval
    python bench/cond.py runs/cond --smoke         # 20 samples, two settings

Each scoring draws ``--n`` class-balanced samples (``--n``/10 of each digit, image k from seed 123's k-th generator),
scored by the shipped digit classifier: the **requested-class accuracy** (top class = the digit asked for, with
probability > 0.9), the confident fraction, classifier FID against the test split, the entropy of the predicted-class
histogram (log2 10 = 3.32 bits for a balanced set), and the **within-class diversity**: the mean pairwise distance of
the classifier's features between samples of one class, averaged over the classes (the test digits' own is printed
for comparison), which falls when guidance collapses a class onto a few drawings. One JSON line per scoring goes to
``--results``; ``--samples DIR`` keeps each scoring's images with their ``labels``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from common import append_result, command_line, machine  # noqa: E402
from frontier import SAMPLE_SEED, Scorer, counted_sample  # noqa: E402

import minidiffusion  # noqa: E402
from minidiffusion.evaluate import extract, requested_class_summary  # noqa: E402

WEIGHTS = (0.0, 1.0, 1.5, 2.0, 3.0, 4.0)


def settings(model: minidiffusion.Model, table: bool) -> list[tuple[str, dict]]:
    """(name, [sample] keys) of each scoring: the run's own, or the table of the three guidances."""
    sc = model.config.sample
    if not table:
        return [("as the run samples", {})]
    interval = list(sc.cfg_interval) or [0.33, 3.9]
    rows = []
    for where, span in (("everywhere", []), (f"σ in [{interval[0]:g}, {interval[1]:g}]", interval)):
        for w in WEIGHTS:
            rows.append((f"cfg w={w:g} {where}", {"cfg_weight": w, "cfg_interval": span, "guidance": 1.0}))
        if model.guide is not None:
            for w in WEIGHTS[2:]:
                rows.append((f"auto w={w:g} {where}", {"cfg_weight": 1.0, "guidance": w, "guide_interval": span}))
                rows.append((f"both w={w:g} {where}", {"cfg_weight": w, "cfg_interval": span, "guidance": w,
                                                       "guide_interval": span}))
    return rows


def test_diversity(scorer: Scorer) -> float:
    """The within-class diversity of 100 real test digits of each class: what a faithful model would show."""
    from minidiffusion.config import DataConfig
    from minidiffusion.data import load_dataset

    data = load_dataset(DataConfig(name="mnist"), "test")
    picks = np.concatenate([np.flatnonzero(data.labels.numpy() == k)[:100] for k in range(10)])
    features, logits = extract(scorer.extractor, data.tensor[picks])
    return requested_class_summary(features, logits, data.labels.numpy()[picks])["diversity"]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a class-conditional run directory or checkpoint")
    parser.add_argument("--table", action="store_true", help="the guidance table instead of the run's own setting")
    parser.add_argument("--n", type=int, default=1000, help="samples per scoring (a multiple of the classes)")
    parser.add_argument("--samples", default=None, help="keep each scoring's images here (cond-*.npz, with labels)")
    parser.add_argument("--results", default=None, help="append one JSON line per scoring here")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED, help="sampling seed (default 123)")
    parser.add_argument("--cfg", type=float, default=None,
                        help="score only this classifier-free guidance weight (with the run's other settings)")
    parser.add_argument("--smoke", action="store_true", help="20 samples, the first two settings")
    args = parser.parse_args(argv)
    model = minidiffusion.load(args.run)
    if not model.classes:
        raise SystemExit(f"{args.run}: not a class-conditional run (train with data.conditional=true)")
    rows = settings(model, args.table)
    if args.cfg is not None:
        rows = [(f"cfg w={args.cfg:g} as the run guides", {"cfg_weight": args.cfg})]
    if args.smoke:
        args.n, rows = 2 * len(model.classes), rows[:2]
    scorer = Scorer()
    real = test_diversity(scorer)
    labels = model.labels(args.n).numpy()
    records = []
    print(f"{'setting':34} {'NFE':>5} {'requested':>9} {'confident':>9} {'FID':>7} {'H bits':>6} {'diversity':>9}"
          f"   (test digits' diversity {real:.2f})")
    for name, options in rows:
        started = time.perf_counter()
        images, nfe = counted_sample(model, args.n, seed=args.seed, **options)
        seconds = time.perf_counter() - started
        score = scorer(images)
        features, logits = extract(scorer.extractor, images)
        asked = requested_class_summary(features, logits, labels)
        record = {"name": "conditional", "run": str(args.run), "setting": name, "options": options, "n": args.n,
                  "seed": args.seed, "sampler": model.config.sample.sampler, "steps": model.config.sample.steps,
                  "nfe": round(nfe, 2), "requested_accuracy": asked["requested_accuracy"],
                  "diversity": asked["diversity"], "test_diversity": real, **score, "per_class": asked["per_class"],
                  "train_steps": model.checkpoint.step, "sample_s": round(seconds, 1), "machine": machine("cpu"),
                  "command": command_line(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        records.append(record)
        print(f"{name:34} {nfe:5.1f} {asked['requested_accuracy']:9.3f} {score['confident']:9.3f} "
              f"{score['fid_classifier']:7.2f} {score['entropy_bits']:6.3f} {asked['diversity']:9.2f}", flush=True)
        if args.results:
            append_result(record, Path(args.results))
        if args.samples:
            tag = "".join(c if c.isalnum() or c in ".-" else "_" for c in name.replace("=", ""))
            path = Path(args.samples) / f"cond-{tag}{'' if args.seed == SAMPLE_SEED else f'-seed{args.seed}'}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, images=images.permute(0, 2, 3, 1).numpy(), labels=labels.astype(np.uint8))
    print(json.dumps({"best_requested": max(records, key=lambda r: r["requested_accuracy"])["setting"]}))
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
