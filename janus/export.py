"""The export format: one directory that any TP size, `janus finetune/evaluate` and `janus.load` read.

    model.safetensors   the whole fp32 state dict (TP=1 layout)
    config.json         {"format": "janus-export", "version": 1, "model": ModelConfig, "source": {...}}
    tokenizer.model     the sentencepiece model the weights were trained with
    README.md           a model card: what it is, how it was trained, its metrics
    SHA256SUMS          sha256 of every file above (`sha256sum -c` reads it too)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from janus.config import ModelConfig
from janus.files import new_directory

FORMAT, VERSION = "janus-export", 1
FILES = ("model.safetensors", "config.json", "tokenizer.model", "README.md")


class ExportError(ValueError):
    pass


def sha256_file(path: str | os.PathLike) -> str:
    """The one file checksum of the project (exports, checkpoints, downloads, tokenizers)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_export(out: str | os.PathLike, state: dict[str, torch.Tensor], cfg: ModelConfig, tokenizer: str | os.PathLike,
                 card: str, source: dict | None = None, force: bool = False) -> Path:
    """Writes into a temp directory beside `out`, then renames: a half-written export never appears.
    `out` must not exist; with `force` it may hold a previous export (and nothing else), which is replaced."""
    from safetensors.torch import save

    out = Path(out)
    check_export_target(out, force)
    with new_directory(out, replace=force) as tmp:
        # serialized here and written as a plain file, so a full disk is an OSError like any other write
        (tmp / "model.safetensors").write_bytes(save({k: v.contiguous().float() for k, v in state.items()},
                                                     metadata={"format": FORMAT}))
        config = {"format": FORMAT, "version": VERSION, "model": cfg.to_dict(), "source": source or {}}
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        shutil.copy(tokenizer, tmp / "tokenizer.model")
        (tmp / "README.md").write_text(card)
        (tmp / "SHA256SUMS").write_text("".join(f"{sha256_file(tmp / f)}  {f}\n" for f in FILES))
    return out


def check_export_target(out: Path, force: bool) -> None:
    """Refuses an `--out` that holds anything but a previous export (and that, unless `force`)."""
    if not (out.exists() or out.is_symlink()):
        return
    if not out.is_dir():
        raise ExportError(f"--out {out} is an existing file: give a new directory for the export")
    if not force:
        raise ExportError(f"--out {out} already exists: give a new directory (or --force to replace the "
                          f"previous export there)")
    extra = sorted(p.name for p in out.iterdir() if p.name not in (*FILES, "SHA256SUMS"))
    if not (out / "SHA256SUMS").is_file() or extra:
        what = f"it also holds {extra[:3]}" if extra else "it has no SHA256SUMS"
        raise ExportError(f"--out {out} is not a previous export ({what}): --force replaces only an export "
                          f"written by `janus export`; give a new directory")


def verify_export(directory: str | os.PathLike) -> list[str]:
    """Problems found (empty when the export is intact): missing files, checksum or format mismatches."""
    d = Path(directory)
    if not (d / "SHA256SUMS").is_file():
        return [f"{d / 'SHA256SUMS'} is missing: not an export written by `janus export`"]
    problems = []
    listed = {}
    for line in (d / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name in FILES:
        if name not in listed:
            problems.append(f"SHA256SUMS does not list {name}")
        elif not (d / name).is_file():
            problems.append(f"{d / name} is missing")
        elif sha256_file(d / name) != listed[name]:
            problems.append(f"{d / name}: sha256 differs from SHA256SUMS (modified or corrupt)")
    if not problems:
        config = json.loads((d / "config.json").read_text())
        if config.get("format") != FORMAT or config.get("version") != VERSION:
            problems.append(f"{d / 'config.json'}: format {config.get('format')!r} v{config.get('version')} "
                            f"is not {FORMAT} v{VERSION}")
    return problems


def is_export(directory: str | os.PathLike) -> bool:
    return (Path(directory) / "config.json").is_file() and (Path(directory) / "model.safetensors").is_file()


def read_export(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelConfig, Path]:
    """(state dict, model config, tokenizer path); refuses an export whose checksums do not match."""
    from safetensors.torch import load_file

    d = Path(directory)
    problems = verify_export(d)
    if problems:
        raise ExportError(f"{d}: {problems[0]}")
    config = json.loads((d / "config.json").read_text())
    return load_file(str(d / "model.safetensors")), ModelConfig.from_dict(config["model"]), d / "tokenizer.model"
