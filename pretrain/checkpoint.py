"""Checkpoints that are only ever taken whole.

Every rank writes its part (DeepSpeed's model/optimizer shards and our per-rank state: loader cursor,
RNG states). After a barrier, rank 0 lists every file with its sha256 and the number of rank parts
expected, writes `COMPLETE.json` last (temp name, then rename), and only then moves `latest`.
Discovery ignores a step directory without a valid marker, with a missing file or a wrong checksum:
a half-written or truncated checkpoint is never resumed from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain.registry import sha256_file

MARKER = "COMPLETE.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def save(root: str | os.PathLike, step: int, engine, rank_state: dict, keep: int = 3) -> Path:
    """Collective: every rank calls it. `rank_state` is this rank's own state (loader, RNG, counters)."""
    root = Path(root)
    rank, world = dist.get_rank(), dist.get_world_size()
    tag = tag_for(step)
    directory = root / tag
    if rank == 0 and directory.exists():  # a previous, interrupted attempt at this step
        shutil.rmtree(directory)
    dist.barrier()
    engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    part = directory / f"rank-{rank:05d}.pt"
    tmp = part.with_name(part.name + ".tmp")
    torch.save(rank_state, tmp)
    os.replace(tmp, part)
    dist.barrier()
    if rank == 0:
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MARKER)
        manifest = {"step": step, "world_size": world, "rank_parts": world,
                    "files": {str(p.relative_to(directory)): sha256_file(p) for p in files}}
        _atomic_write_text(directory / MARKER, json.dumps(manifest, indent=1))
        _atomic_write_text(root / "latest", tag)
        for old in sorted(complete_steps(root, verify=False))[:-keep] if keep > 0 else []:
            shutil.rmtree(root / tag_for(old), ignore_errors=True)
    dist.barrier()
    return directory


def is_complete(directory: Path, verify: bool = True) -> bool:
    marker = directory / MARKER
    if not marker.is_file():
        return False
    try:
        manifest = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    parts = [f for f in manifest["files"] if f.startswith("rank-")]
    if len(parts) != manifest["rank_parts"]:
        return False
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.is_file() or (verify and sha256_file(path) != digest):
            return False
    return True


def complete_steps(root: str | os.PathLike, verify: bool = True) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    steps = []
    for d in root.glob("step-*"):
        if d.is_dir() and d.name[5:].isdigit() and is_complete(d, verify):
            steps.append(int(d.name[5:]))
    return sorted(steps)


def latest_complete(root: str | os.PathLike) -> int | None:
    """The newest step whose checkpoint is whole and matches its checksums (None if there is none)."""
    steps = complete_steps(root)
    return steps[-1] if steps else None


def load(root: str | os.PathLike, step: int, engine) -> dict:
    """Collective: restores DeepSpeed's state into `engine`; returns this rank's own state."""
    root = Path(root)
    directory = root / tag_for(step)
    if not is_complete(directory, verify=False):
        raise FileNotFoundError(f"{directory} is not a complete checkpoint")
    engine.load_checkpoint(str(root), tag=tag_for(step))
    part = directory / f"rank-{dist.get_rank():05d}.pt"
    if not part.is_file():
        written_by = json.loads((directory / MARKER).read_text())["world_size"]
        raise FileNotFoundError(f"{part} is missing: the checkpoint was written by {written_by} ranks and this "
                                f"run has {dist.get_world_size()}")
    return torch.load(part, weights_only=False)
