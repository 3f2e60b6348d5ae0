"""Before/after of each speed lever on our own training step, interleaved in one process.

    python bench/levers.py --preset quick --device cpu
    python bench/levers.py --preset cifar10 --device cuda --levers schedule_tables,host_sync

Each lever is a pair of rows, "before" and "after", timed turn about like the anchors in train_step.py; the
ratio after / before says whether it pays (> 1) on this machine. Levers:

- ``schedule_tables``: the loss indexes √ᾱ_t, √(1-ᾱ_t) and the Min-SNR weight from tables kept on the device
  (``Schedule.coefficient``, ``Schedule.cached``) instead of copying a float64 table from the host two or three
  times a step (``Schedule.at``).
- ``host_sync``: the step with its skip flag read back every step (a wait for the GPU, as the loop did before
  2026-12-04) against the step as the loop now takes it (the flags read every ``train.log_every`` steps).
- ``flush_denormal``: ``torch.set_flush_denormal(True)`` (CPU only).
- ``channels_last``: our model and batch in channels_last.
- ``threads``: one thread instead of torch's default (CPU only; on a shared machine this is what matters).
- ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark = True`` (CUDA; training turns it on).
- ``compile``: ``torch.compile`` of our model (the first call, compilation, is reported apart).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import common
import torch

from minidiffusion.diffusion import diffusion_loss

CPU_LEVERS = "schedule_tables,flush_denormal,channels_last,threads"
CUDA_LEVERS = "schedule_tables,host_sync,channels_last,cudnn_benchmark"


def legacy_diffusion_loss(net, schedule, x0, t, noise, prediction="eps", min_snr_gamma=0.0):
    """diffusion_loss (ε-prediction) as it was before the coefficient tables: Schedule.at copies from the host on
    each call."""
    ab = schedule.alphas_cumprod
    x_t = schedule.at(ab.sqrt(), t) * x0 + schedule.at((1 - ab).sqrt(), t) * noise
    loss = (net(x_t, t).float() - noise).square().mean(dim=(1, 2, 3))
    if min_snr_gamma > 0:
        snr = ab / (1 - ab)
        loss = loss * schedule.at(snr.clamp(max=min_snr_gamma) / snr, t).view(-1)
    return loss


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--precision", choices=tuple(common.AMP))
    p.add_argument("--levers", help=f"comma-separated (default cpu: {CPU_LEVERS}; cuda: {CUDA_LEVERS})")
    p.add_argument("--batch", type=int)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-seconds", type=float)
    p.add_argument("--results", type=common.Path, default=common.RESULTS)
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.set = common.SMOKE_OVERRIDES + args.set
        args.rounds, args.round_seconds = 2, 0.0
        args.no_record = args.no_record or args.results == common.RESULTS
    cfg = common.load_preset(args.preset, args.set)
    channels_last_default = cfg.train.channels_last
    base = common.Settings(device=args.device, precision=args.precision or (cfg.train.precision if args.device == "cuda"
                                                                             else "fp32"),
                           channels_last=channels_last_default)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    levers = (args.levers or (CUDA_LEVERS if args.device == "cuda" else CPU_LEVERS)).split(",")
    channels, side = common.image_shape(cfg)
    batch = args.batch or (4 if args.smoke else cfg.train.batch_size)
    (ours,), _ = common.build_models(cfg, [], "auto")
    default_threads = torch.get_num_threads()

    def row(label: str, settings: common.Settings, loss_fn=None, before=None, after=None,
            sync: bool = False) -> common.Contender:
        # sync: the step's skip flag read back every step (a wait for the device)
        step = common.TrainStep(ours.net, cfg, settings, loss_fn=loss_fn, sync=sync)
        x0, t, noise = common.random_batch(batch, channels, side, args.device, channels_last=settings.channels_last,
                                           objective=None if loss_fn else step.objective)  # an ε-loss: timesteps

        def run():
            if before:
                before()
            step(x0, t, noise)
            if after:
                after()
        return common.Contender(common.Model(label, ours.net, ours.description), settings, run=run, images=batch)

    pairs = []
    for lever in levers:
        if lever == "schedule_tables":
            pairs.append((lever, row("Schedule.at per step", base, legacy_diffusion_loss),  # both: the ε-loss
                          row("coefficient tables", base, diffusion_loss)))
        elif lever == "host_sync":
            pairs.append((lever, row("a host sync per step", base, sync=True), row("no host sync", base)))
        elif lever == "flush_denormal":
            pairs.append((lever, row("denormals kept", base, before=lambda: torch.set_flush_denormal(False)),
                          row("flush denormals", base, before=lambda: torch.set_flush_denormal(True),
                              after=lambda: torch.set_flush_denormal(False))))
        elif lever == "channels_last":
            pairs.append((lever, row("contiguous", replace(base, channels_last=False)),
                          row("channels_last", replace(base, channels_last=True))))
        elif lever == "threads":
            pairs.append((lever, row(f"{default_threads} threads", base,
                                     before=lambda: torch.set_num_threads(default_threads)),
                          row("1 thread", base, before=lambda: torch.set_num_threads(1),
                              after=lambda: torch.set_num_threads(default_threads))))
        elif lever == "cudnn_benchmark":  # the other rows run with it on (set above); these toggle it per turn
            pairs.append((lever, row("cudnn.benchmark off", base,
                                     before=lambda: setattr(torch.backends.cudnn, "benchmark", False),
                                     after=lambda: setattr(torch.backends.cudnn, "benchmark", True)),
                          row("cudnn.benchmark on", base)))
        elif lever == "compile":
            pairs.append((lever, row("eager", base), row("torch.compile", replace(base, compile=True))))
        else:
            raise SystemExit(f"unknown lever {lever!r}")

    contenders = [c for _, b, a in pairs for c in (b, a)]
    load_before = common.load_average()
    print(f"levers {args.preset} | {common.machine(args.device)} | torch {torch.__version__} | threads "
          f"{default_threads} | OMP_WAIT_POLICY {common.os.environ.get('OMP_WAIT_POLICY')} | load {load_before}")
    ran = common.warm_up(contenders, args.device, 2)
    pairs = [(lever, b, a) for lever, b, a in pairs if b in ran and a in ran]
    contenders = [c for _, b, a in pairs for c in (b, a)]
    round_s = args.round_seconds if args.round_seconds is not None else (0.3 if args.device == "cuda" else 1.0)
    for c in contenders:
        c.calls = max(1, min(500, round(round_s / max(common._time_one(c, args.device), 1e-6))))
    common._interleave(contenders, args.device, args.rounds)
    load_after = common.load_average()
    print(f"\n{'lever':<16} {'before':<24} {'img/s':>9} {'after':<24} {'img/s':>9} {'after/before':>12} "
          f"{'paired':>7}")
    records = []
    now = common.datetime.datetime.now(common.datetime.UTC).isoformat(timespec="seconds")
    for lever, b, a in pairs:
        ratio = a.median / b.median
        paired = common.paired_ratio(a, b)
        spread = f"(rounds: {min(b.rates):.0f}..{max(b.rates):.0f} | {min(a.rates):.0f}..{max(a.rates):.0f})"
        print(f"{lever:<16} {b.model.label:<24} {b.median:>9.1f} {a.model.label:<24} {a.median:>9.1f} "
              f"{ratio:>12.3f} {paired:>7.3f}  {spread}")
        records.append({"name": f"lever {lever} {args.preset}", "machine": common.machine(args.device),
                        "anchor": f"before: {b.model.label}", "ours": round(a.median, 2),
                        "theirs": round(b.median, 2), "unit": "img/s (train step)", "ratio": round(ratio, 3),
                        "ratio_paired": round(paired, 3),
                        "date": now, "torch": torch.__version__, "command": common.command_line(),
                        "after": a.model.label, "settings": base.describe(), "batch": batch,
                        "threads": default_threads, "omp_wait_policy": common.os.environ.get("OMP_WAIT_POLICY"),
                        "load_avg": [load_before, load_after], "rounds": args.rounds})
    print(f"load average before {load_before}, after {load_after}")
    if not args.no_record:
        for r in records:
            common.append_result(r, args.results)
        print(f"appended {len(records)} records to {args.results}")
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
