"""Target-side masking (NMT) and BART text infilling (pretraining).

Every function draws from an explicit `torch.Generator` and never from the global RNG, so the data
path can save and restore its random state exactly.
"""

from __future__ import annotations

import math

import torch


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=gen))


def _poisson(lam: float, gen: torch.Generator) -> int:
    return int(torch.poisson(torch.tensor([lam]), generator=gen))


def sample_spans(length: int, budget: int, lam: float, gen: torch.Generator) -> list[tuple[int, int]]:
    """Non-overlapping spans [start, end) over range(length) covering exactly `budget` positions;
    span lengths ~ Poisson(lam) (at least 1), random starts. Returned sorted by start."""
    budget = min(budget, length)
    covered = [False] * length
    spans: list[tuple[int, int]] = []
    count = 0
    while count < budget:
        span = max(1, _poisson(lam, gen))
        start = _randint(length, gen)
        if covered[start]:
            continue
        end = start
        while end < length and end - start < span and not covered[end] and count < budget:
            covered[end] = True
            end += 1
            count += 1
        spans.append((start, end))
    return sorted(spans)


def _content_lengths(tgt: torch.Tensor, pad_id: int) -> list[int]:
    """Number of maskable tokens per row: everything but BOS, EOS and padding."""
    return [int(n) - 2 for n in tgt.ne(pad_id).sum(1)]


def span_mask(tgt: torch.Tensor, pad_id: int, gen: torch.Generator, ratio: float = 0.7,
              lam: float = 2.0) -> torch.Tensor:
    """JANUS NMT masking: ceil(ratio*|y|) target tokens in Poisson(lam) spans; BOS/EOS never masked."""
    masked = torch.zeros_like(tgt, dtype=torch.bool)
    for row, m in enumerate(_content_lengths(tgt, pad_id)):
        if m <= 0:
            continue
        for s, e in sample_spans(m, math.ceil(ratio * m), lam, gen):
            masked[row, 1 + s:1 + e] = True
    return masked


def _poisson_pmf(lam: float, floor: float = 1e-7, most: int = 128) -> torch.Tensor:
    """P(k) for k = 0, 1, ... until it falls below `floor` (the release's truncated span distribution)."""
    probs, p = [], math.exp(-lam)
    for k in range(most):
        probs.append(p)
        if p < floor:
            break
        p *= lam / (k + 1)
    return torch.tensor(probs)


def release_span_mask(tgt: torch.Tensor, pad_id: int, gen: torch.Generator, ratio: float = 0.7,
                      lam: float = 2.0) -> torch.Tensor:
    """The masking of the authors' release (dropreg/JANUS, `add_whole_word_mask` in
    janus/src/janus_trans_dataset.py), which the paper's results used: a budget of ceil(ratio * n) over
    the n tokens *with* BOS and EOS; span lengths drawn from Poisson(lam), zero-length draws included,
    until they cover the budget, the last one trimmed to it; one distinct random start per span, so spans
    may overlap; a span that would run past the end masks one token; BOS and EOS unmasked afterwards.
    On real targets that masks about 56% of the content tokens, where `span_mask` masks exactly 70%."""
    probs = _poisson_pmf(lam)
    masked = torch.zeros_like(tgt, dtype=torch.bool)
    for row, n in enumerate(int(x) for x in tgt.ne(pad_id).sum(1)):
        if n <= 2:
            continue
        budget = math.ceil(n * ratio)
        lengths = torch.multinomial(probs, budget, replacement=True, generator=gen)
        while int(lengths.sum()) < budget:
            lengths = torch.cat([lengths, torch.multinomial(probs, budget, replacement=True, generator=gen)])
        covered = lengths.cumsum(0)
        spans = min(int(torch.searchsorted(covered, budget)), n - 1) + 1  # the first span reaching the budget
        lengths = lengths[:spans]
        lengths[-1] = budget - (int(covered[spans - 2]) if spans > 1 else 0)
        starts = torch.randperm(n, generator=gen)[:spans]
        lengths[starts + lengths > n] = 1
        for start, length in zip(starts.tolist(), lengths.tolist()):
            masked[row, start:start + length] = True
        masked[row, 0] = masked[row, n - 1] = False
    return masked


def uniform_mask(tgt: torch.Tensor, pad_id: int, gen: torch.Generator) -> torch.Tensor:
    """CMLM masking: a count ~ U(1, |y|) of uniformly chosen target tokens; BOS/EOS never masked."""
    masked = torch.zeros_like(tgt, dtype=torch.bool)
    for row, m in enumerate(_content_lengths(tgt, pad_id)):
        if m <= 0:
            continue
        count = 1 + _randint(m, gen)
        chosen = torch.randperm(m, generator=gen)[:count]
        masked[row, 1 + chosen] = True
    return masked


def target_mask(tgt: torch.Tensor, pad_id: int, gen: torch.Generator, kind: str = "span", ratio: float = 0.7,
                lam: float = 2.0) -> torch.Tensor:
    if kind == "release":
        return release_span_mask(tgt, pad_id, gen, ratio, lam)
    if kind == "span":
        return span_mask(tgt, pad_id, gen, ratio, lam)
    if kind == "uniform":
        return uniform_mask(tgt, pad_id, gen)
    raise ValueError(f"target masking kind {kind!r} is not one of {', '.join(MASKINGS)}")


MASKINGS = ("release", "span", "uniform")


def text_infilling(tokens: list[int], mask_id: int, bos_id: int, eos_id: int, gen: torch.Generator,
                   ratio: float = 0.3, lam: float = 3.0, decoder_span_p: float = 0.5
                   ) -> tuple[list[int], list[int], list[int]]:
    """BART text infilling with JANUS's decoder-side variant, for one document `tokens` (no specials).

    Returns (source, target, masked positions in target). Spans cover ceil(ratio*n) tokens; each span is,
    with probability 1 - decoder_span_p, replaced by one <mask> in the source, otherwise left visible in
    the source. The decoder's NAR input masks the tokens of both kinds.
    """
    n = len(tokens)
    spans = sample_spans(n, math.ceil(ratio * n), lam, gen) if n else []
    source = [bos_id]
    masked_positions: list[int] = []
    cursor = 0
    for s, e in spans:
        source.extend(tokens[cursor:s])
        replaced = float(torch.rand(1, generator=gen)) >= decoder_span_p
        source.extend([mask_id] if replaced else tokens[s:e])
        masked_positions.extend(range(1 + s, 1 + e))  # +1 for BOS in the target
        cursor = e
    source.extend(tokens[cursor:])
    source.append(eos_id)
    return source, [bos_id, *tokens, eos_id], masked_positions


def permutation_order(tgt: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """XLNet variant of P_AUX: a random generation rank for every position of each row ([B, L])."""
    return torch.stack([torch.randperm(tgt.shape[1], generator=gen) for _ in range(tgt.shape[0])])
