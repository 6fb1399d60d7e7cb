"""AR incremental decoding equals the full pass; beam 1 equals greedy; mask-predict follows its schedule."""

import pytest
import torch

from janus.config import preset
from janus.decoding import ARStepper, ar_beam, ar_greedy, length_candidates, mask_predict
from janus.masks import ar_items, nar_items
from janus.model import JanusModel
from janus.tokenizer import pad_batch


@pytest.fixture(scope="module")
def setup(tokenizer, real_pairs):
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
    pairs = real_pairs[10:16]
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    return model, src, tgt


@torch.no_grad()
def test_incremental_ar_equals_full_pass(setup):
    model, src, tgt = setup
    items = ar_items(tgt, 0, 4)
    h = model.decode(model.encode(src), items.tokens, items.positions, items.mask)
    full = torch.log_softmax(model.logits(h[:, tgt.shape[1] - 1:]), -1)
    stepper = ARStepper(model, model.encode(src))
    for t in range(tgt.shape[1] - 1):
        step = stepper.step(tgt[:, t])
        keep = tgt[:, t + 1].ne(0)  # rows still inside their target
        ref = full[:, t].clone()
        ref[:, [0, 2, 4]] = float("-inf")  # the decoder never emits pad, bos, mask
        ref = torch.log_softmax(ref, -1)
        assert torch.allclose(step[keep], ref[keep], atol=1e-5), f"step {t} differs from the full pass"


@torch.no_grad()
def test_beam1_equals_greedy(setup):
    model, src, _ = setup
    greedy = ar_greedy(model, src, max_len=20)
    beam = ar_beam(model, src, beam=1, max_len=20)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam]
    assert any(h.tokens for h in greedy)


@torch.no_grad()
def test_beam_search_scores_at_least_greedy(setup):
    model, src, _ = setup
    greedy = ar_greedy(model, src, max_len=12)
    beam = ar_beam(model, src, beam=4, length_penalty=0.0, max_len=12)
    for g, b in zip(greedy, beam):
        assert b.score >= g.score - 1e-4  # with no length penalty beam optimises the same sum


@torch.no_grad()
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
def test_beam_scores_are_the_sum_of_log_probs_over_length_to_the_penalty(setup, length_penalty):
    """Each returned hypothesis scores sum(log p) / len^length_penalty (EOS counted), with the log-probs
    recomputed here by feeding its tokens back; the ranking therefore follows the penalty."""
    model, src, _ = setup
    cfg = model.cfg
    beams = ar_beam(model, src, beam=3, length_penalty=length_penalty, max_len=14)
    for i, hyp in enumerate(beams):
        stepper = ARStepper(model, model.encode(src[i:i + 1]))
        total, prev = 0.0, cfg.bos_id
        for token in [*hyp.tokens, cfg.eos_id]:
            total += float(stepper.step(torch.tensor([prev]))[0, token])
            prev = token
        assert hyp.score == pytest.approx(total / (len(hyp.tokens) + 1) ** length_penalty, abs=1e-4)


@torch.no_grad()
def test_mask_predict_T1_is_one_argmax_pass(setup):
    model, src, _ = setup
    hyps = mask_predict(model, src, iterations=1, length_beam=1)
    enc = model.encode(src)
    lengths = enc.length_logits.argmax(-1).clamp(3, model.cfg.max_positions)
    for i, h in enumerate(hyps):
        n = int(lengths[i])
        tokens = torch.full((1, n), 4)
        tokens[0, 0], tokens[0, -1] = 2, 3
        items = nar_items(tokens, 0)
        one = type(enc)(enc.states[i:i + 1], enc.pad[i:i + 1], enc.length_logits[i:i + 1])
        logits = model.logits(model.decode(one, items.tokens, items.positions, items.mask))[0]
        logits[:, [0, 2, 3, 4]] = float("-inf")
        assert h.tokens == logits.argmax(-1)[1:-1].tolist()


@torch.no_grad()
def test_mask_predict_remasking_schedule(setup):
    model, src, _ = setup
    trace = []
    T = 4
    mask_predict(model, src, iterations=T, length_beam=3, trace=trace)
    assert len(trace) == T  # the release forces all T passes
    n_tokens = trace[0].sum(1)  # pass 0 predicts every non-BOS/EOS token
    for t in range(1, T):
        assert torch.equal(trace[t].sum(1), (n_tokens * (T - t)) // T), f"pass {t} re-masked the wrong count"
        assert not trace[t][:, 0].any()  # BOS never re-masked


def test_length_beam_is_centred_on_the_prediction():
    logits = torch.zeros(2, 50)
    logits[0, 10] = 5
    logits[1, 3] = 5
    got = length_candidates(logits, 5, 3, 40)
    assert got.tolist() == [[10, 9, 11, 8, 12], [3, 3, 4, 3, 5]]
    with pytest.raises(ValueError, match="length_beam"):
        length_candidates(logits, 6, 3, 40)


@torch.no_grad()
def test_ar_output_is_capped_per_example_by_its_source_length(tokenizer, real_pairs):
    """An under-trained model that never ends stops at 2n + 10 tokens for a source of n, each example at
    its own cap, and `translate` returns the outputs in the order of the sources."""
    from janus.generate import MAX_LEN_A, MAX_LEN_B, Mode, translate

    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size)).eval()
    model.embed.weight[model.cfg.eos_id].zero_()  # EOS logit 0 against ~N(0, 1) others: never the argmax
    sources = [real_pairs[0][0], " ".join(s for s, _ in real_pairs[1:4]), real_pairs[4][0]]
    n = [len(tokenizer.encode(s)) for s in sources]
    src = pad_batch([tokenizer.encode(s) for s in sources])
    caps = torch.tensor([int(MAX_LEN_A * k) + MAX_LEN_B + 2 for k in n])
    for hyps in (ar_greedy(model, src, max_len=caps), ar_beam(model, src, beam=3, max_len=caps)):
        assert [len(h.tokens) for h in hyps] == (caps - 2).tolist()  # each ran to its own cap, not the batch's
    together = translate(model, tokenizer, sources, Mode("ar_greedy", "ar_greedy"), batch_size=2)
    alone = [translate(model, tokenizer, [s], Mode("ar_greedy", "ar_greedy"))[0] for s in sources]
    assert together == alone
