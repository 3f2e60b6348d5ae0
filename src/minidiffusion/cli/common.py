"""What the subcommands share: the help formatter, argparse errors as one line, ``--config``/``--set``, the sampling
options of `sample` and `evaluate`, and checks of numeric arguments."""

from __future__ import annotations

import argparse

from ..devices import DEVICE_FORMS
from ..diffusion.registry import SAMPLERS
from ..errors import UserError


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        """argparse's '(default: X)', unless the help already says what the default is or there is none."""
        if action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        raise UserError(f"{self.prog}: {message}")


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="a TOML file or a preset name (see configs/); default: with "
                                                  "--resume the run's own config.toml, else quick")
    add_set(p, "SECTION.KEY=VALUE", "override one config key (repeatable), e.g. --set train.lr=1e-4")


def add_set(p: argparse.ArgumentParser, metavar: str, help: str) -> None:
    p.add_argument("--set", action="append", default=[], metavar=metavar, help=help)


def sections(overrides: list[str], allowed: tuple[str, ...] | None = None) -> dict[str, dict]:
    """``--set section.key=value`` arguments -> {section: {key: value}} for ``Config.replace``; a section outside
    ``allowed`` (None: any) is an error."""
    from ..config import parse_override

    found: dict[str, dict] = {}
    for text in overrides:
        section, key, value = parse_override(text)
        if allowed is not None and section not in allowed:
            raise UserError(f"--set {text}: only {', '.join(allowed)} keys can be set here")
        found.setdefault(section, {})[key] = value
    return found


def add_sampling_options(p: argparse.ArgumentParser, *, seed_help: str) -> None:
    """The options `sample` and `evaluate` both take to draw images from a checkpoint."""
    p.add_argument("--sampler", choices=tuple(SAMPLERS), default=None,
                   help="default: the checkpoint config's sample.sampler")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's sample.steps)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--batch-size", type=int, default=None, help="images per network call")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="autoguidance weight (default: the config's sample.guidance; 1 = off)")
    p.add_argument("--cfg", type=float, default=None, metavar="W",
                   help="class-conditional checkpoints: classifier-free guidance weight (default: the config's "
                        "sample.cfg_weight; 1 = plain conditional, 0 = the 'no class' model)")
    p.add_argument("--guide", default=None, metavar="CHECKPOINT",
                   help="the guide network: a weaker checkpoint of the same data and diffusion (default: the "
                        "one the checkpoint carries when trained with sample.guide_step or guide_at)")
    p.add_argument("--device", default="auto", help=f"{DEVICE_FORMS}; auto = cuda when available")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Each named count, when given, is at least 1."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_not_negative(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must be 0 (automatic) or more, got {getattr(args, name)}")
