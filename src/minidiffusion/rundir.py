"""The run directory: one training at a time (an exclusive lock held for the life of the run), and the one way its
files are written (atomically: a reader sees the old file or the new one, never half of one).

``RUN/.lock`` is locked with ``flock`` and names its holder (pid, host, start time). The kernel drops the lock when
the holder exits, however it exits (kill -9 included), so a lock is never stale: the next run takes it over and
rewrites the names. On a file system without ``flock`` (some network mounts) the lock cannot be taken and the run
says so instead of training unguarded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".lock"


class RunLock:
    def __init__(self, path: Path, fd: int, created: list[Path]):
        self.path, self.fd, self.created = path, fd, created

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # removed again if nothing is written
        for _ in range(3):
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise UserError(f"cannot write to output directory {run_dir}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise UserError(f"{run_dir} is in use by another training ({holder}): wait for it to finish, or "
                                f"choose another --out") from None
            except OSError as e:
                os.close(fd)
                raise UserError(f"cannot lock {path} ({e.strerror or e}): is {run_dir} on a file system without "
                                f"locks?") from None
            try:  # the file we locked may have been removed by a run that just ended: then lock the new one
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise UserError(f"cannot lock {path}: it keeps being replaced")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return cls(path, fd, created)

    def release(self) -> None:
        """Drop the lock. The file stays, naming the last holder, unless the run wrote nothing else: a run that
        never started leaves no directory behind."""
        if self.fd < 0:
            return
        if self.created and [p.name for p in self.path.parent.iterdir()] == [LOCK_NAME]:
            self.path.unlink(missing_ok=True)
            for directory in self.created:  # innermost first
                try:
                    directory.rmdir()
                except OSError:
                    break
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


def _read_holder(fd: int) -> str:
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {h['pid']} on {h['host']}, since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to ``path.PID.tmp``, fsync, rename over ``path``: readers see the old file or the new one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique per process: cleanup removes only its own
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that needs a file name of its own (an encoder that picks the
    format from the suffix, an external process): when the block ends the file is fsynced and renamed over
    ``path``; when it raises, the file is removed and ``path`` is untouched.

    The name is ``path.PID.tmp`` plus ``path``'s suffix (``clip.mp4.PID.tmp.mp4``), so the writer sees the format.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
