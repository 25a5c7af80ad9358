"""``zoo probe`` under torchrun: the feature extraction sharded across the processes, one cache entry.

Each rank extracts every ``world_size``-th image of a split, starting at its rank (``build_dataset``'s ``shard``:
disjoint shards that cover the split once, in the folder's order). The tokens stay float32 until the whole split's
largest value is known (:func:`largest_across_ranks`), so every shard takes the type one process would have given
the split; rank 0 gathers the shards (:func:`gather_shards`), puts them back in the folder's order
(:func:`merge_shards`) and writes the same cache entry, under the same key, that one process writes (the features
equal to float tolerance: a batch holds other images). The extraction's seconds are the slowest rank's.

Failures: each step where one rank can fail while the others go on ends in :func:`agree`, a collective every rank
reaches whether it failed or not: the ranks exchange who failed, a rank that failed raises its own error and the
others one naming that rank, so no rank waits in a later collective for one that has given up. A rank that dies
(killed, out of memory) is torchrun's to handle: it stops the other processes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..classification.distributed import Processes, sum_across_ranks
from .features import Features, ProbeError

__all__ = ["agree", "from_primary", "gather_shards", "largest_across_ranks", "merge_shards"]


def agree(processes: Processes, error: BaseException | None, what: str) -> None:
    """Every rank learns whether any rank failed ``what`` (``error``: this rank's, or None); raises on every rank if
    one did. One process: raises ``error`` if there is one."""
    if processes.distributed:
        flags = [0.0] * processes.world_size
        flags[processes.rank] = float(error is not None)
        failed = [rank for rank, flag in enumerate(sum_across_ranks(flags, processes)) if flag]
    else:
        failed = []
    if error is not None:
        raise error
    if failed:
        ranks = ", ".join(map(str, failed))
        raise ProbeError(f"{what} failed on rank {ranks} of {processes.world_size} processes (its message says why).")


def from_primary(processes: Processes, value: bool) -> bool:
    """Rank 0's ``value`` on every rank."""
    if not processes.distributed:
        return value
    return sum_across_ranks([float(value) if processes.is_primary else 0.0], processes)[0] > 0


def largest_across_ranks(value: float, processes: Processes) -> float:
    """The largest ``value`` over all ranks."""
    if not processes.distributed:
        return value
    device = processes.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def gather_shards(processes: Processes, shard: Features | None) -> list[Features | None] | None:
    """Every rank's shard, in rank order, on rank 0 (None elsewhere); ``shard`` is None for a rank with no images."""
    if not processes.distributed:
        return [shard]
    shards: list | None = [None] * processes.world_size if processes.is_primary else None
    dist.gather_object(shard, shards, dst=0)
    return shards


def merge_shards(shards: list[Features | None]) -> Features:
    """The split in the folder's order from its shards: shard ``r`` of ``len(shards)`` holds images r, r + W, ...
    Its seconds are the slowest shard's (they ran side by side)."""
    world = len(shards)
    present = [s for s in shards if s is not None and s.num_images]
    if not present:
        raise ProbeError("the split has no images to extract.")
    total = sum(s.num_images for s in present)

    def interleave(name: str) -> np.ndarray:
        parts = [getattr(s, name) for s in present]
        merged = np.empty((total, *parts[0].shape[1:]), dtype=np.result_type(*parts))
        for rank, shard in enumerate(shards):
            expected = len(range(rank, total, world))
            count = shard.num_images if shard is not None else 0
            if count != expected:
                raise ValueError(f"shard {rank} of {world} holds {count} images; {expected} expected of {total}")
            if count:
                merged[rank::world] = getattr(shard, name)
        return merged

    return Features(interleave("tokens"), interleave("pooled"), interleave("labels"), max(s.seconds for s in present))
