"""Target masking and BART text infilling: budgets, specials, determinism."""

import math

import torch

from janus.noising import span_mask, text_infilling, uniform_mask
from janus.tokenizer import pad_batch


def _tgt(tokenizer, real_pairs, n=32):
    return pad_batch([tokenizer.encode(t) for _, t in real_pairs[:n]])


def test_span_mask_budget_and_specials(tokenizer, real_pairs):
    tgt = _tgt(tokenizer, real_pairs)
    masked = span_mask(tgt, 0, torch.Generator().manual_seed(0))
    lengths = tgt.ne(0).sum(1)
    for row in range(tgt.shape[0]):
        n = int(lengths[row])
        assert int(masked[row].sum()) == math.ceil(0.7 * (n - 2))
        assert not masked[row, 0] and not masked[row, n - 1] and not masked[row, n:].any()


def test_span_mask_makes_spans_and_is_deterministic(tokenizer, real_pairs):
    tgt = _tgt(tokenizer, real_pairs)
    a = span_mask(tgt, 0, torch.Generator().manual_seed(5))
    b = span_mask(tgt, 0, torch.Generator().manual_seed(5))
    c = span_mask(tgt, 0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Poisson(2) spans: masked tokens cluster, so runs are on average longer than 1
    runs = sum(int((row[1:] & ~row[:-1]).sum()) for row in a)
    assert int(a.sum()) / runs > 1.5


def test_uniform_mask_counts(tokenizer, real_pairs):
    tgt = _tgt(tokenizer, real_pairs)
    masked = uniform_mask(tgt, 0, torch.Generator().manual_seed(0))
    counts = masked.sum(1)
    lengths = tgt.ne(0).sum(1) - 2
    assert bool((counts >= 1).all()) and bool((counts <= lengths).all())
    assert not masked[:, 0].any()
    assert len(set(counts.tolist())) > 5  # the count itself is random


def test_text_infilling(tokenizer, real_pairs):
    doc = tokenizer.encode(" ".join(s for s, _ in real_pairs[:10]), bos_eos=False)
    gen = torch.Generator().manual_seed(0)
    source, target, masked = text_infilling(doc, 4, 2, 3, gen)
    assert target == [2, *doc, 3]
    assert len(masked) == math.ceil(0.3 * len(doc)) and len(set(masked)) == len(masked)
    assert all(0 < p < len(target) - 1 for p in masked)
    replaced_spans = source.count(4)
    assert 0 < replaced_spans
    # visible spans stay in the source: its length is target - masked tokens of replaced spans + one <mask> each
    assert len(doc) + 2 - len(masked) + replaced_spans <= len(source) < len(target)
    # same seed, same noise
    assert text_infilling(doc, 4, 2, 3, torch.Generator().manual_seed(0)) == (source, target, masked)
