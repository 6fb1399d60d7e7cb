"""`janus export RUN_OR_CKPT --out DIR`: a checkpoint (any ZeRO stage, any TP size) consolidated into the
export format of janus/export.py, with a model card that carries the run's metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

from janus.export import check_export_target, verify_export, write_export
from pretrain.artifacts import read_weights, resolve


def _model_card(source: Path, cfg, task: str | None, train: dict, manifest: dict) -> str:
    run_dir = source.parent.parent
    lines = [f"# JANUS model ({task or 'pretrained backbone'})", "",
             "One encoder-decoder that decodes autoregressively (beam, greedy), non-autoregressively "
             "(mask-predict) and by draft-and-verify; load it with `janus.load(DIR)` or pass it to "
             "`janus finetune --init` / `janus evaluate --model`.", "",
             "| | |", "|---|---|",
             f"| d_model / heads / ffn | {cfg.d_model} / {cfg.n_heads} / {cfg.ffn_dim} |",
             f"| layers (enc + dec) | {cfg.encoder_layers} + {cfg.decoder_layers} |",
             f"| vocabulary | {cfg.vocab_size} |",
             f"| objective | {train.get('objective', '?')} |",
             f"| step | {manifest.get('step', '?')} |",
             f"| written by | {manifest.get('world_size', '?')} ranks, TP {manifest.get('tensor_parallel', 1)}, "
             f"ZeRO-{manifest.get('zero_stage', '?')} |",
             f"| exported | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{source}` |", ""]
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        rows = [r for r in rows if r["step"] <= manifest.get("step", 10 ** 12)]
        if rows:
            last = rows[-1]
            lines += ["## Training", "", f"step {last['step']}: loss {last['loss']:.4f}, "
                      f"{last.get('tokens', 0):,} target tokens seen", ""]
    best = run_dir / "checkpoints" / "best.json"
    if best.is_file():
        b = json.loads(best.read_text())
        lines += [f"Best dev {b['metric']}: {b['value']:.2f} at step {b['step']}.", ""]
    for results in sorted(run_dir.glob("**/results.md")):
        lines += [f"## Evaluation ({results.parent.relative_to(run_dir)})", "", results.read_text(), ""]
    return "\n".join(lines)


def export_checkpoint(path: str, out: str, force: bool = False) -> Path:
    check_export_target(Path(out), force)  # before minutes of consolidation
    source = resolve(path)
    state, cfg, tok = read_weights(source)
    info = json.loads((source / "config.json").read_text())
    manifest = json.loads((source / "COMPLETE.json").read_text()) if (source / "COMPLETE.json").is_file() else {}
    train, finetune = info.get("train", {}), info.get("finetune", {})
    card = _model_card(source, cfg, finetune.get("task"), train, manifest)
    out_dir = write_export(out, state, cfg, tok, card, force=force,
                           source={"checkpoint": str(source), "train": train, "finetune": finetune,
                                   "step": manifest.get("step")})
    problems = verify_export(out_dir)
    if problems:
        raise RuntimeError(f"the export just written does not verify: {problems[0]}")
    return out_dir
