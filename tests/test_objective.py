"""Every term of the objective, its weights, and the baselines selected by config."""

import pytest
import torch

from janus.config import preset
from janus.model import JanusModel
from janus.noising import span_mask
from janus.objective import OBJECTIVES, Batch, compute_loss, objective
from janus.tokenizer import pad_batch


@pytest.fixture(scope="module")
def setup(tokenizer, real_pairs):
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size))
    pairs = real_pairs[:8]
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    return model, Batch(src, tgt, span_mask(tgt, 0, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name, terms", [
    ("janus", {"ar", "nar", "aux", "length", "kl_ar_nar", "kl_ar_aux", "kl_nar_aux"}),
    ("janus-pretrain", {"ar", "nar", "aux", "length", "kl_ar_aux", "kl_nar_aux"}),  # a KL at weight 0 is skipped
    ("ar", {"ar"}),
    ("ar-cmlm", {"ar", "nar", "length"}),
    ("cmlm", {"nar", "length"}),
])
def test_baselines_compute_only_their_terms(setup, name, terms):
    model, batch = setup
    total, got = compute_loss(model, batch, objective(name))
    assert set(got) == terms
    weights = vars(objective(name))
    assert torch.allclose(total, sum(weights[k] * v for k, v in got.items()))


def test_each_weight_is_configurable(setup):
    model, batch = setup
    base_total, terms = compute_loss(model, batch, objective("janus"))
    for name in ("ar", "nar", "aux", "length", "kl_ar_nar", "kl_ar_aux", "kl_nar_aux"):
        w = getattr(objective("janus"), name)
        total, _ = compute_loss(model, batch, objective("janus", **{name: w + 1.0}))
        assert torch.allclose(total, base_total + terms[name], atol=1e-5), name


def test_kl_scale_multiplies_the_three_kl_weights_only(setup):
    model, batch = setup
    base_total, terms = compute_loss(model, batch, objective("janus"))
    total, _ = compute_loss(model, batch, objective("janus", 0.1))
    kl = terms["kl_ar_nar"] + 3.0 * terms["kl_ar_aux"] + terms["kl_nar_aux"]
    assert torch.allclose(total, base_total - 0.9 * kl, atol=1e-5)
    scaled = objective("janus", 0.0)
    assert (scaled.kl_ar_nar, scaled.kl_ar_aux, scaled.kl_nar_aux, scaled.ar, scaled.nar, scaled.aux) == \
        (0.0, 0.0, 0.0, 1.0, 0.5, 0.5)


def test_released_nmt_weights_and_pretraining_formula():
    nmt = objective("janus")
    assert (nmt.ar, nmt.kl_ar_nar, nmt.kl_ar_aux, nmt.aux, nmt.nar, nmt.length, nmt.kl_nar_aux) == \
        (1.0, 1.0, 3.0, 0.5, 0.5, 0.1, 1.0)
    assert nmt.label_smoothing == 0.1
    pre = objective("janus-pretrain")
    assert (pre.ar, pre.nar, pre.aux, pre.kl_nar_aux, pre.kl_ar_aux, pre.kl_ar_nar) == (0.5, 0.5, 0.5, 0.5, 0.5, 0.0)
    assert set(OBJECTIVES) >= {"janus", "janus-pretrain", "ar", "cmlm"}


def test_label_smoothing_matches_torch(setup):
    """Our vocab-parallel LS-CE equals torch's cross_entropy(label_smoothing) at TP=1."""
    model, batch = setup
    _, terms = compute_loss(model, batch, objective("ar", label_smoothing=0.1))
    from janus.masks import ar_items
    items = ar_items(batch.tgt, 0, 4)
    h = model.decode(model.encode(batch.src), items.tokens, items.positions, items.mask)
    logits = model.logits(h[:, batch.tgt.shape[1] - 1:])
    keep = [i for i in range(logits.shape[-1]) if i not in (0, 2, 4)]  # pad, BOS and [MASK] are never targets
    target = batch.tgt[:, 1:].flatten()
    remapped = torch.tensor([keep.index(int(t)) if int(t) else -100 for t in target])
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1)[:, keep], remapped, ignore_index=-100,
                                            label_smoothing=0.1)
    assert torch.allclose(terms["ar"], ref, atol=1e-5)


def test_ar_rdrop_adds_the_consistency_of_two_dropout_passes(tokenizer, setup):
    _, batch = setup
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size, dropout=0.3)).train()
    torch.manual_seed(1)
    total, terms = compute_loss(model, batch, objective("ar-rdrop"))
    assert set(terms) == {"ar", "rdrop"} and float(terms["rdrop"].detach()) > 0  # two dropout masks disagree
    assert torch.allclose(total, terms["ar"] + 5.0 * terms["rdrop"])
    terms["rdrop"].backward()  # the consistency term itself trains the model
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    model.eval()  # no dropout: the two passes are one, and the objective is plain AR
    total, terms = compute_loss(model, batch, objective("ar-rdrop"))
    plain, _ = compute_loss(model, batch, objective("ar"))
    assert float(terms["rdrop"].detach()) < 1e-6 and torch.allclose(total, plain, atol=1e-5)


def test_the_first_loss_is_near_ln_vocab(tokenizer, real_pairs):
    """At initialisation every prediction is near uniform over the vocabulary, in every stream: [MASK], the
    input of every predicting position, is never a target and its logit is pinned down (its tied output row
    would otherwise give it a logit ~sqrt(d) everywhere: the first loss was ln(V) + 3.4 to 4.1 at d 128)."""
    import math

    torch.manual_seed(0)
    model = JanusModel(preset("mini", vocab_size=tokenizer.vocab_size))
    pairs = real_pairs[:8]
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    _, terms = compute_loss(model, Batch(src, tgt, span_mask(tgt, 0, torch.Generator().manual_seed(0))),
                            objective("janus"))
    for name in ("ar", "nar", "aux"):
        assert abs(float(terms[name]) - math.log(tokenizer.vocab_size)) < 0.8, (name, float(terms[name]))
