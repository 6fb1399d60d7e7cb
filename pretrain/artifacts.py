"""Any artifact -> weights, config, tokenizer, model. An artifact is an export directory, a checkpoint step
directory, or a run directory (its best checkpoint if fine-tuning marked one, else its newest complete
one). Evaluation, the study, the demo, `janus export` and fine-tuning's `--init` all read through here;
`janus.load` reads exports, the one artifact the `janus` package knows, through the same model builder."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from janus.config import ModelConfig
from janus.export import is_export, read_export, sha256_file
from pretrain import checkpoint


def resolve(path: str | Path) -> Path:
    """The export or checkpoint step directory that `path` names."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: give an export (janus export), a checkpoint step "
                                f"directory or a run directory")
    if is_export(p):
        return p
    if (p / checkpoint.MARKER).is_file():
        wrong = checkpoint.problem(p)
        if wrong:
            raise ValueError(f"{wrong}: give another checkpoint step (or the run directory for its newest whole one)")
        return p
    root = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    step = checkpoint.best_step(root)
    if step is None:
        step = checkpoint.latest_complete(root)
    if step is None:
        raise FileNotFoundError(f"{p} holds no complete checkpoint and is not an export")
    return root / checkpoint.tag_for(step)


def model_config(path: str | Path) -> ModelConfig:
    p = resolve(path)
    return ModelConfig.from_dict(json.loads((p / "config.json").read_text())["model"])


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, Path]:
    """(whole fp32 state dict, model config, tokenizer file) of an export or a checkpoint."""
    p = resolve(path)
    if is_export(p):
        return read_export(p)
    config = json.loads((p / "config.json").read_text())
    return checkpoint.consolidate(p), ModelConfig.from_dict(config["model"]), p / "tokenizer.model"


def load_model(path: str | Path, device: str | None = None):
    """(model in eval mode on `device` (default: a GPU if there is one), its Tokenizer, how it was made:
    {"train": TrainConfig dict, "finetune": task and dev config, or {}}) for any artifact. At TP=1 no process
    group is needed."""
    from janus.generate import build
    from janus.tokenizer import Tokenizer

    state, cfg, tok_path = read_weights(path)
    return build(state, cfg, device), Tokenizer(tok_path), made_by(path)


def made_by(path: str | Path) -> dict:
    info = json.loads((resolve(path) / "config.json").read_text())
    info = info.get("source", info)  # an export keeps its checkpoint's under "source"
    return {"train": info.get("train", {}), "finetune": info.get("finetune", {})}


def load_into(model, path: str | Path, tokenizer: str | Path) -> None:
    """Copy the weights at `path` into `model` (any TP size; fine-tuning's `init`), refusing a mismatched
    tokenizer or shape."""
    state, cfg, tok = read_weights(path)
    if cfg.vocab_size != model.cfg.vocab_size:
        raise ValueError(f"{path} has a {cfg.vocab_size}-piece vocabulary and the tokenizer {tokenizer} has "
                         f"{model.cfg.vocab_size}: use the tokenizer in {tok}")
    if sha256_file(tok) != sha256_file(Path(tokenizer)):
        raise ValueError(f"tokenizer {tokenizer} is not the one {path} was trained with ({tok}): "
                         f"use that tokenizer for the data (janus data shard --tokenizer {tok})")
    if (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size) != \
            (model.cfg.d_model, model.cfg.encoder_layers, model.cfg.decoder_layers, model.cfg.vocab_size):
        raise ValueError(f"{path} holds a d_model={cfg.d_model}, {cfg.encoder_layers}+{cfg.decoder_layers} layer, "
                         f"vocab {cfg.vocab_size} model; the config asks for d_model={model.cfg.d_model}, "
                         f"{model.cfg.encoder_layers}+{model.cfg.decoder_layers} layers, vocab {model.cfg.vocab_size}")
    model.load_full_state_dict(state)
