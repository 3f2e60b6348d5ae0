"""Quality against network evaluations per image: every sampler at a few step counts on one trained network.

    python bench/nfe.py --checkpoint runs/quick                        # heun/euler/dpmpp/ddim at 5/10/15/25 steps
    python bench/nfe.py --checkpoint runs/quick --samplers dpmpp --steps 8,12 --samples ""

Each scoring draws 1,000 samples with seed 123 from the checkpoint's EMA network, guided as its config guides
(sample.guidance, guide_interval, with the guide the run carries), and scores them as ``bench/frontier.py`` does
(``frontier.Scorer``: the confident fraction, classifier FID against the MNIST test split, class entropy). NFE is
counted as made (``frontier.counted_sample``: main and guide networks, by forward hooks), and the wall time of the
1,000 samples is measured on this machine. One JSON line per scoring goes to ``bench/results.jsonl`` (``name``
"nfe"); each scoring's images go to ``bench/samples/nfe-SAMPLER-STEPS.npz`` (uint8, key ``images``, N x H x W x C).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from common import append_result, command_line, load_average, machine  # noqa: E402
from frontier import SAMPLE_SEED, Scorer, counted_sample  # noqa: E402

import minidiffusion  # noqa: E402


def score_all(model: minidiffusion.Model, samplers: list[str], steps: list[int], n: int, samples: str,
              scorer: Scorer) -> list[dict]:
    sc, ckpt = model.config.sample, model.checkpoint
    records = []
    for sampler in samplers:
        for k in steps:
            started = time.perf_counter()
            images, nfe = counted_sample(model, n, sampler=sampler, steps=k)
            sample_s = time.perf_counter() - started
            score = scorer(images)
            if samples:
                path = Path(samples) / f"nfe-{sampler}-{k}.npz"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, images=images.permute(0, 2, 3, 1).numpy())
            record = {"name": "nfe", "checkpoint": str(ckpt.path), "train_steps": ckpt.step, "sampler": sampler,
                      "sampler_steps": k, "nfe": round(nfe, 2), "guidance": sc.guidance,
                      "guide_interval": list(sc.guide_interval), "n": n, "seed": SAMPLE_SEED, **score,
                      "sample_s": round(sample_s, 1), "machine": machine("cpu"), "torch": torch.__version__,
                      "threads": torch.get_num_threads(), "load_avg": load_average(), "command": command_line(),
                      "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            records.append(record)
            print(row(record), flush=True)
    return records


HEADER = ("| sampler | steps | NFE | confident | classifier FID | entropy (bits) | 1,000 samples (s) |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")


def row(r: dict) -> str:
    return (f"| {r['sampler']} | {r['sampler_steps']} | {r['nfe']:g} | {r['confident']:.3f} | "
            f"{r['fid_classifier']:.2f} | {r['entropy_bits']:.3f} | {r['sample_s']:.0f} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint (the quick preset's)")
    parser.add_argument("--samplers", default="heun,euler,dpmpp,ddim")
    parser.add_argument("--steps", default="5,10,15,25", help="sample.steps values, comma-separated")
    parser.add_argument("--n", type=int, default=1000, help="samples per scoring")
    parser.add_argument("--samples", default=str(BENCH / "samples"), help="where the .npz go ('' = nowhere)")
    parser.add_argument("--results", default=str(BENCH / "results.jsonl"))
    args = parser.parse_args(argv)
    model = minidiffusion.load(args.checkpoint)
    print(HEADER, flush=True)
    records = score_all(model, args.samplers.split(","), [int(k) for k in args.steps.split(",")], args.n,
                        args.samples, Scorer())
    for record in records:
        append_result(record, Path(args.results))
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
