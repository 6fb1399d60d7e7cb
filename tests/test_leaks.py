"""The spec's information-flow invariants: perturb a token that must be invisible and the prediction
is bit-identical; perturb a visible one and it moves."""

import pytest
import torch

from janus.config import preset
from janus.masks import ar_items, janus_nar_items, masked_items
from janus.model import JanusModel
from janus.noising import span_mask
from janus.tokenizer import pad_batch


@pytest.fixture(scope="module")
def setup(tokenizer, real_pairs):
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
    pairs = real_pairs[:6]
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    masked = span_mask(tgt, 0, torch.Generator().manual_seed(1))
    return model, src, tgt, masked


def perturb(tgt, row, pos):
    out = tgt.clone()
    out[row, pos] = 5 + (int(tgt[row, pos]) + 7) % 900
    return out


@torch.no_grad()
def ar_logits(model, src, tgt):
    items = ar_items(tgt, 0, 4)
    h = model.decode(model.encode(src), items.tokens, items.positions, items.mask)
    return model.logits(h[:, tgt.shape[1] - 1:])  # row t-1 predicts y_t


@torch.no_grad()
def nar_aux_logits(model, src, tgt, masked):
    mpos, mvalid = masked_items(masked)
    noised = tgt.masked_fill(masked, 4)
    items = janus_nar_items(tgt, noised, mpos, mvalid, 0, 4)
    h = model.decode(model.encode(src), items.tokens, items.positions, items.mask)
    length, k = tgt.shape[1], mpos.shape[1]
    return model.logits(h[:, :length]), model.logits(h[:, length + k:]), mpos, mvalid


def test_ar_never_sees_own_or_later_tokens(setup):
    model, src, tgt, _ = setup
    base = ar_logits(model, src, tgt)
    row, n = 0, int(tgt[0].ne(0).sum())
    for t in range(1, n - 1):
        moved = ar_logits(model, src, perturb(tgt, row, t))
        # predictions of y_1..y_t (rows 0..t-1) cannot see y_t
        assert torch.equal(moved[row, :t], base[row, :t]), f"AR prediction leaked token {t}"
        # the prediction of y_(t+1) sees y_t
        assert not torch.allclose(moved[row, t], base[row, t])


def test_nar_never_sees_masked_truth(setup):
    model, src, tgt, masked = setup
    nar, _, _, _ = nar_aux_logits(model, src, tgt, masked)
    row = 0
    masked_pos = masked[row].nonzero().flatten().tolist()
    unmasked_pos = [p for p in range(1, int(tgt[row].ne(0).sum()) - 1) if p not in masked_pos]
    assert masked_pos and unmasked_pos
    for p in masked_pos:
        moved, _, _, _ = nar_aux_logits(model, src, perturb(tgt, row, p), masked)
        assert torch.equal(moved, nar), f"P_NAR saw the truth of masked position {p}"
    moved, _, _, _ = nar_aux_logits(model, src, perturb(tgt, row, unmasked_pos[0]), masked)
    assert not torch.allclose(moved[row, masked_pos], nar[row, masked_pos])


def test_aux_sees_exactly_earlier_masked_truths(setup):
    model, src, tgt, masked = setup
    _, aux, mpos, mvalid = nar_aux_logits(model, src, tgt, masked)
    row = 1
    k = int(mvalid[row].sum())
    assert k >= 3
    for j in range(k):
        _, moved, _, _ = nar_aux_logits(model, src, perturb(tgt, row, int(mpos[row, j])), masked)
        # queries i <= j must not see the truth of masked item j ...
        assert torch.equal(moved[row, : j + 1], aux[row, : j + 1]), f"P_AUX query <= {j} saw truth {j}"
        # ... and every later query does
        for i in range(j + 1, k):
            assert not torch.allclose(moved[row, i], aux[row, i]), f"P_AUX query {i} missed truth {j}"
    # other examples in the batch are untouched by this row's tokens
    assert torch.equal(moved[0], aux[0])


def test_permutation_order_changes_what_aux_queries_see(setup):
    """XLNet variant: the i-th query in a sampled order sees exactly the truths earlier in that order,
    never its own target."""
    from janus.noising import permutation_order

    model, src, tgt, masked = setup
    order = permutation_order(tgt, torch.Generator().manual_seed(4))

    @torch.no_grad()
    def aux(t):
        mpos, mvalid = masked_items(masked, order)
        items = janus_nar_items(t, t.masked_fill(masked, 4), mpos, mvalid, 0, 4)
        h = model.decode(model.encode(src), items.tokens, items.positions, items.mask)
        return model.logits(h[:, t.shape[1] + mpos.shape[1]:]), mpos, mvalid

    base, mpos, mvalid = aux(tgt)
    left_to_right, _ = masked_items(masked)
    row = 1
    k = int(mvalid[row].sum())
    assert mpos[row, :k].tolist() != left_to_right[row, :k].tolist()  # a different order ...
    assert sorted(mpos[row, :k].tolist()) == left_to_right[row, :k].tolist()  # ... of the same masked set
    for j in range(k):
        moved, _, _ = aux(perturb(tgt, row, int(mpos[row, j])))
        assert torch.equal(moved[row, : j + 1], base[row, : j + 1])  # own and later truths invisible
        for i in range(j + 1, k):
            assert not torch.allclose(moved[row, i], base[row, i])  # earlier truths in the order visible


def test_aux_order_must_match_the_batch(setup):
    from janus.objective import Batch, compute_loss, objective

    model, src, tgt, masked = setup
    with pytest.raises(ValueError, match="aux_order='permutation'"):
        compute_loss(model, Batch(src, tgt, masked), objective("janus", aux_order="permutation"))
