"""torchrun support: who am I, and helpers that are no-ops in a single process.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them we are rank 0 of 1 and nothing here touches
torch.distributed. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


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


def init(device: str) -> World:
    """Join the process group torchrun describes (if any). ``device`` is 'cpu' or 'cuda' (already resolved)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device == "cuda":
            if not torch.cuda.is_available():
                raise UserError("NCCL needs GPUs but none is visible: use train.device=cpu (gloo)")
            if local_rank >= torch.cuda.device_count():
                raise UserError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this node")
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return World(rank, size, local_rank)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, world: World):
    """rank 0's value of ``obj`` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(x: torch.Tensor, world: World) -> torch.Tensor:
    """Concatenate every rank's rows (rank order) on every rank; rows may differ in number between ranks."""
    if not world.distributed:
        return x
    counts = [None] * world.size
    dist.all_gather_object(counts, x.shape[0])
    pad = max(counts) - x.shape[0]
    padded = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]) if pad else x
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)])
