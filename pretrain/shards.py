"""Tokenized pairs -> webdataset tar shards, with an index of per-shard counts and sha256.

A tar sample packs many pairs (tiny samples cost ~4 KB of tar each): `src.npy` / `tgt.npy` hold the
concatenated int32 ids and `src_len.npy` / `tgt_len.npy` the lengths. Each shard is written under a
temporary name and renamed when whole; `index.json` is written last, so a directory with an index
holds only whole shards.
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
    tmp = final.with_name(final.name + ".tmp")
    samples = 0
    with wds.TarWriter(str(tmp)) as sink:
        for i in range(0, len(src), job.pairs_per_sample):
            sink.write({"__key__": f"{final.stem}_{i // job.pairs_per_sample:06d}",
                        **pack(src[i:i + job.pairs_per_sample], tgt[i:i + job.pairs_per_sample])})
            samples += 1
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, final)
    return {"name": final.name, "samples": samples, "pairs": len(src),
            "tokens": sum(map(len, src)) + sum(map(len, tgt)), "sha256": digest}


def write_pair_shards(pairs: list[tuple[str, str]], tokenizer: str | os.PathLike, out_dir: str | os.PathLike,
                      pairs_per_shard: int = 20000, pairs_per_sample: int = 256, workers: int | None = None,
                      prefix: str = "shard") -> dict:
    """Tokenize (src, tgt) text pairs with all cores and write shards + index.json; returns the index."""
    if not pairs:
        raise ValueError(f"no pairs to shard into {out_dir}: the input is empty")
    jobs = [ShardJob(str(Path(out_dir) / f"{prefix}-{i // pairs_per_shard:05d}.tar"),
                     [p[0] for p in pairs[i:i + pairs_per_shard]], [p[1] for p in pairs[i:i + pairs_per_shard]],
                     str(tokenizer), pairs_per_sample)
            for i in range(0, len(pairs), pairs_per_shard)]
    return _run_jobs(jobs, out_dir, tokenizer, "pairs", workers)


def write_block_shards(documents: list[str], tokenizer: str | os.PathLike, out_dir: str | os.PathLike,
                       seq_len: int = 256, docs_per_shard: int = 5000, blocks_per_sample: int = 64,
                       workers: int | None = None, prefix: str = "shard") -> dict:
    """Tokenize documents and pack them into blocks of `seq_len` tokens for pretraining."""
    if not documents:
        raise ValueError(f"no documents to shard into {out_dir}: the input is empty")
    jobs = [ShardJob(str(Path(out_dir) / f"{prefix}-{i // docs_per_shard:05d}.tar"), documents[i:i + docs_per_shard],
                     [], str(tokenizer), blocks_per_sample, seq_len)
            for i in range(0, len(documents), docs_per_shard)]
    return _run_jobs(jobs, out_dir, tokenizer, "blocks", workers, seq_len=seq_len)


def _run_jobs(jobs: list[ShardJob], out_dir, tokenizer, kind: str, workers: int | None, **extra) -> dict:
    out = Path(out_dir)
    if (out / INDEX).exists():
        return json.loads((out / INDEX).read_text())
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        shards = list(tqdm(pool.map(_write_shard, jobs), total=len(jobs), desc=f"shard {out.name}", unit="shard"))
    index = {"kind": kind, **extra, "tokenizer_sha256": hashlib.sha256(Path(tokenizer).read_bytes()).hexdigest(),
             "shards": shards, "samples": sum(s["samples"] for s in shards),
             "pairs": sum(s["pairs"] for s in shards), "tokens": sum(s["tokens"] for s in shards)}
    tmp = out / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, out / INDEX)
    return index


def read_index(shard_dir: str | os.PathLike) -> dict:
    path = Path(shard_dir) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write shards with `janus data shard` first")
    return json.loads(path.read_text())


def shard_urls(shard_dir: str | os.PathLike) -> list[str]:
    """The shard paths listed in a directory's index (only whole shards are ever listed)."""
    index = read_index(shard_dir)
    return [str(Path(shard_dir) / s["name"]) for s in index["shards"]]
