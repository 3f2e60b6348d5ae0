"""Sampling throughput (image·NFE/s: images × network evaluations per second), ours against diffusers and lucid.

    python bench/sample_step.py --preset quick --device cpu
    python bench/sample_step.py --preset cifar10 --device cuda --precision bf16 --compile --cuda-graph

One unit of work is one network evaluation of a batch under ``torch.inference_mode``, through the ε-model wrapper
the samplers use (``diffusion.process.FastEpsModel``: autocast, channels_last, CUDA graph). Our last row runs
a whole DDIM loop (``--loop-steps`` evaluations, no host sync inside) to show the sampler adds nothing.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import common
import torch

from minidiffusion.diffusion import ddim, make_objective


def main(argv: list[str] | None = None) -> list[dict]:
    parser = common.arguments(__doc__.splitlines()[0], {"help": "256 on cpu, 1000 on cuda"})
    parser.add_argument("--cuda-graph", action="store_true", help="our compiled rows replay one CUDA graph per call")
    parser.add_argument("--loop-steps", type=int, help="DDIM steps of the sampler-loop row (0: no row; default 10 "
                                                        "on cuda, 4 on cpu)")
    args = parser.parse_args(argv)
    cfg = common.setup(args)
    ours = common.resolve(args, cfg)
    channels, side = common.image_shape(cfg)
    batch = args.batch or (4 if args.smoke else 1000 if args.device == "cuda" else 256)
    anchors = [a for a in args.anchors.split(",") if a]
    models, notes = common.build_models(cfg, anchors, args.sizing)
    fast = replace(ours, compile=args.compile, cuda_graph=args.cuda_graph)
    if args.loop_steps is None:
        args.loop_steps = 10 if args.device == "cuda" else 4

    rows = []
    for m in models:
        if m.anchor is None:
            rows.append((m, ours))
            if args.cuda_graph and args.compile:  # the graph alone: no compilation to wait for
                rows.append((m, replace(ours, cuda_graph=True)))
            if fast != ours:
                rows.append((m, fast))
        else:
            rows += [(m, s) for s in common.anchor_settings(m.anchor, ours, args.compile)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, side, side, generator=g).to(args.device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(args.device)
    contenders, built = [], {}
    for m, settings in rows:
        model = built[m.label, settings.describe()] = common.sampling_model(m.net, settings)
        contenders.append(common.Contender(m, settings, run=_no_grad(lambda f=model: f(x, t)), images=batch))
    if args.loop_steps and models[0].anchor is None:
        model = built["ours", fast.describe()]  # the same compiled model and CUDA graph as its one-call row
        objective = make_objective(cfg.diffusion)  # the preset's denoiser and grid, as sampling.generate builds them
        sigmas = objective.sigmas(args.loop_steps, cfg.sample)
        denoiser, x_first = objective.denoiser(model), objective.prior(x, float(sigmas[0]))
        loop = common.Model(f"ours ddim×{args.loop_steps} loop", models[0].net, models[0].description)
        contenders.append(common.Contender(loop, fast, images=batch * args.loop_steps,
                                           run=_no_grad(lambda d=denoiser: ddim(d, x_first, sigmas))))

    def flops(c: common.Contender) -> float:
        model = common.sampling_model(c.model.net, replace(c.settings, compile=False, cuda_graph=False))
        per_call = common.flops_per_image(_no_grad(lambda: model(x, t)), batch)
        return per_call

    name = f"sample {args.preset}"
    return common.run(args, name, "img·NFE/s", contenders, models, notes, flops, common.AMP[ours.precision])


def _no_grad(fn):
    def run():
        with torch.inference_mode():
            fn()
    return run


if __name__ == "__main__":
    main(sys.argv[1:])
