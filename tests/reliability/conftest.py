"""Shared machinery of the reliability tests: the CLI in real processes, a tiny image folder, a trained run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from minidiffusion.config import Config
from minidiffusion.training import train
from tests.helpers import make_folder, tiny_config

REPO = Path(__file__).resolve().parents[2]
ENV = {"MINIDIFFUSION_OFFLINE": "1"}


@dataclass
class Result:
    code: int  # exit status; negative: killed by that signal
    out: str
    err: str
    timed_out: bool = False

    def assert_one_line_error(self, *fragments: str) -> None:
        """Exit status 2 and exactly one line on stderr, ``error: ...``, containing every fragment; no traceback."""
        assert self.code == 2, (self.code, self.err)
        assert "Traceback" not in self.err, self.err
        assert self.err.startswith("error: ") and self.err.count("\n") == 1 and self.err.endswith("\n"), self.err
        for fragment in fragments:
            assert fragment in self.err, (fragment, self.err)


class Running:
    """One CLI process started by :class:`CLI`: kill it, or wait for its result."""

    def __init__(self, cli: CLI, pid: int, out: Path, err: Path):
        self.cli, self.pid, self.out, self.err = cli, pid, out, err
        self.result: Result | None = None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> Result:
        if self.result is None:
            reply = self.cli._read()
            self.result = Result(reply["code"], self.out.read_text(), self.err.read_text(), reply["timed_out"])
        return self.result


class CLI:
    """``python -m minidiffusion ARGS`` in a real process, forked from ``tests.reliability.forkserver``.

    Each command is its own process (exit status, stdout, stderr, SIGKILL all real) without paying the ~2 s of
    importing torch every time; see the server's docstring. Commands run one at a time.
    """

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.count = 0
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.forkserver"], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **ENV, "OMP_NUM_THREADS": "1"})

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit status {self.proc.wait()})")
        return json.loads(line)

    def start(self, *args: str | Path, cwd: Path = REPO, env: dict[str, str] | None = None,
              timeout: float = 120) -> Running:
        self.count += 1
        out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
        request = {"argv": [str(a) for a in args], "cwd": str(cwd), "env": {**ENV, **(env or {})},
                   "stdout": str(out), "stderr": str(err), "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return Running(self, self._read()["pid"], out, err)

    def run(self, *args: str | Path, **kwargs) -> Result:
        return self.start(*args, **kwargs).wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.kill()  # idle between commands: nothing to lose, and torch's interpreter teardown is slow
        self.proc.wait(timeout=30)


def real_cli(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """The console entry point in a fresh interpreter (slower: for the few tests that must not trust the fork)."""
    p = subprocess.run([sys.executable, "-m", "minidiffusion", *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, env={**os.environ, **ENV, **(env or {})}, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="session")
def cli(tmp_path_factory) -> CLI:
    server = CLI(tmp_path_factory.mktemp("cli"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def folder(tmp_path_factory) -> Path:
    """32 greyscale 8x8 PNGs."""
    return make_folder(tmp_path_factory.mktemp("images"))


def write_config(cfg: Config, path: Path) -> Path:
    path.write_text(cfg.to_toml())
    return path


@pytest.fixture(scope="session")
def tiny_toml(folder, tmp_path_factory) -> Path:
    """The tests' tiny config (6 steps, checkpoints at 3 and 6) as a TOML file for the CLI."""
    return write_config(tiny_config(folder), tmp_path_factory.mktemp("config") / "tiny.toml")


@pytest.fixture(scope="session")
def trained_run(folder, tmp_path_factory) -> Path:
    """A finished tiny run (checkpoints at steps 3 and 6). Tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(tiny_config(folder), run, progress=False)
    return run
