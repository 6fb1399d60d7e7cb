"""Decoding from one JANUS checkpoint: AR greedy and beam search (query stream, content-stream K/V
cache) and NAR mask-predict (content stream, CMLM). Batched; runs on whatever device the model is on."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import torch

from janus.masks import _ensure_nonempty, nar_items
from janus.model import Encoded, JanusModel
from janus.parallel import gather_from_tp


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS/EOS
    score: float


def _full_logits(model: JanusModel, hidden: torch.Tensor, forbid: tuple[int, ...]) -> torch.Tensor:
    """Full-vocab logits; `forbid` ids (specials that must never be emitted) get -inf."""
    logits = gather_from_tp(model.logits(hidden)).float()
    logits[..., list(forbid)] = float("-inf")
    return logits


def _full_log_probs(model: JanusModel, hidden: torch.Tensor, forbid: tuple[int, ...]) -> torch.Tensor:
    return torch.log_softmax(_full_logits(model, hidden, forbid), dim=-1)


def _select_rows(index: torch.Tensor, cache: list[dict], memory: list, enc: Encoded) -> tuple[list, Encoded]:
    """The rows `index` of a decoding state: the content cache (in place), the cross-attention K/V and the
    encoder output."""
    for c in cache:
        c["k"], c["v"] = c["k"].index_select(0, index), c["v"].index_select(0, index)
    memory = [(k.index_select(0, index), v.index_select(0, index)) for k, v in memory]
    return memory, Encoded(enc.states.index_select(0, index), enc.pad.index_select(0, index),
                           enc.length_logits.index_select(0, index))


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

    def reorder(self, index: torch.Tensor) -> None:
        self.memory, self.enc = _select_rows(index, self.cache, self.memory, self.enc)


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
    rounds: int = 0  # decoder calls, summed over examples (one call serves every example of a batch)
    tokens: int = 0  # tokens emitted (incl. EOS)


# The most draft tokens one round verifies: longer runs are rarely all accepted, and every fed item costs
# compute in the one decoder call of the round.
DRAFT_BLOCK = 8
# The NAR part of a round holds a window of the target, not all of it: BOS, the last NAR_CONTEXT accepted tokens,
# [MASK] from there to NAR_AHEAD past what the next round can verify, and the EOS at the predicted end, each at
# its true position; the rest of the target is absent, as padding is. Its cost no longer grows with the
# sentence. On the study's JANUS model (80 test sources) the whole target gave 1.96 tokens per round and this
# window 2.00.
NAR_CONTEXT, NAR_AHEAD = 8, 4


class _Clock:
    """Which kind of round yields more tokens per second on this device at this batch size: a drafting
    round (verify + NAR draft in one call: several tokens from a bigger call) or a plain AR step (one
    token). A kind's cost is its seconds over its tokens, summed over every round of it so far (one
    round's tokens vary too much to judge by). Each kind first runs `streak` rounds; then the cheaper one
    runs, and the other runs `streak` rounds again after `interval` rounds, an interval that doubles each
    time it is confirmed dearer, so that a costly kind costs little once known. One clock per model and
    batch size (rounded up to a power of two) serves every later batch. On a CPU drafting wins at batch 1;
    at batch 32 the NAR items cost more than the tokens they save, and the rounds become AR steps."""

    def __init__(self, streak: int = 4):
        self.seconds = {"draft": 0.0, "step": 0.0}
        self.tokens = {"draft": 0, "step": 0}
        self.rounds = {"draft": 0, "step": 0}
        self.streak, self.interval, self.wait, self.probing = streak, 16, 0, 0

    def cost(self, kind: str) -> float:
        return self.seconds[kind] / max(1, self.tokens[kind])

    def choose(self) -> str:
        for kind in ("draft", "step"):
            if self.rounds[kind] < self.streak:
                return kind
        best = min(("draft", "step"), key=self.cost)
        other = "step" if best == "draft" else "draft"
        if self.probing:
            self.probing -= 1
            return other
        self.wait += 1
        if self.wait >= self.interval:
            self.wait, self.probing = 0, self.streak - 1
            return other
        return best

    def record(self, kind: str, seconds: float, tokens: int) -> None:
        before = min(("draft", "step"), key=self.cost)
        self.seconds[kind] += seconds
        self.tokens[kind] += tokens
        self.rounds[kind] += 1
        if kind != before and not self.probing and min(self.rounds.values()) > self.streak:  # a probe ended
            self.interval = min(1024, 2 * self.interval) if min(("draft", "step"), key=self.cost) == before else 16


_CLOCKS: "weakref.WeakKeyDictionary[JanusModel, dict[int, _Clock]]" = weakref.WeakKeyDictionary()


def _clock(model: JanusModel, batch: int) -> _Clock:
    per_size = _CLOCKS.setdefault(model, {})
    return per_size.setdefault(1 << max(0, batch - 1).bit_length(), _Clock())


def _pack(cache: list[dict], valid: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Moves every row's valid cache columns to the left, in order, and cuts the cache to the longest row;
    returns the new validity mask."""
    order = (~valid).to(torch.int8).argsort(dim=1, stable=True)[:, :max(lengths)]
    index = order.view(*order.shape, 1).unsqueeze(1)  # [rows, 1, columns, 1]
    for c in cache:
        for name in ("k", "v"):
            kv = c[name]
            c[name] = kv.gather(2, index.expand(-1, kv.shape[1], -1, kv.shape[3]))
    return torch.arange(order.shape[1], device=valid.device).unsqueeze(0) < torch.tensor(
        lengths, device=valid.device).unsqueeze(1)


def _nar_window(cfg, prefix: list[int], verify_next: int, width: int) -> tuple[list[int], list[int], int, int]:
    """The NAR part of a round for one row: BOS, the last NAR_CONTEXT tokens of the prefix, [MASK] at the
    positions from len(prefix) to NAR_AHEAD past the `verify_next` ones a next round can verify, and EOS at the
    predicted end `width` - 1, each at its true position. Returns (tokens, positions, where the [MASK]s end,
    width)."""
    ahead = min(width - 1, len(prefix) + verify_next + NAR_AHEAD)
    context = range(max(1, len(prefix) - NAR_CONTEXT), len(prefix))
    tokens = [cfg.bos_id, *(prefix[q] for q in context), *[cfg.mask_id] * (ahead - len(prefix)), cfg.eos_id]
    return tokens, [0, *context, *range(len(prefix), ahead), width - 1], ahead, width


@torch.no_grad()
def draft_and_verify(model: JanusModel, src: torch.Tensor, max_len: int | torch.Tensor = 200,
                     stats: DraftStats | None = None, block: int = DRAFT_BLOCK,
                     adaptive: bool = True, accept_top: int = 1) -> list[Hypothesis]:
    """AR greedy's output in fewer decoder calls. A drafting round is one decoder call that does two
    things at once. Its AR part feeds the next `block` draft tokens to the content stream (after the
    cached prefix) and verifies them with the query stream: the longest run of the draft equal to the AR
    argmax is kept, plus the AR token after it. Its NAR part, items of the same call that see only each
    other, drafts the positions after the prefix known when the round starts, from a window of the target
    (`_nar_window`). What verification then accepts is cut from the front of that draft, and the rest is
    the next round's draft: it lags one round behind the prefix, the price of one call per round instead
    of a draft call and a verify call. Every kept token is the AR argmax given what precedes it, so the
    output is AR greedy's.

    Batched: every row keeps its own prefix, draft and cached content items (a validity mask over the
    cache's columns; it is re-packed when rejected items leave holes), and a row that ends leaves the
    batch. With `adaptive`, a round is a plain AR step whenever steps have measured faster per token at
    this batch size (`_Clock`): at large batches drafting can cost more than it saves.

    `accept_top` > 1 is a relaxed mode that is NOT AR greedy: a draft token is also accepted when it is
    among the AR's `accept_top` most likely tokens, which accepts more per round at some cost in quality."""
    cfg = model.cfg
    dev = src.device
    caps = _caps(model, src, max_len).tolist()
    enc = model.encode(src)
    memory = model.memory_kv(enc)
    predicted = enc.length_logits.argmax(-1).tolist()
    cache: list[dict] = [dict() for _ in model.decoder]
    valid = torch.zeros(src.shape[0], 0, dtype=torch.bool, device=dev)  # [rows, cached columns]
    prefixes = [[cfg.bos_id] for _ in range(src.shape[0])]  # the last token of each is not yet in the cache
    drafts: list[list[int]] = [[] for _ in prefixes]  # the tokens proposed for positions len(prefix)..
    redraft = [True] * len(prefixes)  # the row's last round rejected a draft token, or its draft ran out
    scores = [0.0] * len(prefixes)
    active = list(range(len(prefixes)))  # rows still decoding, in the order of the cache's and memory's rows
    clock = _clock(model, src.shape[0]) if adaptive else None
    last_kind = "step"  # the first drafting round, or one after steps, has no draft yet
    while active:
        kind = clock.choose() if clock else "draft"
        started = time.perf_counter()
        a = len(active)
        # content items: the last accepted token and the draft's next tokens (an EOS is verified, never fed);
        # the query after content item j predicts position len(prefix) + j
        blocks = []
        for i in active:
            b = [prefixes[i][-1], *(drafts[i][:block] if kind == "draft" else ())]
            blocks.append(b[:-1] if b[-1] == cfg.eos_id else b)
        k = max(map(len, blocks))
        widths = [min(caps[i], max(predicted[i], len(prefixes[i]) + 2)) for i in active]  # > len(prefix)
        # the NAR part drafts anew only when some row needs it: a draft whose every verified token was accepted
        # is still the NAR's guess given all that was accepted since
        nar = [_nar_window(cfg, prefixes[i], len(b) + block, width) for i, b, width in zip(active, blocks, widths)] \
            if kind == "draft" and any(redraft[i] for i in active) else []
        w = max((len(t) for t, *_ in nar), default=0)
        cached = torch.tensor([len(prefixes[i]) - 1 for i in active], device=dev)
        tc = valid.shape[1]
        content = torch.tensor([b + [cfg.pad_id] * (k - len(b)) for b in blocks], device=dev)
        j = torch.arange(k, device=dev)
        used = content.ne(cfg.pad_id)  # [a, k]
        # items: [content k][queries k][NAR w]; a row's unused slots are padding
        tokens = [content, torch.full_like(content, cfg.mask_id).masked_fill(~used, cfg.pad_id)]
        positions = [(cached.unsqueeze(1) + j) * used, (cached.unsqueeze(1) + j + 1) * used]
        mask = torch.zeros(a, 2 * k + w, tc + 2 * k + w, dtype=torch.bool, device=dev)
        sees_cache = valid.unsqueeze(1) & used.unsqueeze(2)
        causal = (j.view(1, k) <= j.view(k, 1)).unsqueeze(0) & used.unsqueeze(1) & used.unsqueeze(2)
        for r in (slice(0, k), slice(k, 2 * k)):  # content item j and the query after it see the same
            mask[:, r, :tc] = sees_cache
            mask[:, r, tc:tc + k] = causal
        if w:
            nar_tokens = torch.tensor([t + [cfg.pad_id] * (w - len(t)) for t, *_ in nar], device=dev)
            nar_ok = nar_tokens.ne(cfg.pad_id)
            mask[:, 2 * k:, tc + 2 * k:] = nar_ok.unsqueeze(1) & nar_ok.unsqueeze(2)
            tokens.append(nar_tokens)
            positions.append(torch.tensor([q + [0] * (w - len(q)) for _, q, *_ in nar], device=dev))
        h = model.decode(enc, torch.cat(tokens, 1), torch.cat(positions, 1), _ensure_nonempty(mask),
                         memory_kv=memory, cache=cache, cache_keep=k)
        logp = _full_log_probs(model, h[:, k:2 * k], (cfg.pad_id, cfg.bos_id, cfg.mask_id))  # [a, k, V]
        if any(len(prefixes[i]) + len(b) >= caps[i] for i, b in zip(active, blocks)):
            last = (cached.unsqueeze(1) + j + 1) >= torch.tensor([caps[i] for i in active], device=dev).unsqueeze(1) - 1
            _only_eos(logp.view(a * k, -1), last.flatten(), cfg.eos_id)  # the last position allowed must be EOS
        top_lp, top = logp.topk(accept_top, -1)  # [a, k, accept_top]; [..., 0] is the AR argmax
        top_lp, top = top_lp.tolist(), top.tolist()
        drafted = _full_logits(model, h[:, 2 * k:], (cfg.pad_id, cfg.bos_id, cfg.eos_id, cfg.mask_id)).argmax(-1).tolist() \
            if w else None
        keep_rows, kept, emitted = [], [], 0
        for r, i in enumerate(active):
            draft, queries = drafts[i], len(blocks[r])
            accepted, lps = 0, []
            while accepted < min(len(draft), queries) and draft[accepted] in top[r][accepted] \
                    and draft[accepted] != cfg.eos_id:
                lps.append(top_lp[r][accepted][top[r][accepted].index(draft[accepted])])
                accepted += 1
            new = draft[:accepted]
            if accepted < queries:  # the AR token after the accepted run
                new.append(top[r][accepted][0])
                lps.append(top_lp[r][accepted][0])
            scores[i] += sum(lps)
            prefixes[i].extend(new)
            emitted += len(new)
            m = len(prefixes[i])
            if new[-1] == cfg.eos_id or m >= caps[i]:
                continue
            redraft[i] = accepted < min(len(draft), queries)
            if w:  # the window's draft from position m on, and the EOS that closes it if the masks reach it
                t, _, ahead, width = nar[r]  # its [MASK]s (positions up to ahead-1) stand just before its EOS
                left = max(0, ahead - m)
                drafts[i] = drafted[r][len(t) - 1 - left:len(t) - 1] + \
                    ([cfg.eos_id] if ahead == width - 1 and m <= width - 1 else [])
            else:
                drafts[i] = drafts[i][len(new):]
            redraft[i] = redraft[i] or not drafts[i]
            keep_rows.append(r)
            kept.append(len(new))  # its first len(new) content items are now right
        if stats is not None:
            stats.rounds += a
            stats.tokens += emitted
        if clock:
            if kind == "step" or last_kind == "draft":  # a round that only starts a draft is not typical of drafting
                clock.record(kind, time.perf_counter() - started, emitted)
            last_kind = kind
        if not keep_rows:
            break
        new_valid = j.unsqueeze(0) < torch.tensor(kept, device=dev).unsqueeze(1)
        if len(keep_rows) < a:  # finished rows leave the batch
            rows = torch.tensor(keep_rows, device=dev)
            valid = valid.index_select(0, rows)
            memory, enc = _select_rows(rows, cache, memory, enc)
        active = [active[r] for r in keep_rows]
        valid = torch.cat([valid, new_valid], 1)
        lengths = [len(prefixes[i]) - 1 for i in active]  # each row's cached items
        if valid.shape[1] > max(lengths) + 16:  # rejected items left holes: pack every row's items to the left
            valid = _pack(cache, valid, lengths)
    return [Hypothesis([x for x in p[1:] if x not in (cfg.eos_id, cfg.pad_id)], s) for p, s in zip(prefixes, scores)]


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
