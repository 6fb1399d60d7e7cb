"""FLOPs of one JANUS training step, counted from the shapes (matmuls only, as torch's FlopCounterMode
counts them), and the machine's measured matmul peak that MFU is relative to."""

from __future__ import annotations

import time

import torch

from janus.config import ModelConfig
from janus.objective import Batch, ObjectiveConfig


def decoder_passes(batch: Batch, obj: ObjectiveConfig) -> list[tuple[int, int]]:
    """(items through the decoder, positions through the output projection) per pass, per example."""
    length = batch.tgt.shape[1]
    k = int(batch.masked.sum(1).max()) if batch.masked.any() else 0
    if obj.bang_streams:
        n = length - 1
        return [(n * (1 + obj.bang_streams), n * obj.bang_streams)]
    passes = []
    if obj.needs_ar:
        passes += [(2 * (length - 1), length - 1)] * (2 if obj.rdrop > 0 else 1)
    if obj.needs_nar:
        passes.append((length + 2 * k, 2 * k) if obj.needs_aux else (length, k))
    return passes


def step_flops(cfg: ModelConfig, batch: Batch, obj: ObjectiveConfig, attention: bool = True) -> float:
    """Forward + backward (3x forward) FLOPs of `compute_loss` on this batch, over all TP ranks.
    Attention scores are dense over every item of a pass, as the model computes them."""
    b, s = batch.src.shape
    a = 4 * cfg.d_model if attention else 0
    d, f, v = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    enc_layer = 2 * (4 * d * d + 2 * d * f) * s + a * s * s
    fwd = b * cfg.encoder_layers * enc_layer + b * cfg.decoder_layers * 2 * (2 * d * d) * s  # + cross K/V
    for items, outputs in decoder_passes(batch, obj):
        dec_layer = 2 * (6 * d * d + 2 * d * f) * items + a * items * (items + s)
        fwd += b * (cfg.decoder_layers * dec_layer + 2 * d * v * outputs)
    return 3.0 * fwd


def measure_peak_gflops(n: int = 2048, reps: int = 7) -> float:
    """The best fp32 GEMM throughput of an n x n x n matmul over `reps` tries with this process's threads.
    The best, not the median: load from other processes only ever slows a try down, and a peak deflated by
    load made MFU read above 100%."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for i in range(reps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9
