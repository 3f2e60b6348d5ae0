"""Training throughput, ours against diffusers and lucid, interleaved in one process.

    python bench/train_step.py --preset quick --device cpu
    python bench/train_step.py --preset cifar10 --device cuda --precision bf16 --compile

One unit of work is one optimizer step as ``minidiffusion.train`` takes it (autocast forward through the ε-loss,
backward, clip at 1, AdamW, EMA), on a fixed batch of the preset's image shape and batch size; the same code runs
every network. Reports images per second (median of interleaved rounds), the ratio ours / theirs, and on CUDA the
MFU. See common.py for how the anchors are sized.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import common


def main(argv: list[str] | None = None) -> list[dict]:
    parser = common.arguments(__doc__.splitlines()[0], {"help": "the preset's train.batch_size"})
    parser.add_argument("--ours", help="our rows instead of the preset's (and its compiled one with --compile): "
                                       "comma-separated layout-mode pairs from " + ", ".join(common.VARIANTS))
    parser.add_argument("--best", type=common.Path, help="write our fastest row's settings here (JSON), as "
                                                         "train.* overrides")
    args = parser.parse_args(argv)
    cfg = common.setup(args)
    ours = common.resolve(args, cfg)
    channels, side = common.image_shape(cfg)
    batch = args.batch or (4 if args.smoke else cfg.train.batch_size)
    anchors = [a for a in args.anchors.split(",") if a]
    models, notes = common.build_models(cfg, anchors, args.sizing)

    # rows: ours as the preset runs it, each anchor as its users run it; with --compile, the compiled ones too
    rows = []
    for m in models:
        if m.anchor is None and args.ours:
            rows += [(m, common.variant(ours, v)) for v in args.ours.split(",")]
        elif m.anchor is None:
            rows.append((m, replace(ours, compile=cfg.train.compile and not args.compile,
                                    compile_mode=cfg.train.compile_mode)))
            if args.compile:
                rows.append((m, replace(ours, compile=True)))
        else:
            rows += [(m, s) for s in common.anchor_settings(m.anchor, ours, args.compile)]
    contenders = []
    for m, settings in rows:
        step = common.TrainStep(m.net, cfg, settings)
        x0, t, noise = common.random_batch(batch, channels, side, args.device, channels_last=settings.channels_last,
                                           objective=step.objective)
        contenders.append(common.Contender(m, settings, run=lambda s=step, a=(x0, t, noise): s(*a), images=batch))

    def flops(c: common.Contender) -> float:
        step = common.TrainStep(c.model.net, cfg, replace(c.settings, compile=False))
        x0, t, noise = common.random_batch(batch, channels, side, args.device, objective=step.objective)
        return common.flops_per_image(lambda: step.loss(x0, t, noise).mean().backward(), batch)

    name = f"train {args.preset}"
    records = common.run(args, name, "img/s", contenders, models, notes, flops, common.AMP[ours.precision])
    if args.best:
        common.write_best(args.best, [c for c in contenders if c.model.anchor is None and c.rates])
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
