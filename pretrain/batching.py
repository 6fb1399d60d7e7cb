"""Token-budget batches bucketed by length, and padding into model tensors."""

from __future__ import annotations

import torch

from janus.noising import permutation_order, target_mask, text_infilling
from janus.objective import Batch
from janus.tokenizer import BOS, EOS, MASK, PAD, pad_batch


def token_budget_batches(lengths: list[int], budget: int, gen: torch.Generator) -> list[list[int]]:
    """Indices grouped so each batch holds about `budget` tokens of similar length (sorted by length
    with random tie order, cut by budget, batch order shuffled by `gen`)."""
    jitter = torch.rand(len(lengths), generator=gen).tolist()
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], jitter[i]))
    batches, current, longest = [], [], 0
    for i in order:
        longest = max(longest, lengths[i])
        if current and longest * (len(current) + 1) > budget:
            batches.append(current)
            current, longest = [], lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def make_batch(src: list[list[int]], tgt: list[list[int]], gen: torch.Generator, masking: str = "release",
               aux_order: str = "left_to_right") -> Batch:
    tgt_t = pad_batch(tgt)
    masked = target_mask(tgt_t, PAD, gen, kind=masking)
    order = permutation_order(tgt_t, gen) if aux_order == "permutation" else None
    return Batch(pad_batch(src), tgt_t, masked, order)


def make_pretrain_batch(blocks: list[list[int]], gen: torch.Generator, ratio: float = 0.3, lam: float = 3.0,
                        decoder_span_p: float = 0.5, aux_order: str = "left_to_right") -> Batch:
    """BART text infilling with JANUS's decoder-side spans for each block of document tokens."""
    src, tgt, masked_pos = [], [], []
    for block in blocks:
        s, t, m = text_infilling(block, MASK, BOS, EOS, gen, ratio, lam, decoder_span_p)
        src.append(s)
        tgt.append(t)
        masked_pos.append(m)
    tgt_t = pad_batch(tgt)
    masked = torch.zeros_like(tgt_t, dtype=torch.bool)
    for row, positions in enumerate(masked_pos):
        masked[row, positions] = True
    order = permutation_order(tgt_t, gen) if aux_order == "permutation" else None
    return Batch(pad_batch(src), tgt_t, masked, order)
