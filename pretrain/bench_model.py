"""`janus bench model`: forward+backward throughput of the AR-only, CMLM-only and JANUS objectives on
the same model and the same batch of real pairs, FLOPs counted by torch's FlopCounterMode, against
this machine's fp32 matmul peak measured in the same process."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from janus.config import preset
from janus.flops import measure_peak_gflops, step_flops
from janus.model import JanusModel
from janus.noising import span_mask
from janus.objective import Batch, compute_loss, objective
from janus.tokenizer import PAD, Tokenizer, pad_batch
from pretrain.datasets import nmt_tokenizer
from pretrain.inputs import read_pairs


def real_batch(tok: Tokenizer, data: Path, target_tokens: int, lengths: tuple[int, int] = (20, 32),
               seed: int = 0) -> Batch:
    """Real pairs from one length bucket (as the loader's bucketing gives), so padding stays small."""
    pairs = read_pairs(data, "train")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    src, tgt, count = [], [], 0
    for i in order:
        s, t = tok.encode(pairs[i][0]), tok.encode(pairs[i][1])
        if not (lengths[0] <= len(t) <= lengths[1] and lengths[0] <= len(s) <= lengths[1]):
            continue
        src.append(s)
        tgt.append(t)
        count += len(t)
        if count >= target_tokens:
            break
    tgt_t = pad_batch(tgt)
    return Batch(pad_batch(src), tgt_t, span_mask(tgt_t, PAD, torch.Generator().manual_seed(seed)))


def theory_ratio(cfg, batch: Batch) -> float:
    """JANUS/AR step cost predicted from the shapes: the linear layers' FLOPs of each (janus.flops)."""
    return step_flops(cfg, batch, objective("janus"), attention=False) / \
        step_flops(cfg, batch, objective("ar"), attention=False)


def step_time(model, batch, obj, warmup: int = 2, reps: int = 5) -> tuple[float, float]:
    cfg = objective(obj)

    def step():
        model.zero_grad(set_to_none=True)
        loss, _ = compute_loss(model, batch, cfg)
        loss.backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return statistics.median(times), counter.get_total_flops()


def bench_model(preset_name: str = "small", out: str | None = None, target_tokens: int = 4096,
                threads: int = 2, vocab_size: int = 8000) -> dict:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    data, tok = nmt_tokenizer(vocab_size)
    cfg = preset(preset_name, vocab_size=tok.vocab_size, dropout=0.0)
    batch = real_batch(tok, data, target_tokens)
    tgt_tokens = int(batch.tgt.ne(PAD).sum())
    peak = measure_peak_gflops()
    results = {}
    for obj in ("ar", "cmlm", "janus"):
        torch.manual_seed(0)
        model = JanusModel(cfg)
        seconds, flops = step_time(model, batch, obj)
        results[obj] = {"seconds_per_step": seconds, "tokens_per_s": tgt_tokens / seconds,
                        "gflops": flops / 1e9, "achieved_gflop_s": flops / seconds / 1e9,
                        "mfu": flops / seconds / 1e9 / peak}
    peak_after = measure_peak_gflops()
    report = {
        "preset": preset_name, "threads": threads, "batch_examples": batch.tgt.shape[0],
        "target_tokens": tgt_tokens, "source_tokens": int(batch.src.ne(PAD).sum()),
        "padding_fraction": 1 - tgt_tokens / batch.tgt.numel(),
        "params": sum(p.numel() for p in JanusModel(cfg).parameters()),
        "peak_gflop_s": peak, "peak_gflop_s_after": peak_after,
        "tokens_per_s": {o: r["tokens_per_s"] for o, r in results.items()},
        "mfu": {o: r["mfu"] for o, r in results.items()},
        "achieved_gflop_s": {o: r["achieved_gflop_s"] for o, r in results.items()},
        "janus_over_ar": results["janus"]["seconds_per_step"] / results["ar"]["seconds_per_step"],
        "janus_over_ar_theory": theory_ratio(cfg, batch),
        "janus_over_ar_flops": results["janus"]["gflops"] / results["ar"]["gflops"],
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
    }
    print_table(report)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    return report


def print_table(r: dict) -> None:
    print(f"preset {r['preset']}  {r['params'] / 1e6:.1f}M params  batch {r['batch_examples']} pairs, "
          f"{r['target_tokens']} target tokens  threads {r['threads']}  peak {r['peak_gflop_s']:.1f} GFLOP/s")
    print(f"{'objective':<10}{'tokens/s':>12}{'GFLOP/s':>10}{'MFU':>8}")
    for o in ("ar", "cmlm", "janus"):
        print(f"{o:<10}{r['tokens_per_s'][o]:>12.0f}{r['achieved_gflop_s'][o]:>10.1f}{r['mfu'][o]:>8.1%}")
    print(f"JANUS/AR step cost {r['janus_over_ar']:.2f}x  (position-count theory {r['janus_over_ar_theory']:.2f}x, "
          f"FLOP ratio {r['janus_over_ar_flops']:.2f}x)")
