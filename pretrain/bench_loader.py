"""`janus bench loader`: tokens/s the streaming loader delivers with 1 and 2 DataLoader workers, from the
local shard directory and from a URL (`--url`, or else the same shards served over HTTP on 127.0.0.1),
against the tokens/s a `small` JANUS training step consumes, measured in the same process."""

from __future__ import annotations

import functools
import http.server
import json
import os
import statistics
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from janus.config import preset
from janus.model import JanusModel
from janus.tokenizer import PAD
from pretrain.bench_model import real_batch, step_time
from pretrain.datasets import nmt_tokenizer
from pretrain.inputs import read_pairs
from pretrain.loader import LoaderConfig, PairLoader
from pretrain.packages import cache_dir
from pretrain.shards import read_index, shard_urls, write_pair_shards


def loader_tokens_per_s(location: str, workers: int, batches: int = 150) -> float:
    index = read_index(location)
    loader = PairLoader(shard_urls(location, index), LoaderConfig(token_budget=4096, window=4096, num_workers=workers),
                        checksums=[s["sha256"] for s in index["shards"]])
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    tokens, start = 0, time.perf_counter()
    for _ in range(batches):
        b = next(it)
        tokens += int(b.tgt.ne(PAD).sum())
    return tokens / (time.perf_counter() - start)


@contextmanager
def _served(directory: Path):
    """The directory over HTTP on 127.0.0.1, for as long as the block runs."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def bench_loader(out: str | None = None, vocab_size: int = 8000, url: str | None = None, repeats: int = 3) -> dict:
    data, tok = nmt_tokenizer(vocab_size)
    shard_dir = cache_dir() / "shards" / f"nmt-en-de-{vocab_size}" / "train"
    write_pair_shards(read_pairs(data, "train"), tok.path, shard_dir, pairs_per_shard=4000, replace=True)  # a cache
    report = {"tokens_per_s": {}, "load_average_start": os.getloadavg()}
    with _served(shard_dir) if url is None else nullcontext(url) as remote:
        report["remote"] = remote if url else "the same shards over HTTP on 127.0.0.1"
        runs: dict[str, list[float]] = {}
        for _ in range(repeats):  # local and remote interleaved, so load changes hit both alike
            for w in (1, 2):
                for where, location in (("local", str(shard_dir)), ("remote", remote)):
                    runs.setdefault(f"{where}_{w}_workers", []).append(loader_tokens_per_s(location, w))
        report["tokens_per_s"] = {k: statistics.median(v) for k, v in runs.items()}
        report["repeats"] = repeats
    report["remote_over_local"] = {f"{w}_workers": report["tokens_per_s"][f"remote_{w}_workers"]
                                   / report["tokens_per_s"][f"local_{w}_workers"] for w in (1, 2)}
    torch.set_num_threads(2)
    model = JanusModel(preset("small", vocab_size=tok.vocab_size, dropout=0.0))
    batch = real_batch(tok, data, 4096)
    seconds, _ = step_time(model, batch, "janus", warmup=1, reps=3)
    report["small_janus_step_tokens_per_s"] = int(batch.tgt.ne(PAD).sum()) / seconds
    report["loader_over_step"] = min(report["tokens_per_s"].values()) / report["small_janus_step_tokens_per_s"]
    report["load_average"] = os.getloadavg()
    print(f"{'source':<18}{'target tokens/s':>16}{'vs local':>10}")
    for k, v in report["tokens_per_s"].items():
        where, workers = k.split("_", 1)
        ratio = v / report["tokens_per_s"][f"local_{workers}"]
        print(f"{where + ' ' + workers.replace('_', ' '):<18}{v:>16.0f}{ratio:>9.2f}x")
    print(f"remote: {report['remote']}")
    print(f"a small JANUS training step consumes {report['small_janus_step_tokens_per_s']:.0f} tokens/s: "
          f"the loader delivers {report['loader_over_step']:.0f}x that")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report
