"""`janus finetune`: adapt a pretrained checkpoint or export (or scratch) to a task on the same Ray +
DeepSpeed engine as pretraining, with the same resume and preemption behaviour. Every `eval_every` steps
the workers decode dev pairs (AR greedy) and score the task's primary metric; the best checkpoint is
marked in checkpoints/best.json and never deleted by retention."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from finetune.metrics import PRIMARY, task_scores
from finetune.tasks import check_task
from janus.export import sha256_file
from pretrain.config import TrainConfig, load_config

CONFIG_DIR = Path(__file__).parent / "configs"


class DevEvaluator:
    """Called by every worker with its model: (metric name, value) on the given dev pairs, decoded AR
    greedy, or NAR mask-predict T=4 for a model trained without an AR term (CMLM-only)."""

    def __init__(self, task: str, pairs: list[tuple[str, str]], tokenizer: str, objective_name: str = "janus"):
        from janus.objective import objective

        self.task, self.pairs, self.tokenizer = task, pairs, tokenizer
        self.nar = not objective(objective_name).needs_ar and objective(objective_name).bang_streams == 0

    def __call__(self, model) -> tuple[str, float]:
        from janus.generate import Mode, translate
        from janus.tokenizer import Tokenizer

        was_training = model.training
        mode = Mode("nar_T4", "nar", iterations=4) if self.nar else Mode("ar_greedy", "ar_greedy")
        hyps = translate(model, Tokenizer(self.tokenizer), [s for s, _ in self.pairs], mode)
        model.train(was_training)
        metric = PRIMARY[self.task]
        return metric, task_scores(self.task, hyps, [t for _, t in self.pairs])[metric]



def prepare(task: str, data: str, init: str, config: str | None, overrides: list[str]) -> tuple[TrainConfig, DevEvaluator]:
    """Validates the data, settles the tokenizer, writes the train shards (once) and returns the config."""
    from janus.tokenizer import train_tokenizer
    from pretrain.init_weights import resolve
    from pretrain import checkpoint
    from pretrain.run_lock import wait_until_free
    from pretrain.shards import pairs_fingerprint, read_index, write_pair_shards

    splits = check_task(task, data)
    cfg = load_config(config or "tiny", overrides, config_dir=CONFIG_DIR)
    cfg.task, cfg.data_kind = task, "pairs"
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
    dev = splits["dev"][::max(1, len(splits["dev"]) // cfg.dev_examples)][:cfg.dev_examples]
    return cfg, DevEvaluator(task, dev, str(tok_path.resolve()), cfg.objective)


def run_finetune(task: str, data: str, init: str, config: str | None = None, overrides: list[str] = (),
                 address: str | None = None) -> Path:
    from pretrain.trainer import run_training

    cfg, evaluator = prepare(task, data, init, config, list(overrides))
    return run_training(cfg, address, evaluator=evaluator)
