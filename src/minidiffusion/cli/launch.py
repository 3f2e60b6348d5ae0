"""``train --workers N``: torchrun's job for one machine, without torchrun's traceback when a worker fails.

On a CPU, N processes of cores/N threads each train faster than one process with every core: the quick network's
convolutions are too small to split well between two threads, while two processes each keep a core busy and meet
only to average gradients (bench/RESULTS.md: 1.3x on 2 cores at batch 64). The workers are the same command run
with the environment torchrun would give them (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the
run is the distributed one that tests/test_distributed.py holds equal to one process of the same global batch.

The launching process has already checked the config; each worker prints its own one-line errors. The first worker
to fail sets the exit status, and the others get a few seconds to notice before they are stopped. The workers end
with the launcher: Ctrl-C or SIGTERM for it reaches them, and a launcher killed outright (``kill -9``) takes them
along (``follow_launcher``), so that no orphan trains on holding the run's lock.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

WORKER_ENV = "MINIDIFFUSION_WORKER"  # set in the workers: they train, rather than launch again
LAUNCHER_ENV = "MINIDIFFUSION_LAUNCHER"  # the launcher's process id, in the workers
GRACE_S = 10.0  # how long the other workers may take to leave on their own once one has failed
INTERRUPT_S = 1.0  # after Ctrl-C, how long the workers may take to notice it themselves before it is passed on
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_worker() -> bool:
    return WORKER_ENV in os.environ


def worker_env(rank: int, workers: int, port: int, threads: int) -> dict[str, str]:
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(workers),
            "LOCAL_WORLD_SIZE": str(workers), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            WORKER_ENV: str(rank), LAUNCHER_ENV: str(os.getpid()),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}


def follow_launcher() -> None:
    """In a worker: end (SIGTERM) when the launcher does, however it ends. On Linux the kernel sends the signal
    (prctl PR_SET_PDEATHSIG); elsewhere a thread watches for the worker being handed to another parent."""
    launcher = int(os.environ.get(LAUNCHER_ENV, "0"))
    if not launcher:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != launcher:  # gone before the signal was armed: nothing will come
        os.kill(os.getpid(), signal.SIGTERM)
    if not armed:
        def watch() -> None:
            while os.getppid() == launcher:
                time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="follow-launcher", daemon=True).start()


def run_workers(argv: list[str], workers: int, out: Path) -> int:
    """Run ``python -m minidiffusion ARGV`` as ``workers`` ranks of one process group training into ``out``; their
    exit status."""
    threads, port = max(1, cores() // workers), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "minidiffusion", *argv], env=worker_env(r, workers, port, threads))
             for r in range(workers)]
    return supervise(procs, out)


def supervise(procs: list[subprocess.Popen], out: Path) -> int:
    """Wait for the workers; a SIGTERM for the launcher (a job scheduler, `kill`) is passed on, and so is Ctrl-C when
    it reached the launcher alone (`kill -INT`, a wrapper script), so that no worker outlives it."""
    previous = signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs if p.poll() is None])
    try:
        return _wait(procs)
    except KeyboardInterrupt:
        # From a terminal the workers got the SIGINT too and stop on their own; if not, they get it now.
        _stop(procs, deadline=time.monotonic() + INTERRUPT_S, then=signal.SIGINT)
        _stop(procs, deadline=time.monotonic() + GRACE_S)
        print(f"interrupted: {resume_hint(out)}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def resume_hint(out: Path) -> str:
    """Where an interrupted run stands: its newest checkpoint and the command that continues it."""
    from ..checkpoint import list_checkpoints

    found = list_checkpoints(out / "checkpoints")
    if not found:
        return f"no checkpoint was written in {out} yet"
    return f"continue from step {found[-1][0]} with: minidiffusion train --out {out} --resume"


def _wait(procs: list[subprocess.Popen]) -> int:
    while True:
        codes = [p.poll() for p in procs]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            _stop(procs, deadline=time.monotonic() + GRACE_S)
            code = failed[0]
            if code < 0:  # killed by a signal: nobody printed anything
                name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
                print(f"error: a training worker was killed by {name}", file=sys.stderr)
                return 1
            return code
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def _stop(procs: list[subprocess.Popen], deadline: float, then: int = signal.SIGTERM) -> None:
    """Wait until ``deadline`` for the workers to leave, send the rest ``then``; after SIGTERM, kill what remains."""
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.send_signal(then)
    if then != signal.SIGTERM:
        return
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
