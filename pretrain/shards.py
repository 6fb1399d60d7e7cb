"""Tokenized pairs -> webdataset tar shards, with an index of per-shard counts and sha256.

A tar sample packs many pairs (tiny samples cost ~4 KB of tar each): `src.npy` / `tgt.npy` hold the
concatenated int32 ids and `src_len.npy` / `tgt_len.npy` the lengths. The whole directory (shards, then
`index.json`) is written under a temporary name beside its final one and renamed when whole, so a shard
directory that exists is complete; its index records what it was written from (`input_sha256`,
`tokenizer_sha256`) and each shard's sha256 and length histograms.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm import tqdm

from janus.export import sha256_file
from janus.files import faults, new_directory
from pretrain.storage import StorageConfig, Unavailable, is_remote, read
from pretrain.storage import join as storage_join

INDEX = "index.json"


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def pack(src: list[list[int]], tgt: list[list[int]]) -> dict[str, bytes]:
    return {
        "src.npy": _npy(np.fromiter((t for s in src for t in s), dtype=np.int32)),
        "src_len.npy": _npy(np.array([len(s) for s in src], dtype=np.int32)),
        "tgt.npy": _npy(np.fromiter((t for s in tgt for t in s), dtype=np.int32)),
        "tgt_len.npy": _npy(np.array([len(s) for s in tgt], dtype=np.int32)),
    }


def unpack(sample: dict) -> list[tuple[list[int], list[int]]]:
    """A decoded tar sample -> its pairs. Raises ValueError if the sample is malformed."""
    try:
        arr = {k[:-4]: np.load(io.BytesIO(sample[k]), allow_pickle=False)
               for k in ("src.npy", "src_len.npy", "tgt.npy", "tgt_len.npy")}
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"malformed sample {sample.get('__key__')}: {err}") from None
    if arr["src_len"].shape != arr["tgt_len"].shape or arr["src_len"].sum() != len(arr["src"]) \
            or arr["tgt_len"].sum() != len(arr["tgt"]):
        raise ValueError(f"malformed sample {sample.get('__key__')}: lengths do not add up")
    src = np.split(arr["src"], np.cumsum(arr["src_len"])[:-1])
    tgt = np.split(arr["tgt"], np.cumsum(arr["tgt_len"])[:-1])
    return [(s.tolist(), t.tolist()) for s, t in zip(src, tgt)]


@dataclass
class ShardJob:
    path: str
    src_lines: list[str]
    tgt_lines: list[str]  # empty for documents
    tokenizer: str
    pairs_per_sample: int
    seq_len: int | None = None  # documents: pack into blocks of this many tokens


def pack_blocks(docs: list[list[int]], seq_len: int, eos_id: int) -> list[list[int]]:
    """Concatenate documents (EOS between them) and cut into blocks of seq_len - 2 tokens, leaving room
    for the BOS/EOS that the pretraining target adds."""
    stream = [t for d in docs for t in (*d, eos_id)]
    size = seq_len - 2
    return [stream[i:i + size] for i in range(0, len(stream), size) if len(stream[i:i + size]) > 1]


def _write_shard(job: ShardJob) -> dict:
    from janus.tokenizer import EOS, Tokenizer

    tok = Tokenizer(job.tokenizer)
    if job.seq_len:
        tgt = pack_blocks(tok.encode(job.src_lines, bos_eos=False), job.seq_len, EOS)
        src = [[] for _ in tgt]
    else:
        src, tgt = tok.encode(job.src_lines), tok.encode(job.tgt_lines)
    final = Path(job.path)
    samples = 0
    with wds.TarWriter(str(final)) as sink:  # inside the directory's temporary name
        for i in range(0, len(src), job.pairs_per_sample):
            sink.write({"__key__": f"{final.stem}_{i // job.pairs_per_sample:06d}",
                        **pack(src[i:i + job.pairs_per_sample], tgt[i:i + job.pairs_per_sample])})
            samples += 1
    digest = sha256_file(final)
    return {"name": final.name, "samples": samples, "pairs": len(src),
            "tokens": sum(map(len, src)) + sum(map(len, tgt)), "sha256": digest,
            "lengths": {"src": _histogram(src), "tgt": _histogram(tgt)}}


def _histogram(seqs: list[list[int]]) -> dict[str, int]:
    """{length: count}: lets the driver count what the length limits will truncate or drop."""
    counts: dict[int, int] = {}
    for s in seqs:
        counts[len(s)] = counts.get(len(s), 0) + 1
    return {str(k): v for k, v in sorted(counts.items())}


def write_pair_shards(pairs: list[tuple[str, str]], tokenizer: str | os.PathLike, out_dir: str | os.PathLike,
                      pairs_per_shard: int = 20000, pairs_per_sample: int = 256, workers: int | None = None,
                      prefix: str = "shard", replace: bool = False) -> dict:
    """Tokenize (src, tgt) text pairs with all cores and write shards + index.json; returns the index."""
    if not pairs:
        raise ValueError(f"no pairs to shard into {out_dir}: the input is empty")

    def jobs(d: Path) -> list[ShardJob]:
        return [ShardJob(str(d / f"{prefix}-{i // pairs_per_shard:05d}.tar"), [p[0] for p in pairs[i:i + pairs_per_shard]],
                         [p[1] for p in pairs[i:i + pairs_per_shard]], str(tokenizer), pairs_per_sample)
                for i in range(0, len(pairs), pairs_per_shard)]
    return _run_jobs(jobs, out_dir, tokenizer, "pairs", pairs_fingerprint(pairs, tokenizer), workers, replace)


def write_block_shards(documents: list[str], tokenizer: str | os.PathLike, out_dir: str | os.PathLike,
                       seq_len: int = 256, docs_per_shard: int = 5000, blocks_per_sample: int = 64,
                       workers: int | None = None, prefix: str = "shard") -> dict:
    """Tokenize documents and pack them into blocks of `seq_len` tokens for pretraining."""
    if not documents:
        raise ValueError(f"no documents to shard into {out_dir}: the input is empty")

    def jobs(d: Path) -> list[ShardJob]:
        return [ShardJob(str(d / f"{prefix}-{i // docs_per_shard:05d}.tar"), documents[i:i + docs_per_shard], [],
                         str(tokenizer), blocks_per_sample, seq_len)
                for i in range(0, len(documents), docs_per_shard)]
    return _run_jobs(jobs, out_dir, tokenizer, "blocks", _fingerprint(documents, tokenizer, "blocks", seq_len),
                     workers, seq_len=seq_len)


def pairs_fingerprint(pairs: list[tuple[str, str]], tokenizer: str | os.PathLike) -> str:
    return _fingerprint((t for p in pairs for t in p), tokenizer, "pairs")


def _fingerprint(texts, tokenizer, *params) -> str:
    """sha256 of the input texts, the tokenizer and what changes the tokens (not how they are split into
    shards): what a shard directory was written from."""
    h = hashlib.sha256(repr(params).encode() + sha256_file(tokenizer).encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def _run_jobs(jobs, out_dir, tokenizer, kind: str, fingerprint: str, workers: int | None, replace: bool = False,
              **extra) -> dict:
    """Writes the whole directory under a temporary name and renames it: a shard directory is whole or absent.
    An existing one is reused when written from the same input, refused otherwise (or with `replace`, one
    this project wrote, replaced)."""
    out = Path(out_dir)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty directory (made for us, say): nothing there to keep
    if out.exists():
        index = read_index(out) if (out / INDEX).exists() else None
        if index is not None and index.get("input_sha256") == fingerprint:
            return index
        if not replace or index is None:
            what = "shards written from other input, another tokenizer or other settings" if index else \
                "files but no index.json of `janus data shard`"
            raise ValueError(f"--out {out} already holds {what}: give a new --out (nothing there was changed)")
    with new_directory(out, replace=replace) as tmp, faults(out, name_it=True):
        todo = jobs(tmp)
        workers = workers or min(len(todo), os.cpu_count() or 1)
        with ProcessPoolExecutor(workers) as pool:
            shards = list(tqdm(pool.map(_write_shard, todo), total=len(todo), desc=f"shard {out.name}", unit="shard"))
        index = {"kind": kind, **extra, "tokenizer_sha256": sha256_file(tokenizer), "input_sha256": fingerprint,
                 "shards": shards, "samples": sum(s["samples"] for s in shards),
                 "pairs": sum(s["pairs"] for s in shards), "tokens": sum(s["tokens"] for s in shards)}
        (tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return index


def read_index(location: str | os.PathLike, storage: StorageConfig | None = None) -> dict:
    """The index of a shard directory or of a remote base URL (fetched with retries, like the shards)."""
    path = storage_join(str(location), INDEX)
    if not is_remote(str(location)) and not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist: write shards with `janus data shard` first")
    try:
        text = read(path, storage).decode("utf-8")
    except Unavailable as err:
        raise FileNotFoundError(f"{err}: check shards= (a base URL holding index.json) and the server") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; rewrite the shards with `janus data shard`") from None
    try:
        index = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}); rewrite the shards with "
                         f"`janus data shard`") from None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or \
            not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in index["shards"]):
        raise ValueError(f"{path}: not a shard index (an object whose 'shards' lists {{name, sha256, ...}}); "
                         f"rewrite the shards with `janus data shard`")
    return index


def shard_urls(location: str | os.PathLike, index: dict | None = None) -> list[str]:
    """The paths or URLs of the shards listed in an index (only whole shards are ever listed)."""
    index = index or read_index(location)
    return [storage_join(str(location), s["name"]) for s in index["shards"]]
