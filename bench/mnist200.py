"""MNIST in a fixed number of seconds of training on one device: our recipe against diffusers', scored alike.

    python bench/mnist200.py --who ours --device cuda --best /tmp/best.json --samples bench/samples/gpu-200s-ours.npz
    python bench/mnist200.py --who diffusers --device cuda --samples bench/samples/gpu-200s-diffusers.npz
    python bench/mnist200.py --who ours --smoke          # seconds, on the CPU: the same code paths

Both train the `mnist` network (the DDPM paper's UNet at 64 wide, (1, 2, 2), 6.5M parameters) for ``--seconds`` of
wall-clock time (start-up and compilation included) at the same batch, learning rate, warm-up, clipping and EMA, with
the cosine schedule fitted to the time (``train.fit_time_limit``: the speed over the first tenth sets the length).

- ``ours``: the `mnist-flow` preset (flow matching, logit(t) ~ N(0.5, 1)) through ``minidiffusion.train`` on the
  fastest path ``bench/train_step.py --best`` measured on this machine (``--best``), sampled as the `quick` preset
  samples: Heun 25 steps, autoguidance w = 2 by the run's EMA after step 90 at σ in [0.33, 3.9].
- ``diffusers``: ``diffusers.UNet2DModel`` in the same layout (bench/common.py), eager and contiguous in bf16 autocast
  as its training example runs it, trained on DDPMScheduler's noising with the plain ε-MSE by the library's own loop
  parts (batches, draws, ``TrainStep``), sampled by ``DDPMScheduler``'s own 50-step loop.

Then ``--n`` samples (seed 123, image k from its own generator), scored by the shipped digit classifier: the
confident fraction (top class > 0.9), classifier FID against the test split, the entropy of the class histogram.
One JSON line goes to ``--results``; ``--samples`` keeps the images (uint8, key ``images``, N x H x W x C).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

import common  # noqa: E402
from frontier import SAMPLE_SEED, Scorer, counted_sample, sample_diffusers  # noqa: E402

import minidiffusion  # noqa: E402
from minidiffusion.config import load_config  # noqa: E402

SHARED = ["train.batch_size=128", "train.lr=1e-3", "train.warmup_steps=100", "train.lr_decay=cosine",
          "train.grad_clip=1", "train.ema_decay=0.999", "train.precision=bf16", "train.steps=1000000",
          "train.fit_time_limit=true", "train.log_every=100", "train.sample_every=0", "train.checkpoint_every=0"]
OURS = ["diffusion.logit_mean=0.5", "sample.sampler=heun", "sample.steps=25", "sample.guidance=2",
        "sample.guide_at=0", "sample.guide_step=90", "sample.guide_interval=0.33,3.9", "sample.n=16"]
SMOKE = ["model.base_channels=16", "model.channel_mults=1,2", "model.norm_groups=0", "train.precision=fp32",
         "train.log_every=2", "train.warmup_steps=2", "sample.guide_step=1", "sample.steps=4"]


def train_ours(args, extra: list[str]) -> tuple[minidiffusion.Model, dict]:
    overrides = SHARED + OURS + extra + [f"train.time_limit={args.seconds}", f"train.device={args.device}"]
    started = time.perf_counter()
    try:
        minidiffusion.train(load_config("mnist-flow", overrides), args.out, progress=False)
    except minidiffusion.UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- a compiler failure on an unfamiliar machine: say so, train eager
        left = args.seconds - (time.perf_counter() - started)
        print(f"!! training on {extra} failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
              f"eager for the {left:.0f} s left", flush=True)
        extra = [*extra, "train.compile=false"]
        overrides = SHARED + OURS + extra + [f"train.time_limit={max(left, 10):.0f}", f"train.device={args.device}"]
        shutil.rmtree(Path(args.out) / "checkpoints", ignore_errors=True)
        minidiffusion.train(load_config("mnist-flow", overrides), args.out, progress=False)
    metrics = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    steps = max(r["step"] for r in metrics if "loss" in r)
    rates = [r["img_per_s"] for r in metrics if "img_per_s" in r][1:]  # the first window holds compilation
    return minidiffusion.load(args.out, device=args.device), {
        "train_steps": steps, "img_per_s": round(float(np.median(rates)), 1) if rates else None,
        "train_s": round(time.perf_counter() - started, 1), "overrides": overrides}


def train_diffusers(args, extra: list[str]) -> tuple[torch.nn.Module, dict]:
    """The anchor, by the loop's own parts; its cosine schedule fitted to the time as ours is."""
    from minidiffusion.training import _batches, draw_batch, fitted_length, lr_at, mix_seed

    cfg = load_config("mnist", SHARED + extra + [f"train.time_limit={args.seconds}",  # ddpm objective, uniform t
                                                 f"train.device={args.device}"])
    models, _ = common.build_models(cfg, ["diffusers"])
    anchor = next(m for m in models if m.anchor == "diffusers")
    torch.manual_seed(cfg.train.seed)
    step_fn = common.TrainStep(anchor.net, cfg, common.Settings(device=args.device, precision=cfg.train.precision))
    data = minidiffusion.data.load_dataset(cfg.data, "train")
    total = cfg.train.steps
    batches = _batches(data, cfg, 0, total, slice(None), args.device)
    started = time.perf_counter()
    mark, step, rates = None, 0, []
    while step < total:
        x0, t, noise = draw_batch(cfg, step_fn.objective, next(batches), step, slice(None), False)
        torch.manual_seed(mix_seed(cfg.train.seed, step, 2, 0))
        step_fn(x0, t, noise, step, lr_at(cfg, step, total))
        step += 1
        if step % cfg.train.log_every == 0:  # the loop's fit_time_limit, at log steps
            common.synchronize(args.device)
            now = time.perf_counter() - started
            if mark is not None:
                rates.append(cfg.train.log_every * cfg.train.batch_size / (now - mark[2]))
            if mark is None:
                mark = (step, now, now)
            elif total == cfg.train.steps and now >= 0.1 * args.seconds:
                total = fitted_length(step, (step - mark[0]) / (now - mark[1]), args.seconds - now, total)
            mark = (mark[0], mark[1], now)
        if time.perf_counter() - started >= args.seconds:
            break
    common.synchronize(args.device)
    return step_fn.ema, {"train_steps": step, "img_per_s": round(float(np.median(rates)), 1) if rates else None,
                         "train_s": round(time.perf_counter() - started, 1), "fitted_steps": total,
                         "params": anchor.params}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--who", required=True, choices=("ours", "diffusers"))
    p.add_argument("--seconds", type=float, default=200.0)
    p.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    p.add_argument("--best", type=Path, help="ours: train_step.py --best's JSON (the fastest path's overrides)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--out", default=None, help="ours: the run directory (default: a new one under /tmp)")
    p.add_argument("--samples", type=Path, help="keep the samples here (.npz)")
    p.add_argument("--results", type=Path, help="append the record here (JSON line)")
    p.add_argument("--note", default="", help="recorded as it is (e.g. what ran beside)")
    p.add_argument("--smoke", action="store_true", help="a tiny network for a few seconds on the CPU")
    args = p.parse_args(argv)
    args.out = args.out or tempfile.mkdtemp(prefix=f"mnist200-{args.who}-")
    extra = SMOKE if args.smoke else []
    if args.smoke:
        args.device, args.seconds, args.n = "cpu", min(args.seconds, 6), min(args.n, 50)
    if args.who == "ours" and args.best and not args.smoke:  # (compiling on the CPU would take the smoke's seconds)
        extra = [*extra, *json.loads(args.best.read_text())["overrides"]]
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.who == "ours":
        model, info = train_ours(args, extra)
        params = sum(p.numel() for p in model.net.parameters())
        started = time.perf_counter()
        images, nfe = counted_sample(model, args.n)
        unguided, _ = counted_sample(model, args.n, guidance=1)
        sampler = f"heun {model.config.sample.steps}, autoguidance w={model.config.sample.guidance:g}"
    else:
        net, info = train_diffusers(args, extra)
        params = info.pop("params")
        started = time.perf_counter()
        net.eval()
        steps = 4 if args.smoke else 50
        images, nfe, unguided = sample_diffusers(net, args.n, steps, device=args.device), steps, None
        sampler = f"DDPMScheduler {steps} steps"
    sample_s = time.perf_counter() - started
    scorer = Scorer()
    score = scorer(images)
    record = {"name": "mnist in seconds", "who": args.who, "seconds": args.seconds, "n": args.n, "seed": SAMPLE_SEED,
              "sampler": sampler, "nfe": round(nfe, 2), **score, "params": params, **info,
              "sample_s": round(sample_s, 1), "machine": common.machine(args.device), "torch": torch.__version__,
              "note": args.note, "command": common.command_line(),
              "date": common.datetime.datetime.now(common.datetime.UTC).isoformat(timespec="seconds")}
    if unguided is not None:
        record["unguided"] = {k: v for k, v in scorer(unguided).items() if k != "histogram"}
    print(json.dumps({k: v for k, v in record.items() if k not in ("histogram", "overrides")}), flush=True)
    if args.samples:
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.samples, images=images.permute(0, 2, 3, 1).numpy())
    if args.results:
        common.append_result(record, args.results)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
