"""Fine-tuning's dev evaluation, given to the trainer as a hook: every `eval_every` steps (and at the last)
every worker decodes the dev pairs and scores the task's primary metric; a new best is checkpointed and
marked in checkpoints/best.json (which retention never deletes), and `patience` evaluations without one
end the run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch.distributed as dist

from finetune.metrics import PRIMARY, task_scores
from pretrain import checkpoint
from pretrain.config import ConfigKeyError
from pretrain.trainer import Hook


@dataclass
class DevConfig:
    eval_every: int = 0  # dev metric every N steps and at the last (0: never); the best checkpoint is kept
    patience: int = 0  # > 0: end the run after this many dev evaluations without a new best
    dev_examples: int = 200  # dev pairs decoded for the dev metric, spread over the split

    def validate(self) -> "DevConfig":
        for key in ("eval_every", "patience"):
            if getattr(self, key) < 0:
                raise ConfigKeyError(f"config key {key}={getattr(self, key)!r}: must be >= 0")
        if self.dev_examples < 1:
            raise ConfigKeyError(f"config key dev_examples={self.dev_examples!r}: must be a positive integer")
        if self.patience and not self.eval_every:
            raise ConfigKeyError(f"config key patience={self.patience!r}: needs eval_every > 0 (dev evaluations "
                                 "to count)")
        return self


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


class DevHook(Hook):
    def __init__(self, cfg: DevConfig, evaluator: DevEvaluator):
        self.cfg, self.evaluator = cfg, evaluator
        self.evals_since_best = 0

    def describe(self) -> dict:
        return {"finetune": {"task": self.evaluator.task, **dataclasses.asdict(self.cfg)}}

    def state_dict(self) -> dict:
        return {"evals_since_best": self.evals_since_best}

    def load_state_dict(self, state: dict) -> None:
        self.evals_since_best = state.get("evals_since_best", 0)

    def finished(self) -> bool:
        return bool(self.cfg.patience) and self.evals_since_best >= self.cfg.patience

    def after_step(self, trainer, final: bool) -> str | None:
        step, every = trainer.counters.step, self.cfg.eval_every
        if not every or not (final or step % every == 0):
            return None
        name, value = self.evaluator(trainer.engine.module)  # every rank decodes: TP/ZeRO-3 forwards are collective
        best = checkpoint.best_step(trainer.root)
        best_value = json.loads((trainer.root / "best.json").read_text())["value"] if best is not None else None
        if trainer.rank == 0:
            print(f"step {step}: dev {name} {value:.2f}", flush=True)
            trainer.log.scalar(f"dev/{name}", value, step)
            with open(trainer.run_dir / "dev.jsonl", "a") as f:
                f.write(json.dumps({"step": step, name: value}) + "\n")
        improved = best_value is None or value > best_value
        self.evals_since_best = 0 if improved else self.evals_since_best + 1
        reason = None
        if improved:
            trainer.save()
            if trainer.rank == 0:
                checkpoint.mark_best(trainer.root, step, name, value)
        elif self.finished():
            reason = "patience"  # the dev metric has stopped improving: this step is the last
            if trainer.rank == 0:
                print(f"dev {name} has not improved for {self.cfg.patience} evaluations (best {best_value:.2f} at "
                      f"step {best}): stopping at step {step}", flush=True)
        dist.barrier()
        return reason
