"""Task datasets in the GLGE layout ({train,dev,test}.{src,tgt}, one example per line) with a
manifest.json. A dataset directory is written under a temporary name and renamed when whole, so a
directory that exists is complete; fetching again is a no-op."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from janus.tokenizer import Tokenizer, train_tokenizer
from pretrain.registry import cache_dir

SPLITS = ("train", "dev", "test")


def _clean(text: str) -> str:
    return " ".join(text.split())


def is_complete(out_dir: Path) -> bool:
    return (out_dir / "manifest.json").is_file()


def write_task(out_dir: Path, splits: dict[str, list[tuple[str, str]]], manifest: dict) -> Path:
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts, checksums = {}, {}
    for split in SPLITS:
        pairs = [(_clean(s), _clean(t)) for s, t in splits.get(split, [])]
        pairs = [(s, t) for s, t in pairs if s and t]
        counts[split] = len(pairs)
        for side, idx in (("src", 0), ("tgt", 1)):
            path = tmp / f"{split}.{side}"
            path.write_text("".join(p[idx] + "\n" for p in pairs), encoding="utf-8")
            checksums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {**manifest, "counts": counts, "sha256": checksums}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def fetch_nmt(out_dir: Path, pair: str = "en-de") -> Path:
    """LibreOffice help, aligned on (path, id). Held-out modules (smath, schart, sdraw) give dev and
    test, split by page so no page contributes to both."""
    from pretrain.sources import libreoffice

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    try:
        src_lang, tgt_lang = pair.split("-", 1) if pair.count("-") == 1 else pair.split("_", 1)
    except ValueError:
        raise ValueError(f"--pair {pair!r} must look like SRC-TGT, e.g. en-de") from None
    pairs, sources = libreoffice.aligned_pairs(src_lang, tgt_lang)
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for p in pairs:
        if p.module in libreoffice.HELD_OUT_MODULES:
            page_bit = int(hashlib.sha256(p.path.encode()).hexdigest(), 16) % 2
            splits["dev" if page_bit == 0 else "test"].append((p.src, p.tgt))
        else:
            splits["train"].append((p.src, p.tgt))
    manifest = {"dataset": "nmt", "pair": f"{src_lang}-{tgt_lang}", "sources": sources,
                "split_rule": f"held-out LibreOffice modules {list(libreoffice.HELD_OUT_MODULES)} -> dev/test by page"}
    return write_task(out_dir, splits, manifest)


def read_pairs(data_dir: Path, split: str) -> list[tuple[str, str]]:
    data_dir = Path(data_dir)
    src = (data_dir / f"{split}.src").read_text(encoding="utf-8").splitlines()
    tgt = (data_dir / f"{split}.tgt").read_text(encoding="utf-8").splitlines()
    if len(src) != len(tgt):
        raise ValueError(f"{data_dir}/{split}.src has {len(src)} lines but {split}.tgt has {len(tgt)}: "
                         "the two sides must be line-aligned")
    return list(zip(src, tgt))


def nmt_tokenizer(vocab_size: int = 8000, pair: str = "en-de") -> tuple[Path, Tokenizer]:
    """The LibreOffice NMT data and a joint tokenizer trained on its train split (both cached)."""
    data = fetch_nmt(cache_dir() / "datasets" / f"nmt-{pair}", pair)
    path = cache_dir() / "tokenizers" / f"nmt-{pair}-{vocab_size}.model"
    if not path.exists():
        train_tokenizer((s for p in read_pairs(data, "train") for s in p), path, vocab_size=vocab_size)
    return data, Tokenizer(path)
