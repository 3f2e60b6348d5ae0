"""``train --workers N``: torchrun's job for one machine, without torchrun's traceback when a worker fails.

On a CPU, N processes of cores/N threads each train faster than one process with every core: the quick network's
convolutions are too small to split well between two threads, while two processes each keep a core busy and meet
only to average gradients (bench/RESULTS.md: 1.3x on 2 cores at batch 64). The workers are the same command run
with the environment torchrun would give them (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the
run is the distributed one that tests/test_distributed.py holds equal to one process of the same global batch.

The launching process has already checked the config; each worker prints its own one-line errors. The first worker
to fail sets the exit status, and the others get a few seconds to notice before they are stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

WORKER_ENV = "MINIDIFFUSION_WORKER"  # set in the workers: they train, rather than launch again
GRACE_S = 10.0  # how long the other workers may take to leave on their own once one has failed


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
            WORKER_ENV: str(rank), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}


def run_workers(argv: list[str], workers: int) -> int:
    """Run ``python -m minidiffusion ARGV`` as ``workers`` ranks of one process group; their exit status."""
    threads, port = max(1, cores() // workers), free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "minidiffusion", *argv], env=worker_env(r, workers, port, threads))
             for r in range(workers)]
    # a SIGTERM for the launcher (a job scheduler, `kill`) is passed on, so that no worker outlives it
    previous = signal.signal(signal.SIGTERM, lambda *_: [p.terminate() for p in procs if p.poll() is None])
    try:
        return _wait(procs)
    except KeyboardInterrupt:  # the terminal sent SIGINT to the workers too: they stop on their own
        _stop(procs, deadline=time.monotonic() + GRACE_S)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _stop(procs: list[subprocess.Popen], deadline: float) -> None:
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
