"""`janus demo`: the largest real piece of the pipeline that exists today, on this machine.

Fetches the real en-de LibreOffice corpus, trains a tokenizer, trains a JANUS model with the NMT
objective in-process, evaluates AR and NAR decoding from the same checkpoint, and writes
runs/demo/report.md with plots. Interrupted and started again, it resumes from its last checkpoint.
(The Ray + DeepSpeed engine, pretraining and export join this job as their issues land.)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from finetune.evaluate import evaluate
from janus.config import preset
from janus.model import JanusModel
from janus.objective import compute_loss, objective
from janus.parallel import init_parallel
from pretrain.batching import make_batch, token_budget_batches
from pretrain.datasets import nmt_tokenizer, read_pairs
from pretrain.trainer import lr_at

TOKENS_PER_BATCH = 1024
MAX_TOKENS = 64
EVAL_PAIRS = 100


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(run_dir: Path, model: JanusModel, tok, pairs, steps: int, seed: int = 0) -> list[dict]:
    ckpt = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.jsonl"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)
    encoded = [(tok.encode(s), tok.encode(t)) for s, t in pairs]
    encoded = [(s, t) for s, t in encoded if len(s) <= MAX_TOKENS and len(t) <= MAX_TOKENS]
    lengths = [max(len(s), len(t)) for s, t in encoded]
    step, epoch, cursor = 0, 0, 0
    gen = torch.Generator().manual_seed(seed)
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, cursor = state["step"], state["epoch"], state["cursor"]
        gen.set_state(state["generator"])
        print(f"resuming {run_dir} from step {step}")
    history = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
    history = [h for h in history if h["step"] <= step]
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    epoch_gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    batches = token_budget_batches(lengths, TOKENS_PER_BATCH, epoch_gen)
    cfg = objective("janus")
    model.train()
    bar = tqdm(total=steps, initial=step, desc="train JANUS", unit="step")
    while step < steps:
        if cursor >= len(batches):
            epoch, cursor = epoch + 1, 0
            batches = token_budget_batches(lengths, TOKENS_PER_BATCH, torch.Generator().manual_seed(seed * 1000 + epoch))
        idx = batches[cursor]
        batch = make_batch([encoded[i][0] for i in idx], [encoded[i][1] for i in idx], gen)
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, 1e-3, 100)
        loss, terms = compute_loss(model, batch, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step, cursor = step + 1, cursor + 1
        tokens = int(batch.tgt.ne(0).sum())
        record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                  "lr": lr_at(step - 1, 1e-3, 100), "grad_norm": float(grad_norm),
                  "tokens_per_s": tokens / (time.perf_counter() - start), "epoch": epoch}
        history.append(record)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if k != "step":
                writer.add_scalar(f"train/{k}", v, step)
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
        bar.update(1)
        if step % 100 == 0 or step == steps:
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
                          "cursor": cursor, "generator": gen.get_state(), "config": model.cfg.to_dict()}, ckpt)
    bar.close()
    writer.close()
    return history


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    steps = [h["step"] for h in history]
    for key in ("loss", "ar", "nar", "aux", "length"):
        ax.plot(steps, [h[key] for h in history], label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title("JANUS training on LibreOffice en-de")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_frontier(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, r in results.items():
        ax.scatter(r["latency_ms_b1"], r["bleu"])
        ax.annotate(name, (r["latency_ms_b1"], r["bleu"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("latency per example, batch 1 (ms, log scale)")
    ax.set_ylabel("sacreBLEU")
    ax.set_title("Quality / latency from one checkpoint")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(run_dir: str = "runs/demo", steps: int = 600, preset_name: str = "small", seed: int = 0) -> dict:
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    torch.set_flush_denormal(True)
    init_parallel(1)
    print("[1/3] data: LibreOffice help en-de (Debian packages, pinned and checksummed) + tokenizer")
    data, tok = nmt_tokenizer(8000)
    torch.manual_seed(seed)
    model = JanusModel(preset(preset_name, vocab_size=tok.vocab_size))
    print(f"[2/3] train: {preset_name} JANUS, {model.num_parameters() / 1e6:.1f}M parameters, {steps} steps")
    history = train(run, model, tok, read_pairs(data, "train"), steps, seed)
    plot_losses(history, run / "loss.png")
    print(f"[3/3] evaluate AR and NAR decoding on {EVAL_PAIRS} dev pairs")
    dev = read_pairs(data, "dev")[:EVAL_PAIRS]
    results = evaluate(model, tok, dev, latency_examples=10)
    for name, r in results.items():
        (run / f"hyp.{name}.txt").write_text("\n".join(r.pop("hypotheses")) + "\n")
    (run / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_frontier(results, run / "frontier.png")
    table = ["| mode | BLEU | chrF | latency b1 (ms) | examples/s b32 | speed-up vs AR beam 5 |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        table.append(f"| {name} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['latency_ms_b1']:.1f} | "
                     f"{r['examples_per_s_b32']:.1f} | {r['speedup_vs_ar_beam5']:.2f}x |")
    sig = results["ar_beam5"]["bleu_signature"]
    report = [f"# JANUS demo ({time.strftime('%Y-%m-%d')})", "",
              f"{preset_name} model, {history[-1]['step']} steps of {TOKENS_PER_BATCH}-token batches, "
              f"final loss {history[-1]['loss']:.3f}; dev = first {EVAL_PAIRS} pairs of the held-out "
              "LibreOffice modules.", "", *table, "",
              f"BLEU is detokenized sacreBLEU, signature `{sig}`.", "",
              "![loss](loss.png)", "", "![frontier](frontier.png)", ""]
    (run / "report.md").write_text("\n".join(report))
    print("\n".join(table))
    print(f"report: {run / 'report.md'}")
    return results
