"""Tuning the quickstart: train variants of the `quick` preset, score 1,000 samples each with the MNIST classifier.

    python bench/quick_sweep.py --device cuda --jobs 6 --out /tmp/sweep     # quality: train + sample + score
    python bench/quick_sweep.py --device cpu --speed                         # cost: CPU img/s of each network

Quality does not depend on where a run trains (fp32 either way), so a GPU scores many variants in minutes; the
CPU's images per second then say which of them fit the quickstart's time budget. Each variant is a list of
``--set`` overrides on the preset plus the samplers to score its checkpoint with. One JSON line per
(variant, sampler) goes to ``--results``; a table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

# name: (overrides on the quick preset, samplers "name:steps" to score the final EMA weights with)
PRESET = ["ddpm:100"]


def p2(width: int) -> list[str]:  # 2x2 patches: two levels at 14 and 7 px
    return ["model.patch_size=2", f"model.base_channels={width}", "model.channel_mults=[1,2]"]


def p4(width: int) -> list[str]:  # 4x4 patches: one level at 7 px
    return ["model.patch_size=4", f"model.base_channels={width}", "model.channel_mults=[1]"]


# Step counts fill the quickstart's training budget (about 8 minutes) at each network's measured CPU speed
# (2 cores, `--speed`): base 161 img/s, p2-32 366, p2-ddpm-32 188, p4-64 626, p4-96 398.
VARIANTS: dict[str, tuple[list[str], list[str]]] = {  # the most telling first: a sweep cut short still has them
    "base-1200": (["train.steps=1200"], ["ddpm:100", "ddpm:250", "dpmpp:20"]),
    "p2-32-2700": ([*p2(32), "train.steps=2700"], ["ddpm:100", "dpmpp:20"]),
    "p4-64-4500": ([*p4(64), "train.steps=4500"], ["ddpm:100", "dpmpp:20"]),
    "p4-96-3000": ([*p4(96), "train.steps=3000"], ["ddpm:100", "dpmpp:20"]),
    "p2-ddpm-32-1400": ([*p2(32), "model.variant=ddpm", "model.num_res_blocks=1", "model.attention_resolutions=[7]",
                         "train.steps=1400"], PRESET),
}
for family, steps in (("p2-32", 2700), ("p4-96", 3000)):
    arch = VARIANTS[f"{family}-{steps}"][0]
    VARIANTS |= {
        f"{family}-lr1e-3": ([*arch, "train.lr=1e-3"], PRESET),
        f"{family}-lr4e-3": ([*arch, "train.lr=4e-3"], PRESET),
        f"{family}-ema0.999": ([*arch, "train.ema_decay=0.999"], PRESET),
        f"{family}-v": ([*arch, "diffusion.prediction=v"], PRESET),
        f"{family}-snr0": ([*arch, "diffusion.min_snr_gamma=0"], PRESET),
        f"{family}-cosine": ([*arch, "diffusion.schedule=cosine"], PRESET),
        f"{family}-bs128": ([*arch, "train.batch_size=128", f"train.steps={steps // 2}"], PRESET),
    }
VARIANTS |= {
    "p4-128-1900": ([*p4(128), "train.steps=1900"], PRESET),  # 193 img/s
    "base-1500": ([], PRESET),  # the preset as it was: 1,500 steps, 10 minutes
    "p4-64-9000": ([*p4(64), "train.steps=9000"], PRESET),  # what twice the budget would buy
}
COMMON = ["train.checkpoint_every=0", "train.sample_every=0", "train.log_every=100"]


def config(name: str, device: str, extra: list[str]):
    from minidiffusion.config import load_config

    return load_config("quick", VARIANTS[name][0] + COMMON + [f"train.device={device}"] + extra)


def quality(name: str, device: str, out: str, n: int, extra: list[str], threads: int) -> list[dict]:
    """Train variant ``name``, then score ``n`` samples per sampler; one record per sampler."""
    import torch

    torch.set_num_threads(threads)
    import minidiffusion
    from minidiffusion.evaluate import classifier_score

    cfg = config(name, device, extra)
    run = Path(out) / name
    started = time.perf_counter()
    minidiffusion.train(cfg, run, progress=False)
    train_s = time.perf_counter() - started
    model = minidiffusion.load(run, device=device)
    records = []
    for spec in VARIANTS[name][1]:
        sampler, steps = spec.split(":")
        images = model.sample(n, sampler=sampler, steps=int(steps), seed=123, batch_size=1000)
        score = classifier_score(images, device=device)
        records.append({"variant": name, "sampler": spec, "confident": score["confident_fraction"],
                        "mean_confidence": score["mean_confidence"], "is": score["is_mean"],
                        "histogram": score["class_histogram"], "steps": cfg.train.steps,
                        "batch": cfg.train.batch_size, "params": sum(p.numel() for p in model.net.parameters()),
                        "train_s": round(train_s, 1), "device": device, "overrides": VARIANTS[name][0] + extra})
    return records


def speed(name: str, device: str, steps: int) -> dict:
    """Images per second of one training step of variant ``name``, taken as ``train_step.py`` takes it
    (``common.TrainStep``: loss, clip, AdamW, EMA; the variant's channels_last), median of 3 rounds."""
    import statistics

    import torch
    from common import Settings, TrainStep, random_batch

    from minidiffusion.models.unet import build_model

    cfg = config(name, device, [])
    torch.manual_seed(0)
    settings = Settings(device=device, channels_last=cfg.train.channels_last)
    step = TrainStep(build_model(cfg.model, 1, 28), cfg, settings)
    b = cfg.train.batch_size
    batch = random_batch(b, 1, 28, device, channels_last=settings.channels_last, objective=step.objective)
    for _ in range(3):
        step(*batch)
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(steps):
            step(*batch)
        rates.append(steps * b / (time.perf_counter() - started))
    return {"variant": name, "img_per_s": statistics.median(rates), "batch": b,
            "params": sum(p.numel() for p in step.model.parameters()), "threads": torch.get_num_threads(),
            "channels_last": settings.channels_last}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    parser.add_argument("--speed", action="store_true", help="measure training img/s instead of quality")
    parser.add_argument("--speed-steps", type=int, default=10, help="steps per timed round with --speed")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once (quality)")
    parser.add_argument("--n", type=int, default=1000, help="samples scored per variant and sampler")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every variant (e.g. train.steps=20)")
    parser.add_argument("--out", default="/tmp/quick-sweep", help="run directories go here")
    parser.add_argument("--results", default=None, help="append one JSON line per result here")
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v] or list(VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")

    records: list[dict] = []

    def keep(new: list[dict]) -> None:  # printed and written as they come: a run cut short keeps what it had
        records.extend(new)
        for r in new:
            print(json.dumps(r), flush=True)
            if args.results:
                with open(args.results, "a") as f:
                    f.write(json.dumps({**r, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    if args.speed:
        for name in names:
            keep([speed(name, args.device, args.speed_steps)])
    else:
        threads = max(1, (os.cpu_count() or 2) // args.jobs)
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(quality, name, args.device, args.out, args.n, args.set, threads): name
                       for name in names}
            for future in as_completed(futures):
                try:
                    keep(future.result())
                except Exception as e:  # one broken variant must not cost the others' results
                    print(f"{futures[future]}: failed: {e!r}", flush=True)
    print()
    if args.speed:
        print(f"{'variant':14} {'params':>9} {'img/s':>8}")
        for r in records:
            print(f"{r['variant']:14} {r['params']:9,} {r['img_per_s']:8.1f}")
    else:
        print(f"{'variant':14} {'sampler':9} {'steps':>6} {'params':>9} {'train s':>8} {'confident':>9} {'IS':>5}")
        for r in records:
            print(f"{r['variant']:14} {r['sampler']:9} {r['steps']:6} {r['params']:9,} {r['train_s']:8.1f} "
                  f"{r['confident']:9.3f} {r['is']:5.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main(sys.argv[1:])
