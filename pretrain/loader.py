"""A streaming loader over pair shards that resumes exactly.

A shard is read whole (pretrain.storage: a local path, HTTP(S), or an object store through a command),
checked against the index's sha256 and unpacked by webdataset; webdataset keeps no state, so the order is
ours and fully determined by (seed, epoch, stream):
- every (data-parallel rank, DataLoader worker) is one *stream*; in epoch e the shards are permuted by
  (seed, e) and stream g of G takes shards g, g+G, ...; each shard's pairs are shuffled by (seed, e, shard);
- a stream cuts its pairs into windows of `window` pairs; a window is bucketed by length into
  token-budget batches whose order and masks are drawn from generators seeded by (seed, stream, window).
A stream's state is therefore just (epoch, shard position, pair offset, window number, batches done),
saved with the checkpoint; restored, the stream re-reads its window and skips what was consumed. The
loader interleaves streams round-robin and remembers whose turn is next, so the resumed batch sequence
is the uninterrupted one. Resuming needs the same ranks x workers; elastic resume re-seeks from the saved
epoch instead. A shard that cannot be used (unavailable after the storage's retries, a sha256 that differs,
a corrupt tar) is skipped, counted and told once.
"""

from __future__ import annotations

import logging
import os
import tarfile
import hashlib
import io
import time
from dataclasses import dataclass, field

import torch
from webdataset import tariterators
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pretrain.batching import make_batch, make_pretrain_batch, token_budget_batches
from pretrain.shards import unpack
from pretrain.storage import StorageConfig, Unavailable, read

log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    token_budget: int = 4096  # longest sequence in the batch x batch size
    max_source_tokens: int = 256  # longer sources are truncated (truncate_source) or their pairs dropped
    max_target_tokens: int = 256  # longer targets are dropped (and counted)
    truncate_source: bool = False  # keep a long source's first max_source_tokens - 1 tokens and its EOS
    window: int = 4096  # pairs bucketed together; also the shuffle span across shards
    seed: int = 0
    kind: str = "pairs"  # pairs (tasks: target masking) | blocks (pretraining: text infilling)
    masking: str = "release"  # release | span | uniform: target-side NAR masking of pairs (janus.noising)
    aux_order: str = "left_to_right"  # left_to_right | permutation: must match the objective's aux_order
    num_workers: int = 0
    storage: StorageConfig = field(default_factory=StorageConfig)  # how remote shards are read
    wait_s: float = 600.0  # a stream whose every shard of an epoch was unavailable retries this long, then fails


def _seeded(*parts: int) -> torch.Generator:
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2 ** 63)
    return torch.Generator().manual_seed(seed)


@dataclass
class Stats:
    corrupt_shards: int = 0
    dropped_empty: int = 0
    dropped_too_long: int = 0
    bad_samples: int = 0
    unavailable_shards: int = 0  # remote shards not read after every retry (a 404, a dead server)
    truncated_source: int = 0  # kept, with the source cut to max_source_tokens

    @property
    def skipped(self) -> int:
        return self.corrupt_shards + self.dropped_empty + self.dropped_too_long + self.bad_samples \
            + self.unavailable_shards

    def add(self, other: "Stats") -> None:
        for k, v in vars(other).items():
            setattr(self, k, getattr(self, k) + v)


def new_stream_state() -> dict:
    return {"epoch": 0, "shard_pos": 0, "offset": 0, "window": 0, "done": 0}


class PairStream:
    """One stream's endless, deterministic sequence of batches."""

    def __init__(self, urls: list[str], stream: int, n_streams: int, cfg: LoaderConfig,
                 checksums: list[str] | None = None):
        if len(urls) < n_streams:
            raise ValueError(f"{len(urls)} shards cannot feed {n_streams} streams (ranks x workers): "
                             "write more, smaller shards or use fewer workers")
        self.urls, self.stream, self.n_streams, self.cfg = urls, stream, n_streams, cfg
        self.checksums = checksums
        self.stats = Stats()
        self._cache: tuple[tuple[int, int], list] | None = None
        self._told: set[tuple[int, str]] = set()  # (shard, why): each shard's problem is told once

    def _skip(self, shard: int, why: str, message: str) -> None:
        if (shard, why) not in self._told:
            self._told.add((shard, why))
            log.warning("skipping shard %s: %s", self.urls[shard], message)

    def _read_pairs(self, shard: int) -> list:
        """A shard's pairs, read whole and checked against the index's sha256; [] if it cannot be used."""
        try:
            data = read(self.urls[shard], self.cfg.storage)
        except Unavailable as err:
            self.stats.unavailable_shards += 1
            self._skip(shard, "unavailable", str(err).removeprefix(f"{self.urls[shard]}: "))
            return []
        except OSError as err:
            self.stats.corrupt_shards += 1
            self._skip(shard, "unreadable", f"unreadable: {err}")
            return []
        expected = self.checksums[shard] if self.checksums else None
        if expected and hashlib.sha256(data).hexdigest() != expected:
            self.stats.corrupt_shards += 1
            self._skip(shard, "sha256", f"its sha256 differs from index.json ({len(data):,} bytes read)")
            return []
        pairs = []
        try:
            source = [{"url": self.urls[shard], "stream": io.BytesIO(data)}]
            for sample in tariterators.group_by_keys(tariterators.tar_file_expander(source)):
                try:
                    pairs.extend(unpack(sample))
                except ValueError as err:
                    self.stats.bad_samples += 1
                    log.warning("skipping %s", err)
        except (tarfile.TarError, OSError, ValueError) as err:
            self.stats.corrupt_shards += 1
            self._skip(shard, "corrupt", f"corrupt ({len(pairs)} pairs read before the error): {err}")
            return []  # a shard is used whole or not at all, so offsets stay meaningful
        return pairs

    def shards(self, epoch: int) -> list[int]:
        order = torch.randperm(len(self.urls), generator=_seeded(self.cfg.seed, epoch)).tolist()
        return order[self.stream::self.n_streams]

    def shard_pairs(self, shard: int, epoch: int) -> list:
        key = (shard, epoch)
        if self._cache and self._cache[0] == key:
            return self._cache[1]
        pairs = self._read_pairs(shard)
        kept = []
        for s, t in pairs:
            if (self.cfg.kind == "pairs" and len(s) <= 2) or len(t) <= 2:
                self.stats.dropped_empty += 1
            elif len(t) > self.cfg.max_target_tokens or (len(s) > self.cfg.max_source_tokens
                                                         and not self.cfg.truncate_source):
                self.stats.dropped_too_long += 1
            elif len(s) > self.cfg.max_source_tokens:
                self.stats.truncated_source += 1
                kept.append((s[:self.cfg.max_source_tokens - 1] + s[-1:], t))
            else:
                kept.append((s, t))
        perm = torch.randperm(len(kept), generator=_seeded(self.cfg.seed, epoch, shard)).tolist()
        kept = [kept[i] for i in perm]
        self._cache = (key, kept)
        return kept

    def read_window(self, epoch: int, shard_pos: int, offset: int):
        pairs, empty_epochs, waited_since = [], 0, None
        unavailable = self.stats.unavailable_shards
        while len(pairs) < self.cfg.window:
            shards = self.shards(epoch)
            if shard_pos >= len(shards):
                epoch, shard_pos, offset = epoch + 1, 0, 0
                if pairs:  # an epoch ends a window, so every batch belongs to one epoch
                    break
                if self.stats.unavailable_shards > unavailable:  # storage is down: wait for it, boundedly
                    unavailable = self.stats.unavailable_shards
                    waited_since = waited_since or time.monotonic()
                    if time.monotonic() - waited_since > self.cfg.wait_s:
                        raise RuntimeError(f"stream {self.stream}: no shard could be read for "
                                           f"{self.cfg.wait_s:.0f} s (e.g. {self.urls[shards[0]]}); check the "
                                           f"storage and rerun to resume")
                    time.sleep(self.cfg.storage.backoff_s)
                    continue
                empty_epochs += 1
                if empty_epochs > 1:
                    raise RuntimeError(f"stream {self.stream} read a whole epoch of shards and found no usable pair "
                                       f"({vars(self.stats)}): check max_source_tokens, max_target_tokens and "
                                       f"long_source")
                continue
            shard_pairs = self.shard_pairs(shards[shard_pos], epoch)
            take = shard_pairs[offset:offset + self.cfg.window - len(pairs)]
            pairs.extend(take)
            offset += len(take)
            if offset >= len(shard_pairs):
                shard_pos, offset = shard_pos + 1, 0
        if shard_pos >= len(self.shards(epoch)):  # the next window starts the next epoch
            epoch, shard_pos, offset = epoch + 1, 0, 0
        return pairs, (epoch, shard_pos, offset)

    def batches(self, state: dict):
        """Yields (Batch, state after this batch)."""
        state = dict(state)
        while True:
            pairs, after = self.read_window(state["epoch"], state["shard_pos"], state["offset"])
            gen = _seeded(self.cfg.seed, self.stream, state["window"], 1)
            groups = token_budget_batches([max(len(s), len(t)) for s, t in pairs], self.cfg.token_budget, gen)
            for i in range(state["done"], len(groups)):
                idx = groups[i]
                gen = _seeded(self.cfg.seed, self.stream, state["window"], 2, i)
                if self.cfg.kind == "blocks":
                    batch = make_pretrain_batch([pairs[j][1] for j in idx], gen, aux_order=self.cfg.aux_order)
                else:
                    batch = make_batch([pairs[j][0] for j in idx], [pairs[j][1] for j in idx], gen, self.cfg.masking,
                                       self.cfg.aux_order)
                state["done"] = i + 1
                yield batch, dict(state)
            state = {"epoch": after[0], "shard_pos": after[1], "offset": after[2], "window": state["window"] + 1,
                     "done": 0}


class _Streams(IterableDataset):
    def __init__(self, urls, rank, world, cfg: LoaderConfig, states: dict, stats: dict, rotate: int, checksums):
        self.urls, self.rank, self.world, self.cfg, self.checksums = urls, rank, world, cfg, checksums
        self.states, self.stats, self.rotate = states, stats, rotate

    def __iter__(self):
        info = get_worker_info()
        n_local = max(1, self.cfg.num_workers)
        physical = info.id if info else 0
        local = (physical + self.rotate) % n_local
        g = self.rank * n_local + local
        stream = PairStream(self.urls, g, self.world * n_local, self.cfg, self.checksums)
        stream.stats = Stats(**self.stats.get(str(local), {}))
        for batch, state in stream.batches(self.states.get(str(local), new_stream_state())):
            yield {"batch": batch, "local": local, "state": state, "stats": vars(stream.stats).copy()}


class PairLoader:
    """Endless batches for one data-parallel rank; `state_dict()` describes what was consumed."""

    def __init__(self, urls: list[str], cfg: LoaderConfig, rank: int = 0, world: int = 1, state: dict | None = None,
                 checksums: list[str] | None = None):
        if not urls:
            raise ValueError("no shards given to the loader: point it at a directory written by `janus data shard`")
        for url in urls:
            if "://" not in url and not url.startswith("pipe:") and not os.path.exists(url):
                raise FileNotFoundError(f"shard {url} does not exist: check the path or rerun `janus data shard`")
        self.urls, self.cfg, self.rank, self.world = list(urls), cfg, rank, world
        self.checksums = list(checksums) if checksums else None  # each shard's sha256 from the index
        state = state or {}
        self.streams: dict = dict(state.get("streams", {}))
        self.next_local: int = state.get("next_local", 0)
        self.stats = {str(k): v for k, v in state.get("stats", {}).items()}

    def __iter__(self):
        ds = _Streams(self.urls, self.rank, self.world, self.cfg, dict(self.streams), dict(self.stats),
                      self.next_local, self.checksums)
        loader = DataLoader(ds, batch_size=None, num_workers=self.cfg.num_workers, pin_memory=torch.cuda.is_available(),
                            persistent_workers=False, prefetch_factor=2 if self.cfg.num_workers else None)
        n_local = max(1, self.cfg.num_workers)
        for item in loader:
            self.streams[str(item["local"])] = item["state"]
            self.stats[str(item["local"])] = item["stats"]
            self.next_local = (item["local"] + 1) % n_local
            yield item["batch"]

    def state_dict(self) -> dict:
        return {"streams": dict(self.streams), "next_local": self.next_local, "stats": dict(self.stats),
                "world": self.world, "num_workers": self.cfg.num_workers}

    def totals(self) -> Stats:
        total = Stats()
        for s in self.stats.values():
            total.add(Stats(**s))
        return total



def length_report(index: dict, cfg: LoaderConfig) -> dict | None:
    """What the length limits will do to a shard directory, counted from its index's length histograms
    (None for an index written without them): pairs in all, sources truncated, and the pairs dropped
    (empty or too long) as a range, since the index holds each side's lengths but not their pairing."""
    if not all("lengths" in s for s in index["shards"]):
        return None
    pairs = truncated = low = high = 0
    for shard in index["shards"]:
        src = {int(k): v for k, v in shard["lengths"]["src"].items()}
        tgt = {int(k): v for k, v in shard["lengths"]["tgt"].items()}
        n = sum(tgt.values())
        long_src = sum(v for k, v in src.items() if k > cfg.max_source_tokens)
        causes = [sum(v for k, v in tgt.items() if k <= 2 or k > cfg.max_target_tokens)]
        if cfg.kind == "pairs":
            causes.append(sum(v for k, v in src.items() if k <= 2))
        if cfg.truncate_source:
            truncated += long_src
        else:
            causes.append(long_src)
        pairs += n
        low += max(causes)
        high += min(n, sum(causes))
    return {"pairs": pairs, "truncated_source": truncated, "dropped_at_least": low, "dropped_at_most": high}
