"""Decoding from one JANUS checkpoint: AR greedy and beam search (query stream, content-stream K/V
cache) and NAR mask-predict (content stream, CMLM). Batched; runs on whatever device the model is on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from janus.masks import nar_items
from janus.model import Encoded, JanusModel
from janus.parallel import gather_from_tp


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS/EOS
    score: float


def _full_log_probs(model: JanusModel, hidden: torch.Tensor, forbid: tuple[int, ...]) -> torch.Tensor:
    """Full-vocab log-probs; `forbid` ids (specials that must never be emitted) get -inf."""
    logits = gather_from_tp(model.logits(hidden)).float()
    logits[..., list(forbid)] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


def _repeat(enc: Encoded, n: int) -> Encoded:
    return Encoded(enc.states.repeat_interleave(n, 0), enc.pad.repeat_interleave(n, 0),
                   enc.length_logits.repeat_interleave(n, 0))


class ARStepper:
    """Incremental AR decoding: each step feeds the previous token to the content stream (cached)
    and one query at the next position, whose output predicts the next token."""

    def __init__(self, model: JanusModel, enc: Encoded):
        self.model, self.enc = model, enc
        self.memory = model.memory_kv(enc)
        self.cache: list[dict] = [dict() for _ in model.decoder]
        self.t = 0  # number of content items cached

    def step(self, prev: torch.Tensor) -> torch.Tensor:
        """prev [N] token at position t; returns log-probs [N, V] of the token at position t+1."""
        n, t = prev.shape[0], self.t
        tokens = torch.stack([prev, torch.full_like(prev, self.model.cfg.mask_id)], 1)
        positions = torch.tensor([t, t + 1], device=prev.device).expand(n, 2)
        mask = torch.ones(n, 2, t + 2, dtype=torch.bool, device=prev.device)
        mask[:, :, t + 1] = False  # nobody sees the query item
        h = self.model.decode(self.enc, tokens, positions, mask, memory_kv=self.memory, cache=self.cache,
                              cache_keep=1)
        self.t += 1
        c = self.model.cfg
        return _full_log_probs(self.model, h[:, 1], (c.pad_id, c.bos_id, c.mask_id))

    def verify(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [N, k] at positions t..t+k-1, fed to the content stream at once with k queries at
        t+1..t+k (query j sees the cache and new content <= j). Returns log-probs [N, k, V]: row j is the
        AR distribution of the token at position t+j+1. The k content items are cached; `truncate` drops
        the ones that were not accepted."""
        n, k = tokens.shape
        t, dev = self.t, tokens.device
        items = torch.cat([tokens, torch.full_like(tokens, self.model.cfg.mask_id)], 1)
        new = torch.arange(k, device=dev)
        positions = torch.cat([new + t, new + t + 1]).expand(n, 2 * k)
        causal = new.view(1, k) <= new.view(k, 1)
        rows = torch.cat([torch.ones(k, t, dtype=torch.bool, device=dev), causal,
                          torch.zeros(k, k, dtype=torch.bool, device=dev)], 1)
        mask = torch.cat([rows, rows], 0).expand(n, 2 * k, t + 2 * k)
        h = self.model.decode(self.enc, items, positions, mask, memory_kv=self.memory, cache=self.cache, cache_keep=k)
        self.t += k
        c = self.model.cfg
        return _full_log_probs(self.model, h[:, k:], (c.pad_id, c.bos_id, c.mask_id))

    def truncate(self, length: int) -> None:
        """Keep the first `length` cached content items."""
        for c in self.cache:
            c["k"], c["v"] = c["k"][:, :, :length], c["v"][:, :, :length]
        self.t = length

    def reorder(self, index: torch.Tensor) -> None:
        for c in self.cache:
            c["k"], c["v"] = c["k"].index_select(0, index), c["v"].index_select(0, index)
        self.memory = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory]
        self.enc = Encoded(self.enc.states.index_select(0, index), self.enc.pad.index_select(0, index),
                           self.enc.length_logits.index_select(0, index))


def _caps(model: JanusModel, src: torch.Tensor, max_len: int | torch.Tensor) -> torch.Tensor:
    """Per example, the most target items (BOS and EOS included) decoding may produce: `max_len` (one
    int for all, or one per example) within the model's positions."""
    caps = max_len if torch.is_tensor(max_len) else torch.full((src.shape[0],), int(max_len))
    return caps.to(device=src.device, dtype=torch.long).clamp(2, model.cfg.max_positions)


def _only_eos(logp: torch.Tensor, rows: torch.Tensor, eos: int) -> None:
    """At its last allowed position a row may only end."""
    if bool(rows.any()):
        keep = logp[rows, eos].clone()
        logp[rows] = float("-inf")
        logp[rows, eos] = keep


@torch.no_grad()
def ar_greedy(model: JanusModel, src: torch.Tensor, max_len: int | torch.Tensor = 200) -> list[Hypothesis]:
    cfg = model.cfg
    caps = _caps(model, src, max_len)
    limit = int(caps.max())
    stepper = ARStepper(model, model.encode(src))
    b = src.shape[0]
    prev = torch.full((b,), cfg.bos_id, dtype=torch.long, device=src.device)
    steps, scores = [], torch.zeros(b, device=src.device)
    done = torch.zeros(b, dtype=torch.bool, device=src.device)
    for t in range(1, limit):
        logp = stepper.step(prev)
        _only_eos(logp, caps - 1 <= t, cfg.eos_id)
        best, nxt = logp.max(-1)
        scores += best.masked_fill(done, 0.0)
        nxt = nxt.masked_fill(done, cfg.pad_id)
        steps.append(nxt)
        done |= nxt.eq(cfg.eos_id)
        if bool(done.all()):
            break
        prev = nxt
    out = torch.stack(steps, 1).tolist()
    specials = (cfg.eos_id, cfg.pad_id)
    return [Hypothesis([x for x in row if x not in specials], float(sc)) for row, sc in zip(out, scores)]


@torch.no_grad()
def ar_beam(model: JanusModel, src: torch.Tensor, beam: int = 5, length_penalty: float = 1.0,
            max_len: int | torch.Tensor = 200) -> list[Hypothesis]:
    """Beam search; a finished hypothesis scores sum(log p) / len^length_penalty (len incl. EOS).
    An example stops once it has `beam` finished hypotheses."""
    cfg = model.cfg
    caps = _caps(model, src, max_len)
    limit, beam_caps = int(caps.max()), caps.repeat_interleave(beam)
    b, dev = src.shape[0], src.device
    stepper = ARStepper(model, _repeat(model.encode(src), beam))
    scores = torch.full((b, beam), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep only one alive at step 1
    seqs: list[list[list[int]]] = [[[] for _ in range(beam)] for _ in range(b)]
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    prev = torch.full((b * beam,), cfg.bos_id, dtype=torch.long, device=dev)
    for t in range(1, limit):
        logp = stepper.step(prev)
        vocab = logp.shape[-1]
        _only_eos(logp, beam_caps - 1 <= t, cfg.eos_id)
        cand = (scores.unsqueeze(-1) + logp.view(b, beam, vocab)).view(b, -1)
        top_s, top_i = cand.topk(2 * beam, dim=1)
        top_s, top_i = top_s.tolist(), top_i.tolist()
        select, new_scores, new_prev, new_seqs = [], [], [], []
        for i in range(b):
            keep = []
            if len(finished[i]) < beam:
                for s, idx in zip(top_s[i], top_i[i]):
                    src_beam, tok = divmod(idx, vocab)
                    if s == float("-inf"):
                        break
                    if tok == cfg.eos_id:
                        if len(finished[i]) < beam:
                            finished[i].append(Hypothesis(seqs[i][src_beam], s / (t ** length_penalty)))
                        continue
                    keep.append((s, src_beam, tok))
                    if len(keep) == beam:
                        break
            while len(keep) < beam:  # finished example, or too few live candidates: inert filler beams
                keep.append((float("-inf"), 0, cfg.pad_id))
            for s, src_beam, tok in keep:
                select.append(i * beam + src_beam)
                new_scores.append(s)
                new_prev.append(tok)
            new_seqs.append([seqs[i][src_beam] + [tok] for _, src_beam, tok in keep])
        if all(len(f) >= beam for f in finished):
            break
        index = torch.tensor(select, device=dev)
        stepper.reorder(index)
        scores = torch.tensor(new_scores, device=dev).view(b, beam)
        prev = torch.tensor(new_prev, device=dev)
        seqs = new_seqs
    return [max(f, key=lambda h: h.score) for f in finished]


def length_candidates(length_logits: torch.Tensor, length_beam: int, min_len: int,
                      max_len: int | torch.Tensor) -> torch.Tensor:
    """[B, length_beam] target lengths (incl. BOS/EOS): the predicted length L, then L-1, L+1, L-2, L+2,
    within [min_len, max_len] (max_len: one int, or [B, 1] per example)."""
    if not 1 <= length_beam <= 5:
        raise ValueError(f"length_beam={length_beam} must be between 1 and 5")
    offsets = torch.tensor([0, -1, 1, -2, 2][:length_beam], device=length_logits.device)
    best = length_logits.argmax(-1, keepdim=True)
    cap = max_len if torch.is_tensor(max_len) else torch.tensor(max_len, device=best.device)
    return torch.minimum((best + offsets).clamp(min=min_len), cap.clamp(min=min_len))


@torch.no_grad()
def mask_predict(model: JanusModel, src: torch.Tensor, iterations: int = 10, length_beam: int = 3,
                 max_len: int | torch.Tensor = 200, trace: list | None = None) -> list[Hypothesis]:
    """Mask-predict (Ghazvininejad et al.) on the NAR content stream. Pass 0 predicts every token;
    after pass t the n = N*(T-t)/T lowest-probability tokens are re-masked and re-predicted. All T passes
    run. The candidate length with the highest mean log-prob wins. `trace`, if given, receives per
    pass the re-masked positions of every candidate ([n_candidates, width] bool)."""
    cfg = model.cfg
    if iterations < 1:
        raise ValueError(f"iterations={iterations} must be >= 1")
    b, dev = src.shape[0], src.device
    enc = model.encode(src)
    caps = _caps(model, src, max_len).unsqueeze(1)
    lengths = length_candidates(enc.length_logits, length_beam, 3, caps).flatten()
    enc = _repeat(enc, length_beam)
    memory = model.memory_kv(enc)
    n_cand, width = lengths.shape[0], int(lengths.max())
    pos = torch.arange(width, device=dev).unsqueeze(0)
    maskable = (pos > 0) & (pos < (lengths - 1).unsqueeze(1))
    tokens = torch.full((n_cand, width), cfg.pad_id, dtype=torch.long, device=dev)
    tokens[:, 0] = cfg.bos_id
    tokens[torch.arange(n_cand, device=dev), lengths - 1] = cfg.eos_id
    logprob = torch.zeros(n_cand, width, device=dev)
    n_tokens = maskable.sum(1)
    for it in range(iterations):
        if it == 0:
            remask = maskable
        else:
            n = (n_tokens * (iterations - it)) // iterations
            order = logprob.masked_fill(~maskable, float("inf")).argsort(dim=1, stable=True)
            ranks = torch.empty_like(order).scatter_(1, order, pos.expand(n_cand, -1).contiguous())
            remask = maskable & (ranks < n.unsqueeze(1))
        if trace is not None:
            trace.append(remask.clone())
        tokens = tokens.masked_fill(remask, cfg.mask_id)
        items = nar_items(tokens, cfg.pad_id)
        h = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=memory)
        lp, pred = _full_log_probs(model, h, (cfg.pad_id, cfg.bos_id, cfg.eos_id, cfg.mask_id)).max(-1)
        tokens = torch.where(remask, pred, tokens)
        logprob = torch.where(remask, lp, logprob)
    mean_lp = (logprob * maskable).sum(1) / n_tokens.clamp(min=1)
    best = mean_lp.view(b, length_beam).argmax(1)
    out = []
    for i in range(b):
        c = i * length_beam + int(best[i])
        toks = tokens[c, 1:int(lengths[c]) - 1].tolist()
        out.append(Hypothesis(toks, float(mean_lp[c])))
    return out


@dataclass
class DraftStats:
    rounds: int = 0  # NAR draft + AR verify rounds
    tokens: int = 0  # tokens emitted (incl. EOS)


@torch.no_grad()
def draft_and_verify(model: JanusModel, src: torch.Tensor, max_len: int | torch.Tensor = 200,
                     stats: DraftStats | None = None) -> list[Hypothesis]:
    """Greedy AR output, produced in fewer sequential steps. Each round the NAR content stream drafts every
    token after the accepted prefix at once (to the predicted length, the prefix given as observed tokens);
    one AR forward scores the whole draft; the longest prefix where the draft equals the AR argmax is kept,
    plus the AR token at the first disagreement. Every kept token is the AR argmax given what precedes it,
    so the output is AR greedy's. Examples are decoded one at a time."""
    caps = _caps(model, src, max_len).tolist()
    return [_draft_one(model, src[i:i + 1][:, :int(src[i].ne(model.cfg.pad_id).sum())], caps[i], stats)
            for i in range(src.shape[0])]


def _draft_one(model: JanusModel, src: torch.Tensor, max_len: int, stats: DraftStats | None) -> Hypothesis:
    cfg = model.cfg
    dev = src.device
    limit = max_len  # already within the model's positions
    enc = model.encode(src)
    stepper = ARStepper(model, enc)
    predicted = int(enc.length_logits.argmax(-1))
    prefix = [cfg.bos_id]  # accepted tokens; the last one is not yet in the AR cache
    score = 0.0
    while True:
        m = len(prefix)
        width = min(limit, max(predicted, m + 2))
        # NAR draft of positions m..width-2 given the prefix; EOS closes the draft at width-1
        tokens = torch.full((1, width), cfg.mask_id, dtype=torch.long, device=dev)
        tokens[0, :m] = torch.tensor(prefix, device=dev)
        tokens[0, width - 1] = cfg.eos_id
        if width - 1 > m:
            items = nar_items(tokens, cfg.pad_id)
            h = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=stepper.memory)
            pred = _full_log_probs(model, h[:, m:width - 1], (cfg.pad_id, cfg.bos_id, cfg.eos_id, cfg.mask_id)).argmax(-1)
            tokens[0, m:width - 1] = pred[0]
        draft = tokens[0, m:width].tolist()  # positions m..width-1
        # one AR forward: content = the last accepted token and the draft but its final item
        logp = stepper.verify(torch.tensor([[prefix[-1], *draft[:-1]]], device=dev))[0]  # rows: positions m..width-1
        if width == limit:  # the last position allowed must be EOS, as in ar_greedy
            logp[-1, torch.arange(logp.shape[-1], device=dev) != cfg.eos_id] = float("-inf")
        best_lp, greedy = logp.max(-1)
        greedy = greedy.tolist()
        accepted = 0
        while accepted < len(draft) and draft[accepted] == greedy[accepted] and draft[accepted] != cfg.eos_id:
            accepted += 1
        new = greedy[:accepted + 1] if accepted < len(draft) else greedy[:accepted]
        score += float(best_lp[:len(new)].sum())
        stepper.truncate(m + len(new) - 1)  # cache: every accepted token but the newest
        prefix.extend(new)
        if stats is not None:
            stats.rounds += 1
            stats.tokens += len(new)
        if prefix[-1] == cfg.eos_id or len(prefix) >= limit:
            break
    return Hypothesis([x for x in prefix[1:] if x not in (cfg.eos_id, cfg.pad_id)], score)


@torch.no_grad()
def bang_generate(model: JanusModel, src: torch.Tensor, streams: int = 4, block: int | None = None,
                  max_len: int | torch.Tensor = 200, cross_stream: bool = False) -> list[Hypothesis]:
    """Decoding a BANG-trained model. `block` tokens per decoder pass: semi-NAR, where in each round the
    query of stream j predicts position m+j from the m+1 tokens decoded so far (block <= streams; block 1
    is AR through stream 1). block=None is NAR: one pass over [bos, MASK, ...], position t predicted by
    stream min(t, streams). Output is cut at the first EOS. `cross_stream`: the masks the model was trained
    with (`ObjectiveConfig.bang_cross_stream`)."""
    from janus.masks import bang_items

    cfg = model.cfg
    limit = int(_caps(model, src, max_len).max())
    b, dev = src.shape[0], src.device
    enc = model.encode(src)
    memory = model.memory_kv(enc)
    forbid = (cfg.pad_id, cfg.bos_id, cfg.mask_id)

    def run(content: torch.Tensor) -> torch.Tensor:
        items = bang_items(content, streams, cfg.pad_id, cfg.mask_id, cross_stream)
        n = content.shape[1]
        h = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=memory)[:, n:]
        return h.view(b, streams, n, -1)  # [B, stream, position-1, d]

    if block is None:
        n = limit - 1
        content = torch.full((b, n), cfg.mask_id, dtype=torch.long, device=dev)
        content[:, 0] = cfg.bos_id
        h = run(content)
        t = torch.arange(1, n + 1, device=dev)
        chosen = h[:, (t.clamp(max=streams) - 1), t - 1]  # [B, n, d]
        logp, out = _full_log_probs(model, chosen, forbid).max(-1)
        rows, scores = out.tolist(), logp.sum(-1).tolist()
    else:
        if not 1 <= block <= streams:
            raise ValueError(f"block={block} must be between 1 and the model's {streams} streams")
        tokens = torch.full((b, 1), cfg.bos_id, dtype=torch.long, device=dev)
        scores_t = torch.zeros(b, device=dev)
        done = torch.zeros(b, dtype=torch.bool, device=dev)
        while tokens.shape[1] < limit and not bool(done.all()):
            m = tokens.shape[1] - 1
            step = min(block, limit - 1 - m)
            content = torch.cat([tokens, torch.full((b, step - 1), cfg.mask_id, dtype=torch.long, device=dev)], 1)
            h = run(content)
            j = torch.arange(step, device=dev)
            logp, new = _full_log_probs(model, h[:, j, m + j], forbid).max(-1)  # stream j+1 at position m+j+1
            new = new.masked_fill(done.unsqueeze(1), cfg.pad_id)
            scores_t += (logp * (~done).unsqueeze(1)).sum(1)
            tokens = torch.cat([tokens, new], 1)
            done |= new.eq(cfg.eos_id).any(1)
        rows, scores = tokens[:, 1:].tolist(), scores_t.tolist()
    out = []
    for row, sc in zip(rows, scores):
        cut = row.index(cfg.eos_id) if cfg.eos_id in row else len(row)
        out.append(Hypothesis([x for x in row[:cut] if x != cfg.pad_id], float(sc)))
    return out
