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
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from janus.export import sha256_file
from janus.files import FileFault, atomic_write, describe, new_file

MARKER = "COMPLETE.json"


def tag_for(step: int) -> str:
    return f"step-{step:08d}"


def save(root: str | os.PathLike, step: int, engine, rank_state: dict, keep: int = 3,
         files: dict[str, bytes] | None = None, info: dict | None = None) -> Path:
    """Collective: every rank calls it. `rank_state` is this rank's own state (loader, RNG, counters);
    `files` (config, tokenizer) are written once by rank 0; `info` goes into the marker."""
    root = Path(root)
    rank, world = dist.get_rank(), dist.get_world_size()
    tag = tag_for(step)
    directory = root / tag
    if rank == 0 and directory.exists():  # a previous, interrupted attempt at this step
        shutil.rmtree(directory)
    dist.barrier()
    error = None
    try:
        engine.save_checkpoint(str(root), tag=tag, save_latest=False)
    except (OSError, RuntimeError) as err:  # a full disk reaches torch.save as a RuntimeError
        error = f"checkpoint step {step}: {describe(err, directory)}"
        dist.barrier()  # the barrier DeepSpeed's save ends with, which this rank skipped
    if error is None:
        try:
            with new_file(directory / f"rank-{rank:05d}.pt") as tmp:
                torch.save(rank_state, tmp)
            if rank == 0:
                for name, data in (files or {}).items():
                    atomic_write(directory / name, data)
        except FileFault as err:
            error = f"checkpoint step {step}: {err}"
        except RuntimeError as err:
            error = f"checkpoint step {step}: {describe(err, directory)}"
    _agree(error, directory)
    if rank == 0:
        listed = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MARKER)
        manifest = {"step": step, "world_size": world, "rank_parts": world, **(info or {}),
                    "files": {str(p.relative_to(directory)): sha256_file(p) for p in listed}}
        try:
            atomic_write(directory / MARKER, json.dumps(manifest, indent=1))
            atomic_write(root / "latest", tag)
        except FileFault as err:
            error = f"checkpoint step {step}: {err}"
        best = best_step(root)
        for old in sorted(complete_steps(root, verify=False))[:-keep] if keep > 0 and error is None else []:
            if old != best:
                shutil.rmtree(root / tag_for(old), ignore_errors=True)
                shutil.rmtree(root / "universal" / tag_for(old), ignore_errors=True)
    _agree(error, None if (directory / MARKER).is_file() else directory)  # a marked step is whole: kept
    return directory


def _agree(error: str | None, directory: Path | None = None) -> None:
    """Collective: every rank raises the same FileFault if any rank's writes failed, instead of the others
    waiting forever in a barrier. The unmarked partial step (which discovery would never take) is removed."""
    errors = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    failed = [e for e in errors if e]
    if failed:
        if directory is not None and dist.get_rank() == 0:  # the unmarked partial step: useless, and it fills the disk
            shutil.rmtree(directory, ignore_errors=True)
        raise FileFault(failed[0])


def is_complete(directory: Path, verify: bool = True) -> bool:
    return problem(directory, verify) is None


def problem(directory: Path, verify: bool = True) -> str | None:
    """Why `directory` is not a whole checkpoint (None if it is): no marker, a missing part or file, or with
    `verify` a file whose sha256 differs from the marker's (truncated or modified)."""
    marker = Path(directory) / MARKER
    if not marker.is_file():
        return f"{directory}: no {MARKER}, so not a complete checkpoint (interrupted while it was written?)"
    try:
        manifest = json.loads(marker.read_text())
        files, expected = manifest["files"], manifest["rank_parts"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return f"{marker}: not a checkpoint marker (unreadable JSON)"
    parts = [f for f in files if f.startswith("rank-")]
    if len(parts) != expected:
        return f"{marker} lists {len(parts)} rank parts of {expected}"
    for name, digest in files.items():
        path = Path(directory) / name
        if not path.is_file():
            return f"{path} is missing (listed in {MARKER})"
        if verify and sha256_file(path) != digest:
            return f"{path}: sha256 differs from {MARKER} (truncated or modified)"
    return None


def complete_steps(root: str | os.PathLike, verify: bool = True) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    steps = []
    for d in root.glob("step-*"):  # (universal/ holds converted copies, not checkpoints)
        if d.is_dir() and d.name[5:].isdigit() and is_complete(d, verify):
            steps.append(int(d.name[5:]))
    return sorted(steps)


def latest_complete(root: str | os.PathLike) -> int | None:
    """The newest step whose checkpoint is whole and matches its checksums (None if there is none)."""
    steps = complete_steps(root)
    return steps[-1] if steps else None


def manifest(directory: Path) -> dict:
    return json.loads((Path(directory) / MARKER).read_text())


def best_step(root: str | os.PathLike) -> int | None:
    """The step marked best by a dev metric (fine-tuning), which retention never deletes."""
    path = Path(root) / "best.json"
    return json.loads(path.read_text())["step"] if path.is_file() else None


def mark_best(root: str | os.PathLike, step: int, metric: str, value: float) -> None:
    atomic_write(Path(root) / "best.json", json.dumps({"step": step, "metric": metric, "value": value}))


def universal_dir(root: str | os.PathLike, step: int) -> Path:
    """Rank 0 only: DeepSpeed's universal (world-size independent) form of a checkpoint, converted once
    by deepspeed.checkpoint.ds_to_universal into RUN/checkpoints/universal/step-N (temp, then rename)."""
    import types

    from deepspeed.checkpoint import ds_to_universal

    source = Path(root) / tag_for(step)
    out = Path(root) / "universal" / tag_for(step)
    if (out / MARKER).is_file():
        return out
    work = Path(root) / "universal" / f".{tag_for(step)}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    clean = work / "input"
    clean.mkdir(parents=True)
    for f in source.iterdir():
        if f.name.endswith("_model_states.pt"):
            # megatron layers report `_extra_state: None`, which the converter cannot store: drop it
            state = torch.load(f, map_location="cpu", weights_only=False)
            state["module"] = {k: v for k, v in state["module"].items() if v is not None}
            torch.save(state, clean / f.name)
        elif f.name.endswith("_optim_states.pt"):
            os.symlink(f.resolve(), clean / f.name)
    converted = work / tag_for(step)
    ds_to_universal.main(types.SimpleNamespace(
        input_folder=str(clean), output_folder=str(converted), num_extract_workers=1, num_merge_workers=1,
        keep_temp_folder=False, strict=True, no_strict=False, inject_missing_state=True))
    shutil.copy(source / MARKER, converted / MARKER)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(converted, out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def load(root: str | os.PathLike, step: int, engine, universal: bool = False) -> dict:
    """Collective: restores DeepSpeed's state into `engine`; returns this rank's own state, or with
    `universal` (another world size) rank 0's, whose loader cursor does not apply here."""
    root = Path(root)
    directory = root / tag_for(step)
    if not is_complete(directory, verify=False):
        raise FileNotFoundError(f"{directory} is not a complete checkpoint")
    if universal:
        engine.load_checkpoint(str(root / "universal"), tag=tag_for(step))
        return torch.load(directory / f"rank-{0:05d}.pt", weights_only=False)
    engine.load_checkpoint(str(root), tag=tag_for(step))
    part = directory / f"rank-{dist.get_rank():05d}.pt"
    if not part.is_file():
        written_by = json.loads((directory / MARKER).read_text())["world_size"]
        raise FileNotFoundError(f"{part} is missing: the checkpoint was written by {written_by} ranks and this "
                                f"run has {dist.get_world_size()}")
    return torch.load(part, weights_only=False)


def consolidate(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The whole fp32 state dict (the TP=1 layout) of a checkpoint written at any ZeRO stage and TP size.
    Each TP rank's ZeRO partitions are merged by DeepSpeed's zero_to_fp32; TP slices are then joined
    along each parameter's partition dim, recorded in the checkpoint's layout.json."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    directory = Path(directory)
    if not is_complete(directory, verify=False):
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no valid {MARKER})")
    layout = json.loads((directory / "layout.json").read_text())
    tp = manifest(directory).get("tensor_parallel", 1)
    parts = []
    for r in range(tp):
        optim = sorted(directory.glob(f"*mp_rank_{r:02d}_optim_states.pt"))
        models = sorted(directory.glob(f"*mp_rank_{r:02d}_model_states.pt"))
        if not optim:  # ZeRO stage 0: the model states hold the weights
            module = torch.load(models[0], map_location="cpu", weights_only=False)["module"]
            parts.append({k: v.float() for k, v in module.items() if v is not None})
            continue
        with tempfile.TemporaryDirectory() as tmp:  # zero_to_fp32 reads one TP rank, named mp_rank_00
            (Path(tmp) / "t").mkdir()
            for f in optim + models:
                os.symlink(f.resolve(), Path(tmp) / "t" / f.name.replace(f"mp_rank_{r:02d}", "mp_rank_00"))
            parts.append(get_fp32_state_dict_from_zero_checkpoint(tmp, tag="t"))
    return {name: parts[0][name].clone() if dim is None else torch.cat([p[name] for p in parts], dim)
            for name, dim in layout.items()}
