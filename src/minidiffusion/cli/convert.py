"""``minidiffusion convert --from-diffusers DIR | --to-diffusers RUN``: weights to and from diffusers."""

from __future__ import annotations

import argparse

EXAMPLE = """examples:
  minidiffusion convert --from-diffusers ddpm-cifar10-32 --out runs/ddpm-cifar10-32 --num-heads 1
  minidiffusion sample --checkpoint runs/ddpm-cifar10-32 --sampler ddpm --steps 1000 --n 64 --out grid.png
  minidiffusion convert --to-diffusers runs/cifar10 --out exported/cifar10   # DDPMPipeline.from_pretrained(...)"""


def run(args: argparse.Namespace) -> int:
    from ..interop import from_diffusers, to_diffusers

    if args.from_diffusers:
        path = from_diffusers(args.from_diffusers, args.out, num_heads=args.num_heads)
        print(f"wrote {path}\nnext: minidiffusion sample --checkpoint {args.out} --out samples.png")
    else:
        out = to_diffusers(args.to_diffusers, args.out, ema=not args.no_ema)
        print(f"wrote {out} (load with diffusers.DDPMPipeline.from_pretrained({str(out)!r}))")
    return 0


def register(subparsers: argparse._SubParsersAction, formatter_class: type) -> None:
    p = subparsers.add_parser("convert", help="convert weights to or from diffusers (UNet2DModel)",
                              formatter_class=formatter_class, epilog=EXAMPLE,
                              description="Convert between a minidiffusion run (ddpm UNet) and a diffusers "
                                          "UNet2DModel + DDPMScheduler folder, exactly (same outputs).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-diffusers", metavar="DIR_OR_HUB_ID",
                        help="a diffusers folder (pipeline, flat repo or unet/) or a Hub id such as "
                             "google/ddpm-cifar10-32 (downloaded when huggingface_hub and the network are there)")
    source.add_argument("--to-diffusers", metavar="RUN_OR_CKPT", help="a run directory or checkpoint file")
    p.add_argument("--out", required=True, help="the run directory (--from-diffusers) or pipeline folder to write")
    p.add_argument("--no-ema", action="store_true", help="--to-diffusers: export the raw weights, not the EMA")
    p.add_argument("--num-heads", type=int, default=None,
                   help="--from-diffusers: attention heads to run the weights with; None = as diffusers does "
                        "(google/ddpm-* weights were trained with 1 head, diffusers runs them with width/8)")
    p.set_defaults(func=run)
