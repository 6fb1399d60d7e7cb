"""A tiny JANUS overfits 64 real pairs: every loss term falls by >= 90% and greedy AR then reproduces
most training targets exactly; draft-and-verify reproduces greedy AR."""

import torch

from janus.config import preset
from janus.decoding import DraftStats, ar_greedy, draft_and_verify, mask_predict
from janus.model import JanusModel
from janus.noising import span_mask
from janus.objective import Batch, compute_loss, objective
from janus.tokenizer import pad_batch


def test_tiny_model_overfits_64_real_pairs(tokenizer, real_pairs):
    pairs = [(s, t) for s, t in real_pairs if len(tokenizer.encode(t)) <= 20 and len(tokenizer.encode(s)) <= 20][:64]
    assert len(pairs) == 64
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    cfg = objective("janus", label_smoothing=0.0)  # smoothing puts a floor under CE
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(250):
        loss, terms = compute_loss(model, Batch(src, tgt, span_mask(tgt, 0, gen)), cfg)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert set(history[0]) == {"ar", "nar", "aux", "length", "kl_ar_nar", "kl_ar_aux", "kl_nar_aux"}
    final = {k: sum(h[k] for h in history[-10:]) / 10 for k in history[0]}
    for name in ("ar", "nar", "aux", "length"):
        assert final[name] <= 0.1 * history[0][name], f"{name}: {history[0][name]:.3f} -> {final[name]:.3f}"
    # The three distributions are identical at initialisation (every KL term starts at 0), so the
    # KL terms are measured from their peak during training.
    for name in ("kl_ar_nar", "kl_ar_aux", "kl_nar_aux"):
        peak = max(h[name] for h in history)
        assert peak > 1e-3 and final[name] <= 0.1 * peak, f"{name}: peak {peak:.4f} -> {final[name]:.4f}"

    model.eval()
    targets = [tokenizer.encode(t, bos_eos=False) for _, t in pairs]
    greedy = ar_greedy(model, src, max_len=32)
    exact = sum(h.tokens == t for h, t in zip(greedy, targets))
    assert exact >= 48, f"greedy AR reproduced only {exact}/64 training targets"
    nar = mask_predict(model, src, iterations=4, length_beam=3)
    assert sum(h.tokens == t for h, t in zip(nar, targets)) >= 32

    # draft-and-verify gives AR greedy's output (tokens and score), batched and one example at a time, on the
    # training sources and on unseen ones, in fewer decoder calls than tokens
    stats = DraftStats()
    drafted = draft_and_verify(model, src, max_len=32, stats=stats, adaptive=False)
    assert [h.tokens for h in drafted] == [h.tokens for h in greedy]
    assert all(abs(d.score - g.score) < 1e-3 for d, g in zip(drafted, greedy))
    assert stats.rounds < 0.5 * stats.tokens, stats
    alone = [draft_and_verify(model, src[i:i + 1], max_len=32, adaptive=False)[0].tokens for i in range(8)]
    assert alone == [h.tokens for h in greedy[:8]]
    unseen = pad_batch([tokenizer.encode(s) for s, _ in real_pairs[-40:]])
    unseen_greedy = [h.tokens for h in ar_greedy(model, unseen, max_len=40)]
    for block in (1, 3, 8):  # one draft token per round up to longer runs than the targets' rejections
        assert [h.tokens for h in draft_and_verify(model, unseen, max_len=40, block=block, adaptive=False)] == \
            unseen_greedy, block
    # the adaptive rounds (AR steps where they measure faster) change the speed, never the output
    assert [h.tokens for h in draft_and_verify(model, unseen, max_len=40)] == unseen_greedy
    # the relaxed mode (a draft token among the AR's top 3 is accepted) takes more tokens per round
    exact, relaxed = DraftStats(), DraftStats()
    draft_and_verify(model, unseen, max_len=40, adaptive=False, stats=exact)
    draft_and_verify(model, unseen, max_len=40, adaptive=False, stats=relaxed, accept_top=3)
    assert relaxed.tokens / relaxed.rounds > exact.tokens / exact.rounds, (relaxed, exact)


def test_post_norm_relu_layers_compute_what_they_say_and_learn(tokenizer, real_pairs):
    """norm="post", activation="relu" (the release's transformer layers; `base` uses ReLU): a layer computes
    norm(x + f(x)) with ReLU in the FFN, no final norms are added, and such a model memorises pairs."""
    import torch.nn.functional as F

    from janus.model import attention_bias

    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size, norm="post", activation="relu")).eval()
    assert isinstance(model.enc_final_norm, torch.nn.Identity) and isinstance(model.dec_final_norm, torch.nn.Identity)
    layer = model.encoder[0]
    x = torch.randn(2, 5, model.cfg.d_model)
    mask = attention_bias(torch.ones(2, 1, 5, dtype=torch.bool), x.dtype)
    h = layer.self_norm(x + layer.self_attn(x, mask))
    expected = layer.ffn_norm(h + layer.ffn.fc2(F.relu(layer.ffn.fc1(h))))
    assert torch.allclose(layer(x, mask), expected, atol=1e-6)
    pre = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size))
    pre.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=False)
    assert not torch.allclose(pre.encoder[0](x, mask), expected, atol=1e-3)  # pre-norm GELU is another function

    pairs = [(s, t) for s, t in real_pairs if len(tokenizer.encode(t)) <= 16 and len(tokenizer.encode(s)) <= 16][:32]
    src = pad_batch([tokenizer.encode(s) for s, _ in pairs])
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(200):
        loss, _ = compute_loss(model, Batch(src, tgt, torch.zeros_like(tgt, dtype=torch.bool)),
                               objective("ar", label_smoothing=0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    targets = [tokenizer.encode(t, bos_eos=False) for _, t in pairs]
    assert sum(h.tokens == t for h, t in zip(ar_greedy(model, src, max_len=24), targets)) >= 24
