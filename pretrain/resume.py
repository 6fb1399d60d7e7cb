"""Where a run starts: its newest complete checkpoint (converted to DeepSpeed's universal format when the
number of ranks changed), and the counters a checkpoint carries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from pretrain import checkpoint


@dataclass
class Counters:
    step: int = 0  # optimizer steps taken
    tokens: int = 0  # target tokens trained on, all ranks
    nonfinite: int = 0  # batches skipped for a non-finite loss
    nonfinite_in_row: int = 0
    seconds: float = 0.0  # wall clock spent in the step loop, every session of the run together


@dataclass
class ResumePoint:
    step: int | None  # the checkpoint to load (None: a fresh start)
    elastic: bool  # written by another number of ranks (or TP size): load its universal form


def find(root: Path, world: int, tensor_parallel: int) -> ResumePoint:
    """Collective. Rank 0 decides (one view of the file system) and converts if the world changed."""
    found = [None, False]
    if dist.get_rank() == 0:
        found[0] = checkpoint.latest_complete(root)
        if found[0] is not None:
            written = checkpoint.manifest(root / checkpoint.tag_for(found[0]))
            found[1] = (written["world_size"], written.get("tensor_parallel", 1)) != (world, tensor_parallel)
            if found[1]:
                print(f"checkpoint step {found[0]} was written by {written['world_size']} ranks, this run has "
                      f"{world}: converting it to DeepSpeed's universal format", flush=True)
                checkpoint.universal_dir(root, found[0])
    dist.broadcast_object_list(found, src=0)
    return ResumePoint(*found)


def counters_from(saved: dict) -> Counters:
    """The counters of a checkpoint (one written before patience moved to fine-tuning's hook carries its
    count too: that goes to the hook's state)."""
    return Counters(**{k: v for k, v in saved.items() if k in Counters.__dataclass_fields__})
