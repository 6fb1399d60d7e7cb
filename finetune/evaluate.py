"""`janus evaluate`: decode one checkpoint in every mode, score each with the task's metrics and time it.

Per setting (`ar_beam5`, `ar_greedy`, `nar_T1`.., `draft`): the task metrics on every pair, `latency_ms_b1`
(median per example at batch 1, with its quartiles), `examples_per_s_b32` (throughput at batch 32),
`speedup_vs_ar_beam5` and `speedup_vs_ar_greedy` (paired batch-1 latency ratios), and for `draft` its
tokens per round and whether its output equals AR greedy's. Timing is interleaved and repeated (`timings`).
Writes `{setting}.hyp` (detokenized), `metrics.json`, `results.md` and `frontier.png`.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from finetune.metrics import PRIMARY, task_scores
from janus.decoding import DraftStats
from janus.generate import Mode, modes, translate
from janus.model import JanusModel
from janus.tokenizer import Tokenizer


def evaluate(model: JanusModel, tok: Tokenizer, pairs: list[tuple[str, str]], task: str = "nmt",
             settings: list[Mode] | None = None, latency_examples: int = 20, batch_size: int = 32,
             repeats: int = 3, first: dict[str, int] | None = None) -> dict:
    """Quality on every pair (batched decoding), or for the settings named in `first` on that many first
    pairs; then speed (`timings`)."""
    settings = settings if settings is not None else modes("all")
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    results: dict = {}
    for mode in tqdm(settings, desc=f"decode {len(pairs)} examples", unit="setting"):
        stats = DraftStats() if mode.kind == "draft" else None
        n = min(len(sources), (first or {}).get(mode.name, len(sources)))
        # draft-and-verify is scored with every round drafting (its adaptive rounds may be AR steps): the output
        # then shows what drafting gives, and `tokens_per_round` what a drafting round accepts
        scored = replace(mode, adaptive=False) if mode.kind == "draft" else mode
        hyps = translate(model, tok, sources[:n], scored, batch_size, stats)
        results[mode.name] = {**task_scores(task, hyps, refs[:n]), "examples": n, "hypotheses": hyps}
        if stats is not None:
            results[mode.name]["tokens_per_round"] = stats.tokens / max(1, stats.rounds)
    for name, figures in timings(model, tok, sources, settings, latency_examples, batch_size, repeats).items():
        results[name].update(figures)
    if "draft" in results and "ar_greedy" in results:
        d, g = results["draft"], results["ar_greedy"]
        d["identical_to_ar_greedy"] = sum(a == b for a, b in zip(d["hypotheses"], g["hypotheses"])) / d["examples"]
    return results


def timings(model: JanusModel, tok: Tokenizer, sources: list[str], settings: list[Mode], examples: int = 20,
            batch_size: int = 32, repeats: int = 3) -> dict:
    """Latency at batch 1 and throughput at `batch_size`, made robust to a busy machine: the settings are
    interleaved (each example is decoded in every setting, in a rotating order, before the next one) and
    repeated. Latency is the median over examples of each example's median over the repeats, with the
    quartiles; a speed-up is the median over examples of the paired latency ratio, from the same run;
    throughput is the median over repeats. The load average at the start and the end goes with them."""
    names = [m.name for m in settings]
    timed = sources[:max(1, examples)]
    latency = {n: [[] for _ in timed] for n in names}
    load_start = os.getloadavg()[0]
    for _ in range(repeats):
        for i, source in enumerate(timed):
            for k in range(len(settings)):
                mode = settings[(i + k) % len(settings)]
                start = time.perf_counter()
                translate(model, tok, [source], mode, 1)
                latency[mode.name][i].append(time.perf_counter() - start)
    chunk = sources[:max(batch_size, examples)]
    throughput = {n: [] for n in names}
    for r in range(repeats):
        for k in range(len(settings)):
            mode = settings[(r + k) % len(settings)]
            start = time.perf_counter()
            translate(model, tok, chunk, mode, batch_size)
            throughput[mode.name].append(len(chunk) / (time.perf_counter() - start))
    per_example = {n: [statistics.median(x) for x in latency[n]] for n in names}
    load = {"load_average_start": load_start, "load_average_end": os.getloadavg()[0]}
    out = {}
    for n in names:
        ms = sorted(1000 * x for x in per_example[n])
        out[n] = {"latency_ms_b1": statistics.median(ms), "latency_ms_b1_p25": ms[len(ms) // 4],
                  "latency_ms_b1_p75": ms[(3 * len(ms)) // 4], f"examples_per_s_b{batch_size}":
                  statistics.median(throughput[n]), "timed_examples": len(timed), "repeats": repeats, **load}
    bases = [n for n in names if n.startswith("ar_beam")][:1] + [n for n in names if n == "ar_greedy"]
    for base in bases:
        for n in names:
            out[n][f"speedup_vs_{base}"] = statistics.median(b / x for b, x in zip(per_example[base], per_example[n]))
    return out


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
    ratios = [k for k in next(iter(results.values())) if k.startswith("speedup_vs_")]
    head = ["setting", "examples", *names, "latency b1 ms (p25-p75)", "examples/s b32",
            *(k.replace("_", " ") for k in ratios)]
    lines = ([f"# {title}", ""] if title else []) + ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        row = [name, str(r.get("examples", "")), *(f"{r[m]:.2f}" for m in names),
               f"{r['latency_ms_b1']:.1f} ({r['latency_ms_b1_p25']:.1f}-{r['latency_ms_b1_p75']:.1f})",
               f"{r['examples_per_s_b32']:.1f}", *(f"{r[k]:.2f}x" for k in ratios)]
        lines.append("| " + " | ".join(row) + " |")
    first = next(iter(results.values()))
    lines += ["", f"Latency: median over {first['timed_examples']} examples of each one's median over {first['repeats']} "
                  f"interleaved repeats; speed-ups are paired ratios from the same run; load average "
                  f"{first['load_average_start']:.2f} at the start, {first['load_average_end']:.2f} at the end."]
    sig = next((r[k] for r in results.values() for k in ("bleu_signature",) if k in r), None)
    if sig:
        lines += ["", f"sacreBLEU signature: `{sig}`"]
    if "draft" in results and "identical_to_ar_greedy" in results["draft"]:
        d = results["draft"]
        lines += ["", f"draft-and-verify: {d.get('speedup_vs_ar_greedy', float('nan')):.2f}x AR greedy at batch 1, "
                      f"{d['tokens_per_round']:.2f} tokens per round, output identical to AR greedy on "
                      f"{100 * d['identical_to_ar_greedy']:.1f}% of examples"]
    return "\n".join(lines) + "\n"


def plot_frontier(results: dict, path: Path, metric: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    most = max(r.get("examples", 0) for r in results.values())
    for name, r in results.items():
        spread = [[r["latency_ms_b1"] - r["latency_ms_b1_p25"]], [r["latency_ms_b1_p75"] - r["latency_ms_b1"]]]
        ax.errorbar(r["latency_ms_b1"], r[metric], xerr=spread, fmt="o", capsize=3,
                    color="C1" if name.startswith(("nar", "bang")) else "C0")
        label = name if r.get("examples", most) == most else f"{name} (first {r['examples']})"  # another sample
        ax.annotate(label, (r["latency_ms_b1"], r[metric]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per example at batch 1 (ms, log scale; bars: quartiles over examples)")
    ax.set_ylabel(metric)
    top = max(r[metric] for r in results.values())
    ax.set_ylim(0, max(1.0, 1.2 * top))  # from zero: a spread of 0.1 BLEU must not look like a frontier
    ax.set_title(title or "quality / latency from one checkpoint")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

