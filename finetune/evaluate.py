"""Decode one checkpoint in every mode and measure quality (sacreBLEU, chrF) and speed."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import sacrebleu
import torch
from tqdm import tqdm

from janus.decoding import ar_beam, ar_greedy, mask_predict
from janus.model import JanusModel
from janus.tokenizer import Tokenizer, pad_batch


@dataclass(frozen=True)
class Mode:
    name: str
    kind: str  # ar_greedy | ar_beam | nar
    beam: int = 5
    iterations: int = 10
    length_beam: int = 3

    def decode(self, model: JanusModel, src: torch.Tensor, max_len: int):
        if self.kind == "ar_greedy":
            return ar_greedy(model, src, max_len=max_len)
        if self.kind == "ar_beam":
            return ar_beam(model, src, beam=self.beam, max_len=max_len)
        return mask_predict(model, src, iterations=self.iterations, length_beam=self.length_beam, max_len=max_len)


DEFAULT_MODES = (Mode("ar_beam5", "ar_beam", beam=5), Mode("ar_greedy", "ar_greedy"),
                 Mode("nar_T1", "nar", iterations=1), Mode("nar_T4", "nar", iterations=4),
                 Mode("nar_T10", "nar", iterations=10))


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@torch.no_grad()
def translate(model: JanusModel, tok: Tokenizer, sources: list[str], mode: Mode, batch_size: int = 32) -> list[str]:
    model.eval()
    device = next(model.parameters()).device
    max_pos = model.cfg.max_positions
    out = []
    for chunk in _batches(sources, batch_size):
        ids = [tok.encode(s)[:max_pos] for s in chunk]
        max_len = min(max_pos, 2 * max(len(x) for x in ids) + 10)
        hyps = mode.decode(model, pad_batch(ids).to(device), max_len)
        out.extend(tok.decode([h.tokens for h in hyps]))
    return out


def evaluate(model: JanusModel, tok: Tokenizer, pairs: list[tuple[str, str]], modes=DEFAULT_MODES,
             latency_examples: int = 20, batch_size: int = 32) -> dict:
    """Per mode: BLEU/chrF (detokenized sacreBLEU, signatures included), latency per example at batch 1
    (median), examples/s at `batch_size`, and the speed-up over AR beam 5 at batch 1."""
    sources = [s for s, _ in pairs]
    refs = [t for _, t in pairs]
    results = {}
    for mode in tqdm(modes, desc="evaluate", unit="mode"):
        start = time.perf_counter()
        hyps = translate(model, tok, sources, mode, batch_size)
        throughput = len(sources) / (time.perf_counter() - start)
        lat = []
        for s in sources[:latency_examples]:
            t = time.perf_counter()
            translate(model, tok, [s], mode, 1)
            lat.append(time.perf_counter() - t)
        bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
        b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
        results[mode.name] = {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
                              "chrf_signature": str(chrf.get_signature()),
                              "latency_ms_b1": 1000 * statistics.median(lat),
                              f"examples_per_s_b{batch_size}": throughput, "hypotheses": hyps}
    if "ar_beam5" in results:
        base = results["ar_beam5"]["latency_ms_b1"]
        for r in results.values():
            r["speedup_vs_ar_beam5"] = base / r["latency_ms_b1"]
    return results
