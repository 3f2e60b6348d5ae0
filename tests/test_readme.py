"""Every `minidiffusion ...` command the README shows parses as written, and every config it names loads: a
renamed option or key fails here, not for the reader."""

import re
import shlex
from pathlib import Path

import pytest

from minidiffusion.cli import build_parser
from minidiffusion.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


SUBCOMMAND = r"\bminidiffusion ((?:train|sample|evaluate|visualize|convert)\b.*)"


def readme_commands() -> list[str]:
    """The commands of the code blocks (line by line, continuations joined) and of inline code (which may wrap),
    comments dropped; a bare mention such as `minidiffusion evaluate` is not a command."""
    parts = README.read_text(encoding="utf-8").replace("\\\n", " ").split("```")
    lines = []
    for k, part in enumerate(parts):
        if k % 2:  # a fenced block
            lines += part.splitlines()
        else:  # prose: inline code spans, and indented code lines
            lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", part)]
            lines += [line for line in part.splitlines() if line.startswith("    ")]
    found = set()
    for line in lines:
        match = re.search(SUBCOMMAND, line)
        if match:
            command = re.split(r" && |\s#", match.group(1))[0].strip()
            if " " in command:
                found.add(" ".join(command.split()))
    return sorted(found)


COMMANDS = readme_commands()


def test_the_readme_shows_the_commands_we_expect():
    names = {c.split()[0] for c in COMMANDS}
    assert names == {"train", "sample", "evaluate", "visualize", "convert"} and len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses_and_its_config_loads(command):
    argv = shlex.split(command)
    args = build_parser().parse_args(argv)  # argparse exits (SystemExit 2) on an unknown or misspelt option
    if argv[0] == "train":
        load_config(args.config or "quick", args.set)  # every --set key exists and takes that value


def test_every_test_the_failure_table_names_exists():
    """The "What happens when…" table says which test holds each behaviour: each named test must exist."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## What happens when"):text.index("## Library layout")]
    named = re.findall(r"`([\w/]+\.py)::(test_\w+)`", table)
    assert len(named) >= 24
    tests = Path(__file__).resolve().parent
    missing = [f"{f}::{name}" for f, name in named
               if not re.search(rf"^def {name}\(", (tests / f).read_text(encoding="utf-8"), re.M)]
    assert missing == []
