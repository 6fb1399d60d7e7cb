"""Shards and the streaming loader, on real pairs: counts, splits, exact resume, corrupt shards."""

import hashlib
import shutil
import unicodedata

import pytest
import torch
import webdataset as wds

from pretrain.inputs import read_pairs
from pretrain.loader import LoaderConfig, PairLoader
from pretrain.shards import read_index, shard_urls, unpack, write_pair_shards


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, nmt_dir, tokenizer):
    pairs = read_pairs(nmt_dir, "train")[:2400]
    out = tmp_path_factory.mktemp("shards") / "nmt"
    write_pair_shards(pairs, tokenizer.path, out, pairs_per_shard=300, pairs_per_sample=50, workers=2)
    return out


def test_tokenizer_round_trip(tokenizer, real_pairs):
    texts = [t for pair in real_pairs[:200] for t in pair]
    same = sum(tokenizer.decode(tokenizer.encode(t)) == unicodedata.normalize("NFKC", t) for t in texts)
    assert same >= 0.98 * len(texts)


def test_shard_counts_equal_the_index(shard_dir):
    index = read_index(shard_dir)
    assert len(index["shards"]) == 8 and index["pairs"] == 2400
    for entry, url in zip(index["shards"], shard_urls(shard_dir)):
        samples = list(wds.WebDataset([url], shardshuffle=False, empty_check=False))
        pairs = [p for s in samples for p in unpack(s)]
        assert len(samples) == entry["samples"] and len(pairs) == entry["pairs"]
        assert sum(len(s) + len(t) for s, t in pairs) == entry["tokens"]
        with open(url, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"]
    assert not list(shard_dir.glob("*.tmp"))


def _key(batch):
    return [tuple(row[row.ne(0)].tolist()) for row in batch.tgt]


def test_ranks_and_workers_split_an_epoch(shard_dir):
    urls = shard_urls(shard_dir)
    cfg = LoaderConfig(token_budget=1024, window=200, num_workers=2, seed=3)
    seen = []
    for rank in range(2):
        loader = PairLoader(urls, cfg, rank=rank, world=2)
        finished = set()
        for batch in loader:
            local = (loader.next_local - 1) % 2
            state = loader.state_dict()["streams"][str(local)]
            if state["epoch"] == 0:  # the state is that of the batch's window start
                seen.append(_key(batch))
            else:
                finished.add(local)
            if finished == {0, 1}:
                break
    flat = [k for keys in seen for k in keys]
    everything = [p for url in urls for s in wds.WebDataset([url], shardshuffle=False, empty_check=False)
                  for p in unpack(s)]
    usable = [tuple(t) for s, t in everything if 2 < len(s) <= 256 and 2 < len(t) <= 256]
    assert len(flat) == len(usable)  # no pair seen twice in the epoch...
    assert sorted(flat) == sorted(usable)  # ...and none missed


def test_resume_gives_the_identical_stream(shard_dir):
    urls = shard_urls(shard_dir)
    cfg = LoaderConfig(token_budget=512, window=150, num_workers=2, seed=7)
    reference = []
    for batch in PairLoader(urls, cfg):
        reference.append(batch)
        if len(reference) == 40:
            break
    cut = int(torch.randint(5, 35, (1,), generator=torch.Generator().manual_seed(11)))
    first = PairLoader(urls, cfg)
    for i, _ in enumerate(first):
        if i + 1 == cut:
            break
    state = first.state_dict()
    resumed = PairLoader(urls, cfg, state=state)
    for ref, got in zip(reference[cut:], resumed):
        assert torch.equal(ref.src, got.src) and torch.equal(ref.tgt, got.tgt) and torch.equal(ref.masked, got.masked)


def test_truncated_shard_is_skipped_and_counted(shard_dir, tmp_path, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    victim = copy / read_index(copy)["shards"][0]["name"]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    loader = PairLoader(shard_urls(copy), LoaderConfig(token_budget=1024, window=400, num_workers=0))
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 25:
            break
    assert loader.totals().corrupt_shards >= 1
    assert "corrupt" in caplog.text


def test_bad_paths_and_empty_input_give_one_line_errors(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="does not exist") as err:
        PairLoader([str(tmp_path / "missing.tar")], LoaderConfig())
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="janus data shard"):
        shard_urls(tmp_path)
    with pytest.raises(ValueError, match="input is empty"):
        write_pair_shards([], tokenizer.path, tmp_path / "empty")


def test_pretraining_blocks_get_text_infilling(tmp_path, nmt_dir, tokenizer):
    from pretrain.inputs import read_documents
    from pretrain.shards import write_block_shards

    docs = list(read_documents([nmt_dir / "train.src"]))[:3000]
    index = write_block_shards(docs, tokenizer.path, tmp_path / "blocks", seq_len=64, docs_per_shard=1000, workers=1)
    assert index["kind"] == "blocks" and len(index["shards"]) == 3
    cfg = LoaderConfig(kind="blocks", token_budget=1024, window=100, seed=1)
    batch = next(iter(PairLoader(shard_urls(tmp_path / "blocks"), cfg)))
    assert batch.tgt.shape[1] <= 64 and bool((batch.tgt[:, 0] == 2).all())
    content = batch.tgt.ne(0).sum() - 2 * batch.tgt.shape[0]
    assert abs(float(batch.masked.sum()) / float(content) - 0.3) < 0.05  # 30% of tokens in spans
    assert bool(batch.src.eq(4).any())  # some spans replaced by <mask> in the encoder
    assert batch.src.ne(0).sum() < batch.tgt.ne(0).sum()


def test_tokenizer_training_is_deterministic_and_takes_user_inputs(tmp_path, real_pairs):
    import json

    from janus.tokenizer import Tokenizer, train_tokenizer
    from pretrain.inputs import read_documents, read_pair_input

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"src": s, "tgt": t}) + "\n" for s, t in real_pairs))
    texts = list(read_documents([jsonl]))
    assert len(texts) == 2 * len(real_pairs)
    a = train_tokenizer(texts, tmp_path / "a.model", vocab_size=600, model_type="bpe")
    b = train_tokenizer(texts, tmp_path / "b.model", vocab_size=600, model_type="bpe")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert Tokenizer(a.path).sp.piece_to_id("<mask>") == 4 and Tokenizer(a.path).sp.pad_id() == 0
    assert read_pair_input(jsonl, "train") == [tuple(p) for p in real_pairs]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not JSON"):
        list(read_documents([bad]))
