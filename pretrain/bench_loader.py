"""`janus bench loader`: tokens/s the streaming loader delivers with 1 and 2 DataLoader workers, against
the tokens/s a `small` JANUS training step consumes, measured in the same process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from janus.config import preset
from janus.model import JanusModel
from janus.parallel import init_parallel
from pretrain.bench_model import real_batch, step_time
from pretrain.datasets import nmt_tokenizer, read_pairs
from pretrain.loader import LoaderConfig, PairLoader
from pretrain.registry import cache_dir
from pretrain.shards import shard_urls, write_pair_shards


def loader_tokens_per_s(urls: list[str], workers: int, batches: int = 150) -> float:
    loader = PairLoader(urls, LoaderConfig(token_budget=4096, window=4096, num_workers=workers))
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        tokens += int(b.tgt.ne(0).sum())
    return tokens / (time.perf_counter() - start)


def bench_loader(out: str | None = None, vocab_size: int = 8000) -> dict:
    data, tok = nmt_tokenizer(vocab_size)
    shard_dir = cache_dir() / "shards" / f"nmt-en-de-{vocab_size}" / "train"
    write_pair_shards(read_pairs(data, "train"), tok.path, shard_dir, pairs_per_shard=4000)
    urls = shard_urls(shard_dir)
    report = {"tokens_per_s": {f"{w}_workers": loader_tokens_per_s(urls, w) for w in (1, 2)}}
    torch.set_num_threads(2)
    init_parallel(1)
    model = JanusModel(preset("small", vocab_size=tok.vocab_size, dropout=0.0))
    batch = real_batch(tok, data, 4096)
    seconds, _ = step_time(model, batch, "janus", warmup=1, reps=3)
    report["small_janus_step_tokens_per_s"] = int(batch.tgt.ne(0).sum()) / seconds
    report["loader_over_step"] = min(report["tokens_per_s"].values()) / report["small_janus_step_tokens_per_s"]
    report["load_average"] = os.getloadavg()
    print(f"{'workers':<10}{'target tokens/s':>16}")
    for k, v in report["tokens_per_s"].items():
        print(f"{k:<10}{v:>16.0f}")
    print(f"a small JANUS training step consumes {report['small_janus_step_tokens_per_s']:.0f} tokens/s: "
          f"the loader delivers {report['loader_over_step']:.0f}x that")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report
