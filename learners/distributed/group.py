"""The torch.distributed process group of a data-parallel learner, and which partitions each rank owns.

Ranks are started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` in
the environment) or by a launcher that passes them explicitly. The backend follows the device:
``gloo`` on CPU, ``nccl`` on CUDA. Partitions are assigned explicitly and disjointly
(:func:`owned_partitions`: partition ``p`` belongs to rank ``p mod N``), never by a consumer
group's rebalance, so every partition of ``examples`` is learned by exactly one rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


def owned_partitions(partitions: int, rank: int, world: int) -> list[int]:
    """The partitions rank ``rank`` of ``world`` reads: ``p`` with ``p % world == rank`` (disjoint, covering)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return [p for p in range(partitions) if p % world == rank]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world: int

    @property
    def is_leader(self) -> bool:
        """Rank 0 writes checkpoints and publishes snapshots."""
        return self.rank == 0


def init_group(device: torch.device, rank: int | None = None, world: int | None = None,
               address: str | None = None, port: int | None = None, timeout_s: float = 120.0) -> RankInfo:
    """Join (or create) the process group; explicit arguments override torchrun's environment."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    if address is not None:
        os.environ["MASTER_ADDR"] = address
    if port is not None:
        os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not dist.is_initialized():
        dist.init_process_group(backend_for(device), rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    return RankInfo(rank, world)


def leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
