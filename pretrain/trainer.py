"""One rank's training: `Trainer(cfg, hooks).fit()`, run by Ray in every worker (`pretrain.launch` starts
them). `janus pretrain` and `janus finetune` both train here; fine-tuning adds its dev evaluation as a hook.

The run directory is the unit of resume: every start continues from the newest complete checkpoint under
RUN_DIR/checkpoints (model, optimizer, loader cursor, RNG state, counters, hook state). A checkpoint
written by another number of data-parallel ranks is loaded from DeepSpeed's universal format (elastic
resume); the data order then restarts from a seed derived from the step, since the old per-rank cursors
do not divide among the new ranks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist

from janus.files import FileFault, atomic_write
from pretrain import checkpoint, resume
from pretrain.config import TrainConfig

PREEMPT_FLAG = "PREEMPTED"  # the driver touches it on SIGTERM/SIGUSR1/SIGINT: checkpoint and stop
DIVERGED_FLAG = "DIVERGED"  # rank 0 writes why, when max_nonfinite losses in a row stopped the run


class Hook:
    """Called by every rank after each optimizer step. Its state is checkpointed with the run."""

    def describe(self) -> dict:
        """Written into each checkpoint's config.json beside the train and model configs."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finished(self) -> bool:
        """True when a resumed run has nothing left to do for this hook's reasons."""
        return False

    def after_step(self, trainer: "Trainer", final: bool) -> str | None:
        """A reason to make this step the last (written to stopped.json), or None."""
        return None


class Trainer:
    def __init__(self, cfg: TrainConfig, hooks: list[Hook] = (), progress_bar: bool = False):
        import deepspeed

        from janus.flops import measure_peak_gflops
        from janus.objective import objective
        from janus.parallel import init_parallel, parallel_state, tensor_parallel
        from janus.tokenizer import Tokenizer
        from pretrain.deepspeed_setup import MegatronMPU, deepspeed_config, ensure_launcher_env
        from pretrain.metrics import MetricsLog
        from pretrain.run_lock import hold

        self.cfg, self.hooks = cfg, list(hooks)
        ensure_launcher_env()
        torch.set_flush_denormal(True)
        if not torch.cuda.is_available():  # one thread per core this worker was given: more only oversubscribes
            torch.set_num_threads(cfg.cpu_threads or
                                  max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        if torch.cuda.is_available():  # Ray shares the node's GPUs among its workers: LOCAL_RANK picks this one's
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        init_parallel(cfg.tensor_parallel)
        if torch.cuda.is_available():  # megatron's CUDA RNG tracker (TP regions) must be seeded before use
            tensor_parallel.model_parallel_cuda_manual_seed(cfg.seed)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        dp_rank, dp_world = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
        self.run_dir = Path(cfg.run_dir)
        self.root = self.run_dir / "checkpoints"
        # held until this process ends: no second run writes here
        self.lock = hold(self.run_dir, cfg.lock_wait_s) if self.rank == 0 else None
        start = resume.find(self.root, self.world, cfg.tensor_parallel)

        torch.manual_seed(cfg.seed)  # identical on every rank: replicated weights start equal
        self.tokenizer = Tokenizer(cfg.tokenizer)
        self.model = self._build_model(start)
        self.engine, _, _, _ = deepspeed.initialize(model=self.model, model_parameters=self.model.parameters(),
                                                    config=deepspeed_config(cfg, universal=start.elastic),
                                                    mpu=MegatronMPU())
        self.counters, loader_state = resume.Counters(), None
        if start.step is not None:
            own = checkpoint.load(self.root, start.step, self.engine, universal=start.elastic)
            self.counters = resume.counters_from(own["counters"])
            # (a checkpoint from before the hooks had their own state kept the patience count in its counters)
            for hook, state in zip(self.hooks, own.get("hooks") or [own["counters"]] * len(self.hooks)):
                hook.load_state_dict(state)
            if start.elastic:  # a new data order; dropout streams re-seeded from the step
                torch.manual_seed(cfg.seed + 7919 * self.counters.step + 1000 * dp_rank)
            else:
                loader_state = own["loader"]
                torch.set_rng_state(own["rng"])
                if own.get("cuda_rng") is not None and torch.cuda.is_available():
                    torch.cuda.set_rng_state(own["cuda_rng"])
        else:  # dropout masks: different per data-parallel rank, identical across TP ranks
            torch.manual_seed(cfg.seed + 1000 * dp_rank)
        self.objective = objective(cfg.objective, cfg.kl_scale)
        self.loader = self._loader(dp_rank, dp_world, loader_state, start.elastic)
        peak = torch.tensor([cfg.peak_gflops or measure_peak_gflops(reps=5)])
        dist.all_reduce(peak)  # MFU is relative to the sum of every rank's peak
        self.peak_gflops = float(peak)
        self.log = MetricsLog(self.run_dir, self.counters.step, cfg.max_steps, progress_bar) if self.rank == 0 else None
        if self.rank == 0:
            print(f"{'resuming from step ' + str(self.counters.step) if self.counters.step else 'starting'}: "
                  f"{cfg.model_preset} JANUS ({cfg.objective}), {self.world} ranks (TP {cfg.tensor_parallel} x DP "
                  f"{dp_world}), ZeRO-{cfg.zero_stage}, {self.engine.device}, {torch.get_num_threads()} threads/rank",
                  flush=True)

    def _build_model(self, start: resume.ResumePoint):
        """A resumed run keeps its checkpoint's shape; fine-tuning from `init` takes that model's (with this
        run's dropout). Built whole from the seed, then sharded when there is a TP group."""
        from janus.config import ModelConfig, preset
        from janus.model import JanusModel
        from janus.parallelize import parallelize
        from pretrain.artifacts import load_into, model_config

        cfg = self.cfg
        model_cfg = preset(cfg.model_preset, vocab_size=self.tokenizer.vocab_size)
        if cfg.dropout >= 0:
            model_cfg = dataclasses.replace(model_cfg, dropout=cfg.dropout)
        if start.step is not None:
            saved = json.loads((self.root / checkpoint.tag_for(start.step) / "config.json").read_text())["model"]
            model_cfg = ModelConfig.from_dict(saved)
        elif cfg.init:
            model_cfg = dataclasses.replace(model_config(cfg.init), dropout=model_cfg.dropout,
                                            vocab_size=self.tokenizer.vocab_size)
        model = parallelize(JanusModel(model_cfg))
        if start.step is None and cfg.init:
            load_into(model, cfg.init, cfg.tokenizer)
        return model

    def _loader(self, dp_rank: int, dp_world: int, state: dict | None, elastic: bool):
        from pretrain.loader import LoaderConfig, PairLoader
        from pretrain.shards import read_index, shard_urls

        cfg = self.cfg
        loader_cfg = LoaderConfig(kind=cfg.data_kind, aux_order=self.objective.aux_order,
                                  token_budget=cfg.token_budget, max_source_tokens=cfg.max_source_tokens,
                                  max_target_tokens=cfg.max_target_tokens,
                                  truncate_source=cfg.long_source == "truncate", window=cfg.window,
                                  storage=cfg.storage(), wait_s=cfg.shard_wait_s, masking=cfg.masking,
                                  seed=cfg.seed + (7919 * self.counters.step if elastic else 0),
                                  num_workers=cfg.loader_workers)
        index = read_index(cfg.shards, cfg.storage())
        return PairLoader(shard_urls(cfg.shards, index), loader_cfg, rank=dp_rank, world=dp_world, state=state,
                          checksums=[s.get("sha256") for s in index["shards"]])

    def save(self) -> None:
        """Collective: a complete-or-nothing checkpoint of this step."""
        layout = {name: (p.partition_dim if getattr(p, "tensor_model_parallel", False) else None)
                  for name, p in self.model.named_parameters()}
        config = {"train": self.cfg.to_dict(), "model": self.model.cfg.to_dict(),
                  **{k: v for hook in self.hooks for k, v in hook.describe().items()}}
        files = {"config.json": json.dumps(config, indent=2).encode(), "layout.json": json.dumps(layout).encode(),
                 "tokenizer.model": Path(self.cfg.tokenizer).read_bytes()}
        own = {"counters": vars(self.counters).copy(), "loader": self.loader.state_dict(),
               "rng": torch.get_rng_state(), "hooks": [hook.state_dict() for hook in self.hooks],
               "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
        checkpoint.save(self.root, self.counters.step, self.engine, own, keep=self.cfg.keep_checkpoints, files=files,
                        info={"tensor_parallel": self.cfg.tensor_parallel, "zero_stage": self.cfg.zero_stage})

    def train_step(self, batch, poison: bool = False) -> tuple[torch.Tensor, dict, bool] | str:
        """Forward and backward of one micro-batch, and the optimizer step when it closes a window of
        `grad_accum` (DeepSpeed accumulates until then): (loss, its terms, whether the step was taken). Or, the
        same on every rank, "stop" (a signal arrived, at the start of a window: nothing trained) or "skip" (a
        rank's loss is non-finite: every rank skips this micro-batch together)."""
        from janus.objective import compute_loss

        batch = batch.to(self.engine.device, non_blocking=True)
        loss, terms = compute_loss(self.engine.module, batch, self.objective)
        if poison:
            loss = loss * float("nan")
        # one collective and one host sync per step decide for every rank together whether to stop (a signal
        # arrived), to skip the step (a non-finite loss) or to make it the last (the time budget is spent), so
        # no rank waits in a collective another left; the slowest rank's clock is everyone's
        flags = torch.stack([torch.tensor(float((self.run_dir / PREEMPT_FLAG).exists()), device=loss.device),
                             (~torch.isfinite(loss.detach())).float(),
                             torch.tensor(self._spent_before + time.perf_counter() - self._start, device=loss.device)])
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop, bad, self.counters.seconds = flags.tolist()
        if stop > 0 and self.engine.micro_steps % self.cfg.grad_accum == 0:
            return "stop"
        if bad > 0:
            return "skip"
        stepped = self.engine.is_gradient_accumulation_boundary()
        self.engine.backward(loss)
        self.engine.step()
        self.counters.step += int(stepped)
        return loss, terms, stepped

    def fit(self) -> dict:
        """The step loop; returns {"fault": one line or None} (rank 0's value reaches the driver)."""
        from janus.flops import step_flops
        from pretrain.lr_schedule import lr_at

        cfg = self.cfg
        bad_batches = {int(x) for x in cfg.debug_nonfinite_batches.split(",") if x.strip()}
        on_signals(lambda *_: (self.run_dir / PREEMPT_FLAG).touch())  # e.g. Slurm signalling every task
        self._start = time.perf_counter()
        self._spent_before, last_step_end, drawn = self.counters.seconds, self._start, 0
        budget_s = cfg.max_minutes * 60
        fault, window = None, []  # window: (loss, terms, target tokens, flops) of this step's micro-batches
        try:
            for batch in self.loader:
                drawn += 1
                if not window and (self.counters.step >= cfg.max_steps
                                   or (budget_s > 0 and self.counters.seconds >= budget_s)
                                   or any(hook.finished() for hook in self.hooks)):
                    break
                time_left = 1.0 - self.counters.seconds / budget_s if budget_s else 1.0  # agreed by every rank
                for group in self.engine.optimizer.param_groups:
                    group["lr"] = lr_at(self.counters.step, cfg.lr, cfg.warmup_steps, cfg.lr_schedule, cfg.max_steps,
                                        cfg.lr_end, cfg.lr_power, time_left)
                # counted on the host copy, so that logging needs no device sync of its own
                flops = step_flops(self.model.cfg, batch, self.objective) / cfg.tensor_parallel  # this rank's share
                target_tokens = int(batch.tgt.ne(self.model.cfg.pad_id).sum())
                result = self.train_step(batch, poison=drawn in bad_batches)
                if result == "stop":
                    self._stop_at_checkpoint()
                    break
                if result == "skip":
                    if self._skip_nonfinite():
                        break
                    continue
                loss, terms, stepped = result
                self.counters.nonfinite_in_row = 0
                window.append((loss, terms, target_tokens, flops))
                if not stepped:
                    continue
                final = self.counters.step >= cfg.max_steps or (budget_s > 0 and self.counters.seconds >= budget_s)
                why = "max_steps" if self.counters.step >= cfg.max_steps else "clock"
                seconds = time.perf_counter() - last_step_end  # wall clock: loader wait + step + logging
                last_step_end = time.perf_counter()
                self._record(window, seconds)
                window = []
                for hook in self.hooks:
                    reason = hook.after_step(self, final)
                    if reason:
                        final, why = True, reason
                # (a hook that kept this step, a new best, has written its checkpoint already)
                if (self.counters.step % cfg.checkpoint_every == 0 or final) and not self._saved_now():
                    self.save()
                if cfg.debug_sigkill_at_step == self.counters.step and self.rank == self.world - 1 \
                        and not (self.run_dir / "debug-killed").exists():
                    (self.run_dir / "debug-killed").touch()
                    os.kill(os.getpid(), signal.SIGKILL)
                if final:
                    if self.rank == 0:
                        if why == "clock":
                            print(f"time budget max_minutes={cfg.max_minutes:g} spent: stopped at step "
                                  f"{self.counters.step}", flush=True)
                        atomic_write(self.run_dir / "stopped.json",
                                     json.dumps({"step": self.counters.step, "why": why}) + "\n")
                    break
        except FileFault as err:  # every rank raises the same one (checkpoint.save agrees on it)
            fault = str(err)
        if self.rank == 0:
            self.log.close()
            if self.lock is not None:
                os.close(self.lock)
        return {"fault": fault}

    def _saved_now(self) -> bool:
        return checkpoint.is_complete(self.root / checkpoint.tag_for(self.counters.step), verify=False)

    def _stop_at_checkpoint(self) -> None:
        if self.counters.step > 0 and not self._saved_now():
            self.save()
        if self.rank == 0:
            print(f"stopping: checkpoint at step {self.counters.step}", flush=True)

    def _skip_nonfinite(self) -> bool:
        """Count a skipped step; True when max_nonfinite in a row end the run (DIVERGED says why)."""
        c = self.counters
        c.nonfinite += 1
        c.nonfinite_in_row += 1
        if self.rank == 0:
            print(f"non-finite loss at step {c.step + 1}: skipped ({c.nonfinite_in_row} in a row)", flush=True)
        if c.nonfinite_in_row < self.cfg.max_nonfinite:
            return False
        if self.rank == 0:
            last = checkpoint.latest_complete(self.root)
            (self.run_dir / DIVERGED_FLAG).write_text(
                f"the loss was non-finite {c.nonfinite_in_row} steps in a row at step {c.step + 1}; the last good "
                f"checkpoint is step {last} in {self.root}. Lower lr, raise warmup_steps or grad_clip, or check the "
                f"data; rerunning resumes from that checkpoint\n")
        return True

    def _record(self, window: list, seconds: float) -> None:
        """The step's one all-reduce and read-back of logged values (losses: the mean over its micro-batches;
        tokens and FLOPs: their sum); rank 0 writes them."""
        from pretrain.deepspeed_setup import loss_scale

        cfg, tp = self.cfg, self.cfg.tensor_parallel
        grad_norm = self.engine.get_global_grad_norm()
        data = self.loader.totals()
        terms = window[0][1]
        losses = torch.stack([torch.stack([loss.detach(), *(v.detach() for v in t.values())]) for loss, t, _, _ in window])
        logged = torch.cat([losses.float().mean(0),
                            torch.tensor([sum(w[2] for w in window), sum(w[3] for w in window), data.skipped,
                                          data.dropped_too_long, data.truncated_source], dtype=torch.float32,
                                         device=losses.device)])
        dist.all_reduce(logged)
        logged = logged.tolist()
        *losses, tokens, step_flops, skipped, too_long, truncated = logged
        self.counters.tokens += int(tokens) // tp
        if self.rank != 0:
            return
        self.log.write({"step": self.counters.step, "loss": losses[0] / self.world,
                        **{k: v / self.world for k, v in zip(terms, losses[1:])},
                        "lr": self.engine.optimizer.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "tokens_per_s": tokens / tp / seconds,
                        "mfu": step_flops / seconds / 1e9 / self.peak_gflops,
                        "gflops": step_flops / 1e9, "peak_gflop_s": self.peak_gflops,
                        "tokens": self.counters.tokens, "skipped_nonfinite": self.counters.nonfinite,
                        "data_skipped": int(skipped) // tp, "pairs_dropped_too_long": int(too_long) // tp,
                        "pairs_truncated": int(truncated) // tp, "loss_scale": loss_scale(self.engine),
                        "elapsed_s": self._spent_before + time.perf_counter() - self._start})  # all sessions


def on_signals(handler, interrupt: bool = False) -> None:
    for sig in (signal.SIGTERM, signal.SIGUSR1, *([signal.SIGINT] if interrupt else [])):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread of this process: the driver's handler covers it
            pass


def train_worker(config: dict) -> dict:
    """The per-rank function Ray calls (torch.distributed is initialised): `config` holds the TrainConfig,
    the hooks (fine-tuning's dev evaluation) and whether to draw a progress bar."""
    import warnings

    warnings.filterwarnings("ignore", message=".*(Transformer Engine|tp_group is None|all_gather_into_tensor).*")
    trainer = Trainer(TrainConfig(**config["train"]), config.get("hooks", ()), config.get("progress_bar", False))
    return trainer.fit()
