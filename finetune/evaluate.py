"""`janus evaluate`: decode one checkpoint in every mode, score each with the task's metrics and time it.

Per setting (`ar_beam5`, `ar_greedy`, `nar_T1`.., `draft`): the task metrics, `latency_ms_b1` (median per
example at batch 1), `examples_per_s_b32` (throughput at batch 32), `speedup_vs_ar_beam5` (batch-1
latency ratio), and for `draft` its speed-up over AR greedy and whether its output equals AR greedy's.
Writes `{setting}.hyp` (detokenized), `metrics.json`, `results.md` and `frontier.png`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from finetune.metrics import PRIMARY, task_scores
from janus.decoding import DraftStats
from janus.generate import Mode, modes, translate
from janus.model import JanusModel
from janus.tokenizer import Tokenizer


def evaluate(model: JanusModel, tok: Tokenizer, pairs: list[tuple[str, str]], task: str = "nmt",
             settings: list[Mode] | None = None, latency_examples: int = 20, batch_size: int = 32) -> dict:
    settings = settings if settings is not None else modes("all")
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    results: dict = {}
    for mode in tqdm(settings, desc=f"evaluate {len(pairs)} examples", unit="setting"):
        stats = DraftStats() if mode.kind == "draft" else None
        start = time.perf_counter()
        hyps = translate(model, tok, sources, mode, batch_size, stats)
        throughput = len(sources) / (time.perf_counter() - start)
        latency = []
        for s in sources[:latency_examples]:
            t = time.perf_counter()
            translate(model, tok, [s], mode, 1)
            latency.append(time.perf_counter() - t)
        results[mode.name] = {**task_scores(task, hyps, refs), "latency_ms_b1": 1000 * statistics.median(latency),
                              f"examples_per_s_b{batch_size}": throughput, "hypotheses": hyps}
        if stats is not None:
            results[mode.name]["tokens_per_round"] = stats.tokens / max(1, stats.rounds)
    beam = next((name for name in results if name.startswith("ar_beam")), None)
    for r in results.values():
        if beam:
            r[f"speedup_vs_{beam}"] = results[beam]["latency_ms_b1"] / r["latency_ms_b1"]
    if "draft" in results and "ar_greedy" in results:
        d, g = results["draft"], results["ar_greedy"]
        d["speedup_vs_ar_greedy"] = g["latency_ms_b1"] / d["latency_ms_b1"]
        d["identical_to_ar_greedy"] = sum(a == b for a, b in zip(d["hypotheses"], g["hypotheses"])) / len(sources)
    return results


def write_results(results: dict, out: Path, task: str, title: str) -> None:
    """Hypotheses, metrics.json, results.md (a table) and frontier.png (quality vs batch-1 latency)."""
    out.mkdir(parents=True, exist_ok=True)
    clean = {}
    for name, r in results.items():
        (out / f"{name}.hyp").write_text("\n".join(r["hypotheses"]) + "\n")
        clean[name] = {k: v for k, v in r.items() if k != "hypotheses"}
    (out / "metrics.json").write_text(json.dumps(clean, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(clean, task, title))
    plot_frontier(clean, out / "frontier.png", PRIMARY[task], title)


def markdown_table(results: dict, task: str, title: str = "") -> str:
    from finetune.metrics import TASK_METRICS

    names = TASK_METRICS[task]
    beam = next((k for r in results.values() for k in r if k.startswith("speedup_vs_ar_beam")), None)
    head = ["setting", *names, "latency b1 (ms)", "examples/s b32", *([beam.replace("_", " ")] if beam else [])]
    lines = ([f"# {title}", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, *(f"{r[m]:.2f}" for m in names), f"{r['latency_ms_b1']:.1f}", f"{r['examples_per_s_b32']:.1f}",
               *([f"{r[beam]:.2f}x"] if beam else [])]
        lines.append("| " + " | ".join(row) + " |")
    sig = next((r[k] for r in results.values() for k in ("bleu_signature",) if k in r), None)
    if sig:
        lines += ["", f"sacreBLEU signature: `{sig}`"]
    if "draft" in results and "identical_to_ar_greedy" in results["draft"]:
        d = results["draft"]
        lines += ["", f"draft-and-verify: {d['speedup_vs_ar_greedy']:.2f}x AR greedy at batch 1, "
                      f"{d['tokens_per_round']:.2f} tokens per round, output identical to AR greedy on "
                      f"{100 * d['identical_to_ar_greedy']:.1f}% of examples"]
    return "\n".join(lines) + "\n"


def plot_frontier(results: dict, path: Path, metric: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, r in results.items():
        ax.scatter(r["latency_ms_b1"], r[metric], color="C1" if name.startswith("nar") else "C0")
        ax.annotate(name, (r["latency_ms_b1"], r[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per example at batch 1 (ms, log scale)")
    ax.set_ylabel(metric)
    ax.set_title(title or "quality / latency from one checkpoint")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_model(path: str | Path, device: str | None = None) -> tuple[JanusModel, Tokenizer, dict]:
    """A checkpoint or export as a TP=1 model on `device` (default: a GPU if there is one)."""
    from janus.parallel import init_parallel
    from pretrain.init_weights import read_weights, resolve

    init_parallel(1)
    state, cfg, tok_path = read_weights(path)
    model = JanusModel(cfg)
    model.load_full_state_dict(state)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    source = resolve(path)
    train = {}
    if (source / "config.json").is_file():
        info = json.loads((source / "config.json").read_text())
        train = info.get("train") or info.get("source", {}).get("train", {})
    return model.to(device).eval(), Tokenizer(tok_path), train
