"""The command line: ``minidiffusion train | sample | evaluate | visualize | convert``, one module per subcommand.

Every user error ends as one line on stderr and exit status 2 (``--debug`` shows the traceback). The library
modules know nothing of argparse: each subcommand's module here parses its arguments and calls them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..errors import UserError
from . import convert, evaluate, sample, train, visualize
from .common import Formatter, Parser, check_positive

SUBCOMMANDS = (train, sample, evaluate, visualize, convert)  # each has register(subparsers, formatter_class)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="minidiffusion", description="Train and sample DDPM-family image diffusion models.")
    parser.add_argument("--version", action="version", version=f"minidiffusion {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in SUBCOMMANDS:
        command.register(sub, Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get("MINIDIFFUSION_DEBUG") == "1"
    # Under torchrun (and train --workers) rank 0 speaks for all: every rank meets the same data and the same steps,
    # so the others' warnings would only repeat its lines ("skipped 1 unreadable image" once per rank); their errors
    # still print, as one line each.
    main_rank = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if main_rank else logging.ERROR, format="%(message)s", stream=sys.stderr)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv  # what `train --workers` runs again in each worker
        check_positive(args, "n", "steps", "batch_size", "fps", "every", "workers")
        code = args.func(args)
        if "torch.distributed" in sys.modules:  # leave torchrun's process group cleanly (NCCL warns otherwise)
            from ..distributed import shutdown

            shutdown()
        return code
    except UserError as e:
        if debug:
            raise
        if not getattr(e, "quiet", False):  # under torchrun, an error that every rank hits is printed once
            print(f"error{_rank_tag()}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        failure = None if debug else _distributed_failure(e)
        if failure is None:
            raise
        print(f"error{_rank_tag()}: {failure}", file=sys.stderr)
        return 1


def _rank_tag() -> str:
    """' (rank R)' on the ranks other than 0 of a torchrun launch: each error line says where it happened."""
    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and rank != "0" else ""


def _distributed_failure(e: Exception) -> str | None:
    """One line when ``e`` means torchrun's process group broke (a peer died, a collective timed out), else None."""
    if "torch.distributed" not in sys.modules:  # nothing distributed ran: do not import torch to find out
        return None
    from ..distributed import describe_failure

    return describe_failure(e)
