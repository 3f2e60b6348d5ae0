"""Where a training step's time goes: torch.profiler over the loop's own per-step work.

    python bench/profile_step.py --preset mnist --device cuda            # the step as the loop takes it
    python bench/profile_step.py --preset cifar10 --device cuda --legacy   # and as it took it until 2026-12-04

One step is what ``minidiffusion.training.train`` does every step: this rank's batch indexed from the images kept on
the device (``training._batches``; random uint8 images of the preset's shape stand in for the data set), the step's
draws (``draw_batch``), the dropout seed, ``TrainStep`` (autocast loss, backward, clip, fused AdamW, EMA, the skip
decided on the device) and the loss window. After ``--warmup`` steps, ``--steps`` are profiled. Reported per step:
wall time, the kernels launched (``cudaLaunchKernel`` and kin; a CUDA graph replay counts once), the host waits
for the device (stream/device/event synchronizations and synchronous copies, from the profiler's runtime events,
and the synchronizing calls that ``torch.cuda.set_sync_debug_mode`` reports), and the top operators by their own
device time (CPU time on a CPU).

``--legacy`` profiles, after that, the step with what the loop did per step before 2026-12-04 added back: the
batch's indices copied from the host, and two reads of the step's finiteness (``bool(...)``, each a wait for the
device).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import common
import torch

from minidiffusion.training import TrainStep, _batches, _Window, draw_batch, mix_seed

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
               "cudaMemcpy2D", "cuStreamSynchronize", "cuCtxSynchronize")
LAUNCH_EVENTS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                 "cudaLaunchCooperativeKernel", "cudaGraphLaunch")


class FakeImages:
    """The part of an in-memory ``ImageDataset`` that ``training._batches`` reads: random uint8 images."""

    def __init__(self, n: int, channels: int, side: int):
        self.tensor = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.tensor)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--legacy", action="store_true", help="also the step with the per-step host reads the loop made "
                                                          "until 2026-12-04")
    p.add_argument("--top", type=int, default=12, help="operators listed")
    p.add_argument("--results", type=common.Path, help="append the record here (JSON line)")
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 + 3 steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.set = [*common.SMOKE_OVERRIDES, "train.batch_size=8", *args.set]
        args.steps, args.warmup = 3, 2
    return [profile(args, legacy) for legacy in ((False, True) if args.legacy else (False,))]


def profile(args: argparse.Namespace, legacy: bool) -> dict:
    cfg = common.load_preset(args.preset, [*args.set, f"train.device={args.device}"])
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # as training sets it
    channels, side = common.image_shape(cfg)
    (ours,), _ = common.build_models(cfg, [], "auto")
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = ours.net.to(args.device, memory_format=fmt).train()
    step_fn = TrainStep(model, cfg, args.device)
    data = FakeImages(512 if args.smoke else 60_000, channels, side)
    total = args.warmup + args.steps
    batches = _batches(data, cfg, 0, total, slice(None), args.device)
    window = _Window(args.device)

    resident = data.tensor.to(args.device)

    def one(step: int) -> None:
        pixels = next(batches)
        if legacy:  # the indices as they came before: from the host, a synchronous copy
            pixels = resident[torch.randperm(len(data))[:cfg.train.batch_size].to(args.device)]
        x0, t, noise = draw_batch(cfg, step_fn.objective, pixels, step, slice(None), False, fmt)
        torch.manual_seed(mix_seed(cfg.train.seed, step, 2, 0))
        losses, nonfinite = step_fn(x0, t, noise, step, 1e-4)
        if legacy:
            bool(nonfinite)
            bool(nonfinite)
        window.add(step, losses, step_fn.objective.position(t), nonfinite)

    for s in range(args.warmup):
        one(s)
    window.settle()
    common.synchronize(args.device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught, torch.profiler.profile(activities=activities) as prof:
        warnings.simplefilter("always")
        start = time.perf_counter()
        for s in range(args.warmup, total):
            one(s)
        common.synchronize(args.device)
        wall = time.perf_counter() - start
    if args.device == "cuda":
        torch.cuda.set_sync_debug_mode("default")
    window.settle()

    events = prof.key_averages()
    count = {e.key: e.count for e in events}
    launches = sum(count.get(k, 0) for k in LAUNCH_EVENTS) / args.steps
    syncs = sum(count.get(k, 0) for k in SYNC_EVENTS) / args.steps
    sync_calls = sum("synchroniz" in str(w.message) for w in caught) / args.steps
    on_device = args.device == "cuda"

    def own_time(e) -> float:  # µs
        return (e.self_device_time_total if on_device else e.self_cpu_time_total)

    ops = sorted((e for e in events if e.key.startswith("aten::") or not e.key.startswith("cuda")),
                 key=own_time, reverse=True)
    total_own = sum(own_time(e) for e in events) or 1.0
    top = [{"op": e.key, "ms_per_step": round(own_time(e) / 1e3 / args.steps, 3),
            "share": round(own_time(e) / total_own, 3), "calls_per_step": round(e.count / args.steps, 1)}
           for e in ops[:args.top]]
    record = {"name": f"profile {args.preset}", "machine": common.machine(args.device), "legacy": legacy,
              "ms_per_step": round(wall / args.steps * 1e3, 2), "img_per_s": round(cfg.train.batch_size * args.steps
                                                                                    / wall, 1),
              "launches_per_step": round(launches, 1), "syncs_per_step": round(syncs, 2),
              "sync_calls_per_step": round(sync_calls, 2), "batch": cfg.train.batch_size,
              "precision": cfg.train.precision, "channels_last": cfg.train.channels_last, "top": top,
              "date": common.datetime.datetime.now(common.datetime.UTC).isoformat(timespec="seconds"),
              "torch": torch.__version__, "command": common.command_line()}
    print(f"profile {args.preset}{' (legacy step)' if legacy else ''} | {record['machine']} | batch "
          f"{cfg.train.batch_size} {cfg.train.precision} {'channels_last' if cfg.train.channels_last else ''} | "
          f"{args.steps} steps after {args.warmup}")
    print(f"  {record['ms_per_step']} ms/step ({record['img_per_s']:,} img/s under the profiler), "
          f"{launches:.0f} kernel launches/step, {syncs:.1f} host waits/step (runtime events), "
          f"{sync_calls:.1f} synchronizing calls/step (sync debug mode)")
    where = sorted({f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)})
    record["sync_sources"] = where
    for place in where:
        print(f"  a synchronizing call from {place}")
    print(f"  {'operator':<52} {'ms/step':>8} {'share':>6} {'calls/step':>10}")
    for row in top:
        print(f"  {row['op'][:52]:<52} {row['ms_per_step']:>8.3f} {row['share']:>6.1%} {row['calls_per_step']:>10}")
    if args.results:
        common.append_result(record, args.results)
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
