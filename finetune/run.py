"""`janus finetune`: adapt a pretrained checkpoint or export (or scratch) to a task on the same Ray +
DeepSpeed engine as pretraining, with the same resume and preemption behaviour, plus the dev evaluation
of finetune/dev.py (best checkpoint kept, patience)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

from finetune.dev import DevConfig, DevEvaluator, DevHook
from finetune.tasks import check_task
from janus.export import sha256_file
from pretrain.config import TrainConfig, build, read_config

CONFIG_DIR = Path(__file__).parent / "configs"


def load_finetune_config(config: str | None = None, overrides: list[str] = ()) -> tuple[TrainConfig, DevConfig]:
    """A fine-tuning config (a path, or a name in finetune/configs/; default tiny) and key=value overrides,
    split into the trainer's config and the dev evaluation's."""
    values = read_config(config or "tiny", overrides, CONFIG_DIR)
    return build(TrainConfig, values, (DevConfig,)).validate(), build(DevConfig, values, (TrainConfig,)).validate()


def prepare(task: str, data: str, init: str, cfg: TrainConfig, dev: DevConfig) -> tuple[TrainConfig, DevHook]:
    """Validates the data, settles the tokenizer, writes the train shards (once); returns the run's config
    and its dev hook."""
    from janus.tokenizer import train_tokenizer
    from pretrain.artifacts import resolve
    from pretrain import checkpoint
    from pretrain.run_lock import wait_until_free
    from pretrain.shards import pairs_fingerprint, read_index, write_pair_shards

    splits = check_task(task, data)
    dev.validate()
    cfg = dataclasses.replace(cfg, data_kind="pairs").validate()
    if cfg.long_source == "auto":  # GLGE systems truncate long inputs (fairseq --truncate-source)
        cfg.long_source = "drop" if task == "nmt" else "truncate"
    run_dir = Path(cfg.run_dir)
    wait_until_free(run_dir.resolve(), cfg.lock_wait_s)  # no live run of this directory reads what we rewrite
    run_dir.mkdir(parents=True, exist_ok=True)
    tok_path = run_dir / "tokenizer.model"
    if init != "scratch":
        source = resolve(init)
        cfg.init = str(source)
        theirs = source / "tokenizer.model"
        if cfg.tokenizer and sha256_file(Path(cfg.tokenizer)) != sha256_file(theirs):
            raise ValueError(f"tokenizer {cfg.tokenizer} does not match the one {source} was trained with "
                             f"({theirs}): drop tokenizer= to use the checkpoint's")
        if not tok_path.is_file():
            shutil.copy(theirs, tok_path)
    elif cfg.tokenizer:
        if not tok_path.is_file():
            shutil.copy(cfg.tokenizer, tok_path)
        elif sha256_file(cfg.tokenizer) != sha256_file(tok_path):
            raise ValueError(f"tokenizer {cfg.tokenizer} is not {tok_path}, the one this run directory trains "
                             f"with: drop tokenizer= to continue, or give a new run_dir")
    elif not tok_path.is_file():
        texts = [s for pair in splits["train"] for s in pair]
        train_tokenizer(texts, tok_path, vocab_size=min(8000, max(1000, len(set(" ".join(texts).split())) // 4)))
    cfg.tokenizer = str(tok_path)
    shards = run_dir / "shards"
    if (shards / "index.json").is_file() and checkpoint.complete_steps(run_dir / "checkpoints", verify=False):
        written = read_index(shards).get("input_sha256")
        if written != pairs_fingerprint(splits["train"], tok_path):
            raise ValueError(f"{Path(data) / 'train.src'} (or .tgt) is not the data {run_dir} trained on "
                             f"({shards / 'index.json'}): give a new run_dir to train on it, or restore the data")
    per_shard = math.ceil(len(splits["train"]) / max(4, 2 * cfg.num_workers))
    write_pair_shards(splits["train"], tok_path, shards, pairs_per_shard=per_shard, replace=True)  # reused if unchanged
    cfg.shards = str(shards)
    # spread over the split: its first pairs are often one kind (the en-de dev split opens with chart UI strings)
    pairs = splits["dev"][::max(1, len(splits["dev"]) // dev.dev_examples)][:dev.dev_examples]
    return cfg, DevHook(dev, DevEvaluator(task, pairs, str(tok_path.resolve()), cfg.objective))


def run_finetune(task: str, data: str, init: str, cfg: TrainConfig, dev: DevConfig,
                 address: str | None = None) -> Path:
    from pretrain.launch import run_training

    cfg, hook = prepare(task, data, init, cfg, dev)
    return run_training(cfg, address, hooks=[hook])
