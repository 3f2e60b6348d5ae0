"""torchrun support: who am I, and helpers that are no-ops in a single process.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR/MASTER_PORT); without them we are rank 0 of 1 and
nothing here touches torch.distributed. NCCL on GPUs, gloo on CPU.

Two rules keep a run from hanging or from going its separate ways on different ranks:

- A decision that depends on files (does the run directory hold checkpoints? which one is the newest?) is made
  by rank 0 and broadcast, so every rank takes the same branch. Ranks that looked for themselves could see
  different files: one written between two looks, or a node without the shared disk.
- A :class:`UserError` raised inside ``on_main``, ``agreed`` or ``main_first`` is raised on every rank. The ranks
  that hit it print it (each distinct message once); the others leave with status 2 quietly.

A rank that dies anywhere else leaves its peers blocked in a collective. torchrun stops the other processes of
its node; the process group's timeout (``MINIDIFFUSION_DIST_TIMEOUT`` seconds, default 600) ends the wait of
those on other nodes, and the CLI turns the resulting error into one line.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

T = TypeVar("T")

TIMEOUT_ENV = "MINIDIFFUSION_DIST_TIMEOUT"
# Long enough for what one rank may do while the others wait (rank 0 fetching a dataset the first time, writing a
# checkpoint to a slow disk); short enough that a run whose peer died on another node ends within minutes.
DEFAULT_TIMEOUT_S = 600
# gather_rows moves at most this many bytes per rank and collective, so that gathering 50k images over NCCL
# does not need a GPU copy of all of them at once.
GATHER_CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes, read from the environment without joining anything."""
        try:
            size = int(os.environ.get("WORLD_SIZE", "1"))
            if size <= 1:
                return cls()
            rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        except KeyError:
            raise UserError("WORLD_SIZE is set but RANK is not: start the processes with torchrun") from None
        except ValueError as e:
            raise UserError(f"bad torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK): {e}") from None
        if not 0 <= rank < size:
            raise UserError(f"RANK={rank} is outside 0..WORLD_SIZE-1={size - 1}")
        return cls(rank, size, local_rank)


class EveryRankError(UserError):
    """A UserError that every rank raises alike; ``quiet`` on the ranks that should leave the printing to another.

    The CLI prints ``error: ...`` only where ``quiet`` is false, so N ranks failing for one reason give one line.
    """

    def __init__(self, message: str, *, quiet: bool):
        super().__init__(message)
        self.quiet = quiet


def timeout() -> timedelta:
    """How long a collective may wait for the slowest rank before giving up (``MINIDIFFUSION_DIST_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"{TIMEOUT_ENV}={text!r}: expected a number of seconds > 0")
    return timedelta(seconds=seconds)


def init(device: str) -> World:
    """Join the process group torchrun describes (if any). ``device`` is 'cpu' or 'cuda' (already resolved)."""
    world = World.from_env()
    if not world.distributed or dist.is_initialized():
        return world
    wait = timeout()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("NCCL needs GPUs but none is visible: use train.device=cpu (gloo)")
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} GPUs on this node: "
                            f"use --nproc_per_node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl", timeout=wait, device_id=torch.device("cuda", world.local_rank))
    else:
        dist.init_process_group("gloo", timeout=wait)
    return world


def local_device(device: str, world: World) -> str:
    """The device of this rank: 'cuda:LOCAL_RANK' for 'cuda' under torchrun, ``device`` otherwise. One GPU named for
    every rank ('cuda:1') is refused: the ranks would share it while DDP expects each on its own."""
    if world.distributed and device.startswith("cuda:"):
        raise UserError(f"device {device} under torchrun: each rank takes cuda:LOCAL_RANK, so give 'cuda' (or "
                        f"'auto') and choose the GPUs with CUDA_VISIBLE_DEVICES")
    return f"cuda:{world.local_rank}" if device == "cuda" and world.distributed else device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- agreeing -----------------------------------------------------------------------------------------------------

def broadcast_object(obj, world: World):
    """rank 0's value of ``obj`` on every rank (also a barrier: nobody returns before rank 0 got here)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _raise_if_any(error: UserError | None, world: World) -> None:
    """Every rank learns every rank's error; each distinct message is printed by the first rank that hit it."""
    messages: list[str | None] = [None] * world.size
    dist.all_gather_object(messages, None if error is None else str(error))
    first = next((m for m in messages if m is not None), None)
    if first is None:
        return
    if error is not None:
        raise EveryRankError(str(error), quiet=messages.index(str(error)) != world.rank) from error
    raise EveryRankError(first, quiet=True)


def _attempt(fn: Callable[[], T]) -> tuple[T | None, UserError | None]:
    """``fn()``'s result, or the UserError it raised (to be shared with the other ranks before raising)."""
    try:
        return fn(), None
    except UserError as e:
        return None, e


def on_main(fn: Callable[[], T], world: World) -> T:
    """``fn()`` on rank 0 only; its result (or the UserError it raised) on every rank, once rank 0 is done."""
    if not world.distributed:
        return fn()
    result, error = _attempt(fn) if world.is_main else (None, None)
    _raise_if_any(error, world)
    return broadcast_object(result, world)


def agreed(fn: Callable[[], T], world: World) -> T:
    """``fn()`` on every rank at once; a UserError on any rank is raised on all of them."""
    if not world.distributed:
        return fn()
    result, error = _attempt(fn)
    _raise_if_any(error, world)
    return result


def main_first(fn: Callable[[], T], world: World) -> T:
    """``fn()`` on every rank, in turns: rank 0, then the first rank of each other node, then the rest.

    For work that may download or unpack files: one process per disk does it while the others wait, then finds
    the files in place; a UserError in any turn is raised on every rank.
    """
    if not world.distributed:
        return fn()
    my_turn = 0 if world.is_main else 1 if world.local_rank == 0 else 2
    result = None
    for turn in range(3):
        error = None
        if turn == my_turn:
            result, error = _attempt(fn)
        _raise_if_any(error, world)
    return result


def fingerprint(tensors: Iterable[torch.Tensor]) -> list[int]:
    """An exact integer per tensor (the sum of its bit patterns): equal wherever the tensors are bitwise equal.

    Integer sums do not depend on the order of summation, so equal tensors give equal numbers on any hardware.
    """
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    sums = [t.detach().contiguous().view(as_int[t.element_size()]).long().sum() for t in tensors]
    return torch.stack(sums).tolist() if sums else []


def ranks_agree(tensors: Iterable[torch.Tensor], world: World) -> bool:
    """Whether every rank holds bitwise the same ``tensors`` (a collective: call it on every rank)."""
    if not world.distributed:
        return True
    prints: list[list[int] | None] = [None] * world.size
    dist.all_gather_object(prints, fingerprint(tensors))
    return all(p == prints[0] for p in prints)


# -- sharing tensors ------------------------------------------------------------------------------------------------

def all_sum(x: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``x`` over all ranks (a new tensor; ``x`` itself in a single process). On the rank's device."""
    if not world.distributed:
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total


def shard(n: int, world: World) -> range:
    """This rank's contiguous share of indices 0..n-1; shares differ in size by at most one."""
    return range(n * world.rank // world.size, n * (world.rank + 1) // world.size)


def gather_rows(x: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's rows (rank order) on every rank; rows may differ in number between ranks.

    Works for CPU tensors under NCCL too (rows travel through this rank's GPU in chunks). The result is on
    ``x.device``.
    """
    if not world.distributed:
        return x
    counts: list[int | None] = [None] * world.size
    dist.all_gather_object(counts, x.shape[0])
    most = max(counts)
    if most == 0:
        return x
    padded = torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))]) if x.shape[0] < most else x
    wire = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else x.device
    row_bytes = math.prod(x.shape[1:]) * x.element_size()  # from the shape: equal on every rank, even with 0 rows
    rows_per_chunk = max(1, GATHER_CHUNK_BYTES // max(1, row_bytes))
    pieces: list[list[torch.Tensor]] = [[] for _ in range(world.size)]
    for lo in range(0, most, rows_per_chunk):
        mine = padded[lo:lo + rows_per_chunk].to(wire).contiguous()
        theirs = [torch.empty_like(mine) for _ in range(world.size)]
        dist.all_gather(theirs, mine)
        for rank, part in enumerate(theirs):
            pieces[rank].append(part.to(x.device))
    return torch.cat([torch.cat(parts)[:count] for parts, count in zip(pieces, counts)])


# -- failing --------------------------------------------------------------------------------------------------------

# What gloo, NCCL and the rendezvous store say when a peer died or a collective waited too long.
_LOST_PEER = re.compile(r"gloo|nccl|timed out|timeout|connection closed|connection reset|pair closure|broken pipe",
                        re.IGNORECASE)


def describe_failure(e: BaseException) -> str | None:
    """One line for an exception that means the process group broke (a peer died, a wait timed out), else None."""
    if not dist.is_available():
        return None
    text = str(e).strip()
    if not (isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and dist.is_initialized()
                                              and _LOST_PEER.search(text))):
        return None
    first = text.splitlines()[0] if text else type(e).__name__
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo prefixes its source file: [/path/pair.cc:553]
    seconds = os.environ.get(TIMEOUT_ENV, "").strip() or str(DEFAULT_TIMEOUT_S)
    return (f"the distributed run broke ({first}); another rank probably failed first: see its error. "
            f"A rank waits {seconds} s for the others ({TIMEOUT_ENV})")
