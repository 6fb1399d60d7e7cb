"""Target masking and BART text infilling: budgets, specials, determinism."""

import math

from pathlib import Path

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


def _release_port(target: torch.Tensor, p: float = 0.7, lam: float = 2.0) -> torch.Tensor:
    """dropreg/JANUS `add_whole_word_mask` (janus/src/janus_trans_dataset.py) transcribed for one target
    with BOS and EOS, drawing from the global RNG as the release does; returns its mask."""
    probs, pk = [], math.exp(-lam)
    for k in range(128):
        probs.append(pk)
        if pk < 1e-7:
            break
        pk *= lam / (k + 1)
    spans = torch.distributions.Categorical(torch.tensor(probs))
    n = target.size(0)
    budget = int(math.ceil(n * p))
    lengths = spans.sample(sample_shape=(budget,))
    cum = torch.cumsum(lengths, 0)
    while cum[-1] < budget:
        lengths = torch.cat([lengths, spans.sample(sample_shape=(budget,))])
        cum = torch.cumsum(lengths, 0)
    i = 0
    while cum[i] < budget and i + 1 < n:
        i += 1
    lengths[i] = budget - (0 if i == 0 else cum[i - 1])
    lengths = lengths[:i + 1]
    indices = torch.randperm(n)[:i + 1]
    lengths[indices + lengths > n] = 1
    lengths -= 1
    mask = torch.zeros(n, dtype=torch.bool)
    while indices.size(0) > 0:
        keep = lengths >= 0
        indices, lengths = indices[keep], lengths[keep]
        mask[indices] = True
        lengths -= 1
        indices += 1
    mask[0] = mask[-1] = False
    return mask


def _stats(masks: list[torch.Tensor]) -> tuple[float, float]:
    """(share of content tokens masked, mean length of a run of masked tokens)."""
    content = sum(len(m) - 2 for m in masks)
    masked = sum(int(m.sum()) for m in masks)
    runs = sum(int(m[0]) + int((m[1:] & ~m[:-1]).sum()) for m in masks)
    return masked / content, masked / max(1, runs)


def test_release_masking_has_the_statistics_of_the_authors_code(tokenizer):
    from janus.noising import release_span_mask

    sample = Path(__file__).parent.parent / "cluster" / "data" / "libreoffice-help-en-de.tsv"
    targets = [torch.tensor(tokenizer.encode(line.split("\t")[1])) for line in sample.read_text().splitlines()]
    torch.manual_seed(0)
    theirs = [_release_port(t) for t in targets]
    gen = torch.Generator().manual_seed(0)  # the same stream of draws the release takes from the global RNG
    ours = [release_span_mask(t[None], 0, gen)[0] for t in targets]
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))  # mask for mask, on 1,200 real targets
    share, run = _stats(ours)
    assert 0.50 < share < 0.62 and run > 2  # ~56% of content tokens, well below span_mask's exact 70%
    exact = _stats([span_mask(t[None], 0, torch.Generator().manual_seed(1))[0] for t in targets[:200]])
    assert exact[0] > 0.69
    batch = pad_batch([t.tolist() for t in targets[:64]])
    masked = release_span_mask(batch, 0, torch.Generator().manual_seed(3))
    lengths = batch.ne(0).sum(1)
    assert not masked[:, 0].any() and not masked[torch.arange(64), lengths - 1].any() and not (masked & batch.eq(0)).any()
    assert torch.equal(masked, release_span_mask(batch, 0, torch.Generator().manual_seed(3)))
