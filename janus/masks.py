"""Decoder items and attention masks for the three distributions of JANUS.

A decoder call sees a flat sequence of items (token, position) and a boolean mask
mask[b, row, col] = True when item `row` may attend to item `col`. The passes lay items out as:

  AR pass:  [content: bos y1 .. y(n-1) at 0..n-1] [query: MASK at 1..n]
            content is causal; query t sees content 0..t-1 and predicts y_t.
  NAR pass: [A: y with masked positions -> MASK, at 0..n] [B: truth of masked items] [Q: MASK per masked item]
            A is bidirectional and never sees B or Q            -> P_NAR (CMLM)
            copy i sees unmasked A, MASK placeholders of j > i, copies j <= i
            query i sees unmasked A, MASK placeholders of j >= i, copies j < i  -> P_AUX
Masked items are listed in generation order (left to right, or a permutation for the XLNet
variant), so "j < i" means "earlier in that order".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Items:
    tokens: torch.Tensor  # [B, T]
    positions: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T, Tk] bool


def _ensure_nonempty(mask: torch.Tensor) -> torch.Tensor:
    """Rows that may see nothing (padding items) are let see column 0 (BOS) so softmax stays finite;
    their outputs are never used."""
    empty = ~mask.any(-1, keepdim=True)
    first = torch.zeros_like(mask)
    first[..., 0] = True
    return mask | (empty & first)


def ar_items(tgt: torch.Tensor, pad_id: int, mask_id: int) -> Items:
    """AR pass over tgt [B, L] (bos .. eos, padded). Query row t-1 predicts tgt[:, t] for t = 1..L-1."""
    b, length = tgt.shape
    n = length - 1
    dev = tgt.device
    content = tgt[:, :-1]
    ar = torch.arange(n, device=dev)
    causal = ar.view(1, n) <= ar.view(n, 1)  # [row, col]: col <= row
    key_ok = content.ne(pad_id).unsqueeze(1)  # [B, 1, n]
    content_rows = causal.unsqueeze(0) & key_ok
    # query row i sits at position i+1 and sees content 0..i: the same causal pattern as content row i
    query_rows = content_rows
    no_query_cols = torch.zeros(b, n, n, dtype=torch.bool, device=dev)
    mask = torch.cat([torch.cat([content_rows, no_query_cols], 2), torch.cat([query_rows, no_query_cols], 2)], 1)
    tokens = torch.cat([content, torch.full_like(content, mask_id)], 1)
    positions = torch.cat([ar, ar + 1]).unsqueeze(0).expand(b, -1)
    return Items(tokens, positions, _ensure_nonempty(mask))


def nar_items(noised: torch.Tensor, pad_id: int) -> Items:
    """NAR content stream alone (CMLM): bidirectional over the non-pad items."""
    b, length = noised.shape
    key_ok = noised.ne(pad_id).unsqueeze(1).expand(b, length, length)
    positions = torch.arange(length, device=noised.device).unsqueeze(0).expand(b, -1)
    return Items(noised, positions, _ensure_nonempty(key_ok.clone()))


def masked_items(masked: torch.Tensor, order: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """From a bool [B, L] masked set, the positions of masked items [B, K] in generation order and
    their validity [B, K]. `order` [B, L] gives each position's rank (left to right if None)."""
    b, length = masked.shape
    rank = torch.arange(length, device=masked.device).expand(b, -1) if order is None else order
    # unmasked positions sort after every masked one
    key = torch.where(masked, rank, rank.new_full((), length * 2) + torch.arange(length, device=masked.device))
    mpos = key.argsort(dim=1, stable=True)
    k = int(masked.sum(1).max()) if masked.any() else 0
    mpos = mpos[:, :k]
    valid = torch.arange(k, device=masked.device).unsqueeze(0) < masked.sum(1, keepdim=True)
    return torch.where(valid, mpos, torch.zeros_like(mpos)), valid


def janus_nar_items(tgt: torch.Tensor, noised: torch.Tensor, mpos: torch.Tensor, mvalid: torch.Tensor,
                    pad_id: int, mask_id: int) -> Items:
    """The NAR pass with the AUX query stream: [A | B copies | Q queries], see module doc."""
    b, length = noised.shape
    k = mpos.shape[1]
    dev = noised.device
    not_pad = noised.ne(pad_id)
    masked = torch.zeros(b, length, dtype=torch.bool, device=dev)
    masked.scatter_(1, mpos, mvalid)
    unmasked_ok = (not_pad & ~masked).unsqueeze(1)  # [B, 1, L]

    # placeholder[b, j, c]: A column c holds the MASK of masked item j
    placeholder = (mpos.unsqueeze(-1) == torch.arange(length, device=dev)) & mvalid.unsqueeze(-1)
    ij = torch.arange(k, device=dev)
    later = (ij.view(1, k) > ij.view(k, 1)).float()  # [i, j]: j > i
    same_or_later = (ij.view(1, k) >= ij.view(k, 1)).float()
    ph = placeholder.float()
    later_ph = torch.einsum("ij,bjc->bic", later, ph) > 0
    same_or_later_ph = torch.einsum("ij,bjc->bic", same_or_later, ph) > 0

    col_valid = mvalid.unsqueeze(1)  # [B, 1, K]
    copies_upto = (ij.view(1, k) <= ij.view(k, 1)).unsqueeze(0) & col_valid  # copy j <= i
    copies_before = (ij.view(1, k) < ij.view(k, 1)).unsqueeze(0) & col_valid  # copy j < i
    row_valid = mvalid.unsqueeze(-1)

    a_rows = torch.cat([not_pad.unsqueeze(1).expand(b, length, length),
                        torch.zeros(b, length, 2 * k, dtype=torch.bool, device=dev)], 2)
    b_rows = torch.cat([(unmasked_ok | later_ph) & row_valid, copies_upto & row_valid,
                        torch.zeros(b, k, k, dtype=torch.bool, device=dev)], 2)
    q_rows = torch.cat([(unmasked_ok | same_or_later_ph) & row_valid, copies_before & row_valid,
                        torch.zeros(b, k, k, dtype=torch.bool, device=dev)], 2)
    mask = torch.cat([a_rows, b_rows, q_rows], 1)

    truth = tgt.gather(1, mpos).masked_fill(~mvalid, pad_id)
    queries = torch.full_like(mpos, mask_id).masked_fill(~mvalid, pad_id)
    tokens = torch.cat([noised, truth, queries], 1)
    positions = torch.cat([torch.arange(length, device=dev).expand(b, -1), mpos, mpos], 1)
    return Items(tokens, positions, _ensure_nonempty(mask))


def bang_items(content: torch.Tensor, streams: int, pad_id: int, mask_id: int, cross_stream: bool = False) -> Items:
    """BANG's decoder (Qi et al., 2021) in the same backbone: a main stream and `streams` predicting streams.

    content [B, n]: main-stream tokens at positions 0..n-1 (bos y1 .. y(n-1) in training). Items are
    [main 0..n-1][stream 1 at 1..n][stream 2 at 1..n]...; the query of stream k at position t predicts
    y_t with the k-1 tokens before it hidden.

    cross_stream=False is BANG's released code (microsoft/BANG `ngram_attention_bias`): stream k at t sees
    main-stream positions <= max(t-k, 0), so BOS is always visible, and no other predicting item.
    cross_stream=True is the paper's "cross-stream visible" description as the spec reconstructs it: main
    positions <= t-k and, at each hidden position j = t-k+1..t-1, the [MASK] of stream k-(t-j).
    One deviation from the released code in both: a predicting item does not attend to itself (its own
    state reaches it through the residual), as in JANUS's AR query stream, so stream 1 is exactly the
    AR pass of `ar_items` and the AR decoders serve a BANG model unchanged."""
    b, n = content.shape
    dev = content.device
    t = torch.arange(1, n + 1, device=dev)  # query positions
    j = torch.arange(n, device=dev)  # main-stream positions
    key_ok = content.ne(pad_id).unsqueeze(1)  # [B, 1, n]
    main_rows = (j.view(1, n) <= j.view(n, 1)).unsqueeze(0) & key_ok
    rows = [torch.cat([main_rows, torch.zeros(b, n, streams * n, dtype=torch.bool, device=dev)], 2)]
    for k in range(1, streams + 1):
        last_seen = t - k if cross_stream else (t - k).clamp(min=0)
        sees_main = (j.view(1, n) <= last_seen.view(n, 1)).unsqueeze(0) & key_ok  # [B, n(t), n(j)]
        blocks = []
        for m in range(1, streams + 1):  # stream m's item at position t - (k - m), for m < k
            if cross_stream and m < k:
                cross = t.view(1, n) == (t - (k - m)).view(n, 1)
            else:
                cross = torch.zeros(n, n, dtype=torch.bool, device=dev)
            blocks.append(cross.unsqueeze(0).expand(b, n, n))
        rows.append(torch.cat([sees_main, *blocks], 2))
    mask = torch.cat(rows, 1)
    queries = torch.full((b, streams * n), mask_id, dtype=content.dtype, device=dev)
    tokens = torch.cat([content, queries], 1)
    positions = torch.cat([j, t.repeat(streams)]).unsqueeze(0).expand(b, -1)
    return Items(tokens, positions, _ensure_nonempty(mask))
