"""Text in, text out: the decoding modes of one JANUS model, and `load(DIR)` for exports.

    import janus
    model = janus.load("exports/en-de")            # an export written by `janus export`
    model.generate(["Click OK."], mode="nar", iterations=4)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from janus.decoding import DraftStats, ar_beam, ar_greedy, bang_generate, draft_and_verify, mask_predict
from janus.model import JanusModel
from janus.tokenizer import Tokenizer, pad_batch


@dataclass(frozen=True)
class Mode:
    """One decoding setting: AR beam search, AR greedy, NAR mask-predict with T iterations, or
    draft-and-verify (NAR drafts, AR verifies; output equals AR greedy unless `accept_top` > 1)."""

    name: str
    kind: str  # ar_beam | ar_greedy | nar | draft | bang_nar | bang_semi (a BANG-trained model)
    beam: int = 5
    iterations: int = 10
    length_beam: int = 3
    streams: int = 4  # BANG: the model's predicting streams; bang_semi emits this many tokens per pass
    cross_stream: bool = False  # BANG: trained with the cross-stream-visible masks
    accept_top: int = 1  # draft: > 1 also accepts a draft token among the AR's top k (not AR greedy's output)
    adaptive: bool = True  # draft: rounds become AR steps where those measure faster (never with accept_top > 1)

    def decode(self, model: JanusModel, src: torch.Tensor, max_len: int | torch.Tensor,
               stats: DraftStats | None = None):
        if self.kind == "ar_greedy":
            return ar_greedy(model, src, max_len=max_len)
        if self.kind == "ar_beam":
            return ar_beam(model, src, beam=self.beam, max_len=max_len)
        if self.kind == "draft":
            return draft_and_verify(model, src, max_len=max_len, stats=stats, accept_top=self.accept_top,
                                    adaptive=self.adaptive and self.accept_top == 1)
        if self.kind == "bang_nar":
            return bang_generate(model, src, self.streams, None, max_len=max_len, cross_stream=self.cross_stream)
        if self.kind == "bang_semi":
            return bang_generate(model, src, self.streams, self.streams, max_len=max_len,
                                 cross_stream=self.cross_stream)
        if self.kind == "nar":
            return mask_predict(model, src, iterations=self.iterations, length_beam=self.length_beam, max_len=max_len)
        raise ValueError(f"unknown decoding mode {self.kind!r}: ar_beam, ar_greedy, nar, draft, bang_nar, bang_semi")


def modes(kind: str = "all", beam: int = 5, iterations: tuple[int, ...] = (1, 2, 4, 10),
          length_beam: int = 3, bang_streams: int = 0, bang_cross_stream: bool = False) -> list[Mode]:
    """The settings `janus evaluate --mode` names: ar, nar, draft or all. For a BANG-trained model
    (bang_streams > 0) NAR is BANG's one-pass NAR and its semi-NAR (bang_streams tokens per pass), and
    draft is not offered (it drafts with the CMLM stream BANG does not train)."""
    ar = [Mode(f"ar_beam{beam}", "ar_beam", beam=beam), Mode("ar_greedy", "ar_greedy")]
    if bang_streams:
        nar = [Mode("bang_nar", "bang_nar", streams=bang_streams, cross_stream=bang_cross_stream),
               Mode(f"bang_semi{bang_streams}", "bang_semi", streams=bang_streams, cross_stream=bang_cross_stream)]
        return {"ar": ar, "nar": nar, "all": ar + nar}.get(kind) or _refuse(kind)
    nar = [Mode(f"nar_T{t}", "nar", iterations=t, length_beam=length_beam) for t in iterations]
    draft = [Mode("draft", "draft")]
    # the relaxed mode is asked for by name (--mode draft), never part of "all": its output is not AR greedy's
    relaxed = [Mode("draft_top3", "draft", accept_top=3)]
    chosen = {"ar": ar, "nar": nar, "draft": draft + relaxed, "all": ar + nar + draft}
    if kind not in chosen:
        raise ValueError(f"--mode {kind!r}: choose ar, nar, draft or all")
    return chosen[kind]


def modes_for(objective_name: str, kind: str = "all", beam: int = 5, iterations: tuple[int, ...] = (1, 2, 4, 10),
              length_beam: int = 3) -> list[Mode]:
    """`modes(kind)` for a model trained with `objective_name` (a BANG model gets BANG's decoders)."""
    from janus.objective import objective

    trained = objective(objective_name)
    return modes(kind, beam=beam, iterations=iterations, length_beam=length_beam, bang_streams=trained.bang_streams,
                 bang_cross_stream=trained.bang_cross_stream)


# The longest output decoding may produce for a source of n tokens, as fairseq's --max-len-a/--max-len-b:
# a * n + b target tokens. 2n + 10 holds 99.5% of the en-de test references (1.5n + 10: 99.0%); an
# under-trained model that never emits EOS stops there instead of at max_positions.
MAX_LEN_A, MAX_LEN_B = 2.0, 10


@torch.no_grad()
def translate(model: JanusModel, tok: Tokenizer, sources: list[str], mode: Mode, batch_size: int = 32,
              stats: DraftStats | None = None, max_len_a: float = MAX_LEN_A, max_len_b: int = MAX_LEN_B) -> list[str]:
    """Decodes in batches of similar source length (less padding, and a batch ends when its longest
    output does); the outputs come back in the order of `sources`."""
    model.eval()
    device = next(model.parameters()).device
    max_pos = model.cfg.max_positions
    ids = [tok.encode(s)[:max_pos] for s in sources]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = [ids[i] for i in chunk]
        caps = torch.tensor([int(max_len_a * len(x)) + max_len_b + 2 for x in batch])  # + BOS and EOS
        hyps = mode.decode(model, pad_batch(batch).to(device), caps, stats)
        for i, text in zip(chunk, tok.decode([h.tokens for h in hyps])):
            out[i] = text
    return out


def _refuse(kind: str):
    raise ValueError(f"--mode {kind!r} is not available for a BANG-trained model: choose ar, nar or all")


class JanusGenerator:
    """A loaded model and its tokenizer."""

    def __init__(self, model: JanusModel, tokenizer: Tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def generate(self, texts: list[str], mode: str = "ar_beam", beam: int = 5, iterations: int = 4,
                 length_beam: int = 3, batch_size: int = 32) -> list[str]:
        """mode: ar_beam | ar_greedy | nar (mask-predict, `iterations` passes) | draft."""
        return translate(self.model, self.tokenizer, list(texts),
                         Mode(mode, mode, beam=beam, iterations=iterations, length_beam=length_beam), batch_size)


def load(directory: str | os.PathLike, device: str | None = None) -> JanusGenerator:
    """Load an export; at TP=1 (no tensor-parallel group in this process) no process group is started."""
    from janus.export import read_export

    state, cfg, tok_path = read_export(directory)
    return JanusGenerator(build(state, cfg, device), Tokenizer(tok_path))


def build(state: dict[str, torch.Tensor], cfg, device: str | None = None) -> JanusModel:
    """A model in eval mode from a whole (TP=1 layout) state dict, sharded if this process has a TP group."""
    from janus.parallelize import parallelize

    model = parallelize(JanusModel(cfg))
    model.load_full_state_dict(state)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()
