"""``python -m tests.reliability.forkserver``: runs ``python -m minidiffusion ARGS`` in forked children.

Why: a fresh interpreter spends ~2 s of CPU importing torch, and these tests start dozens of CLI processes on a
shared 2-core machine. This server imports everything once, then forks one child per request. Each child is a
real process -- its own exit status, stdout, stderr, working directory and environment, killable with SIGKILL --
that executes ``minidiffusion/__main__.py`` exactly as ``python -m minidiffusion`` does; an exception that
escapes is printed as the interpreter would print it (a traceback, exit status 1).

The server runs no parallel tensor operation, so no OpenMP thread pool exists at fork time (forking one is
unsafe). The client starts it with OMP_NUM_THREADS=1: on a shared machine one thread per process avoids spin-wait
contention, and every run of a comparison uses the same thread count.

Protocol, one JSON object per line. Request on stdin:
    {"argv": [...], "cwd": DIR, "env": {NAME: VALUE}, "stdout": FILE, "stderr": FILE, "timeout": SECONDS}
Replies on stdout: {"pid": PID} as soon as the child exists, then {"code": STATUS, "timed_out": BOOL} when it
has ended (STATUS is negative for a signal, like ``subprocess.Popen.returncode``).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
import traceback

import torch

import minidiffusion.checkpoint  # noqa: F401  (everything a command imports, imported once here)
import minidiffusion.cli
import minidiffusion.sampling  # noqa: F401
import minidiffusion.training  # noqa: F401

minidiffusion.cli.build_parser()  # imports the self-registering subcommands (visualize, evaluate, interop) too
# The first optimizer imports torch._dynamo and sympy (~3 s): pay that here once, not in every child.
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def _child(request: dict) -> None:
    """Become ``python -m minidiffusion ARGV`` with the requested files, directory and environment; never returns."""
    code = 1
    try:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir(request["cwd"])
        os.environ.update(request.get("env", {}))
        sys.argv = ["minidiffusion", *request["argv"]]
        runpy.run_module("minidiffusion", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        _reply({"pid": pid})
        deadline = time.monotonic() + request.get("timeout", 300)
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline and not timed_out:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.005)
        _reply({"code": os.waitstatus_to_exitcode(status), "timed_out": timed_out})


if __name__ == "__main__":
    serve()
