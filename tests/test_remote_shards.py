"""Shards streamed from a real HTTP server on 127.0.0.1 (and through a reader command, as object stores
are read): the same batches as the local directory, every shard checked against the index's sha256,
faults retried with backoff, then skipped and counted, never a hang."""

import logging
import threading
import time

import pytest
import torch

from pretrain.loader import LoaderConfig, PairLoader
from pretrain.shards import read_index, shard_urls, write_pair_shards
from pretrain.storage import StorageConfig, Unavailable, read

FAST = StorageConfig(timeout_s=2.0, retries=2, backoff_s=0.05)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, real_pairs, tokenizer):
    out = tmp_path_factory.mktemp("remote") / "corpus"
    write_pair_shards(real_pairs, tokenizer.path, out, pairs_per_shard=50, pairs_per_sample=16, workers=1)
    return out


def _loader(location, storage=FAST, state=None, **cfg):
    index = read_index(location, storage)
    return PairLoader(shard_urls(location, index), LoaderConfig(token_budget=512, window=60, seed=5, storage=storage,
                                                                **cfg),
                      state=state, checksums=[s["sha256"] for s in index["shards"]])


def _batches(loader, n):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            return out
    return out


def _same(a, b):
    return all(torch.equal(x.src, y.src) and torch.equal(x.tgt, y.tgt) and torch.equal(x.masked, y.masked)
               for x, y in zip(a, b)) and len(a) == len(b)


def test_http_and_a_reader_command_give_the_local_batches(shard_dir, shard_server):
    server = shard_server(shard_dir)
    local = _batches(_loader(shard_dir), 40)
    assert read_index(server.url, FAST) == read_index(shard_dir)  # the index comes from the same place
    assert _same(_batches(_loader(server.url), 40), local)
    piped = StorageConfig(reader="curl -sf --max-time 5 {url}", timeout_s=10, retries=1, backoff_s=0.05)
    assert _same(_batches(_loader(server.url, piped), 40), local)
    assert {"index.json", *(s["name"] for s in read_index(shard_dir)["shards"])} <= set(server.requests)


def test_a_resumed_remote_stream_continues_exactly(shard_dir, shard_server):
    server = shard_server(shard_dir)
    reference = _batches(_loader(server.url), 30)
    first = _loader(server.url)
    _batches(first, 12)
    assert _same(_batches(_loader(server.url, state=first.state_dict()), 18), reference[12:])


@pytest.mark.parametrize("fault, counted, says", [
    ("404", "unavailable_shards", "HTTP 404"),
    ("500", "unavailable_shards", "HTTP 500 Internal Server Error (3 attempts)"),
    ("drop", "unavailable_shards", "the connection dropped mid-file"),
    ("stall", "unavailable_shards", "timed out (the server stalled)"),
    ("corrupt", "corrupt_shards", "its sha256 differs from index.json"),
])
def test_a_faulty_shard_is_retried_then_skipped_counted_and_told_once(shard_dir, shard_server, caplog, fault,
                                                                       counted, says):
    server = shard_server(shard_dir)
    victim = read_index(shard_dir)["shards"][0]["name"]
    server.fail(victim, fault)
    start = time.perf_counter()
    loader = _loader(server.url)
    with caplog.at_level(logging.WARNING, logger="pretrain.loader"):
        batches = _batches(loader, 60)  # enough to pass every shard more than once
    assert len(batches) == 60 and time.perf_counter() - start < 120
    told = [r.getMessage() for r in caplog.records if victim in r.getMessage()]
    assert len(told) == 1 and says in told[0], told
    assert getattr(loader.totals(), counted) >= 2  # skipped (and counted) on each pass, told once
    if fault == "404":
        assert server.requests.count(victim) >= 2  # not retried within a read: one request per pass
    if fault == "500":
        assert server.requests.count(victim) >= 3  # retried, with backoff


def test_a_transient_fault_is_retried_and_nothing_is_skipped(shard_dir, shard_server):
    server = shard_server(shard_dir)
    victim = read_index(shard_dir)["shards"][1]["name"]
    server.fail(victim, "500", times=1)
    server.fail("index.json", "drop", times=1)
    loader = _loader(server.url)
    assert _same(_batches(loader, 30), _batches(_loader(shard_dir), 30))
    assert loader.totals().unavailable_shards == 0 and loader.totals().corrupt_shards == 0


def test_a_server_stopped_and_restarted_mid_stream(shard_dir, shard_server):
    server = shard_server(shard_dir)
    cfg = StorageConfig(timeout_s=1.0, retries=1, backoff_s=0.2)
    loader = _loader(server.url, cfg, wait_s=60)
    stream = iter(loader)
    for _ in range(5):
        next(stream)
    server.stop()
    down = time.perf_counter()
    threading.Timer(3.0, server.start).start()
    got = [next(stream) for _ in range(40)]  # reads fail while it is down, then it is back: no hang
    assert len(got) == 40 and time.perf_counter() - down < 90
    assert loader.totals().unavailable_shards >= 1


def test_unreachable_storage_is_one_line_error():
    with pytest.raises(FileNotFoundError, match=r"127.0.0.1:9/index.json: connection refused .* attempts\)") as err:
        read_index("http://127.0.0.1:9/", StorageConfig(timeout_s=1, retries=1, backoff_s=0.01))
    assert "\n" not in str(err.value)
    with pytest.raises(Unavailable, match="no reader for ftp:// URLs: set shard_reader"):
        read("ftp://host/corpus/index.json")
