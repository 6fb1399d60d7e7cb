"""`janus pretrain`: Ray Train's TorchTrainer runs one DeepSpeed ZeRO worker per rank over the
megatron-core tensor-parallel JANUS backbone, streaming shards through the loader.

The run directory is the unit of resume: every start looks for the newest complete checkpoint under
RUN_DIR/checkpoints and continues from it (model, optimizer, loader cursor, RNG state, step).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pretrain.config import TrainConfig, save_config

# `janus pretrain` exits with this code after a preemption signal (SIGTERM or SIGUSR1) made it finish
# the step, write a checkpoint and stop; rerunning the command resumes. (75 = EX_TEMPFAIL.)
PREEMPTED_EXIT_CODE = 75
PREEMPT_FLAG = "PREEMPTED"


class Preempted(Exception):
    """The run stopped at a checkpoint because it was asked to (SIGTERM / SIGUSR1)."""


def _on_signals(handler) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread of this process: the driver's handler covers it
            pass


def lr_at(step: int, peak: float, warmup: int) -> float:
    """Linear warmup, then inverse square root decay."""
    s, w = step + 1, max(1, warmup)
    return peak * min(s / w, math.sqrt(w / s))


def deepspeed_config(cfg: TrainConfig) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 1,  # batches are token-budgeted by the loader
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [0.9, 0.98], "eps": 1e-8,
                                                  "weight_decay": cfg.weight_decay, "torch_adam": True}},
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": torch.cuda.is_available() and torch.cuda.is_bf16_supported()},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


def train_worker(config: dict) -> None:
    """The per-rank train function (Ray calls it in each worker; torch.distributed is initialised)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*(Transformer Engine|tp_group is None).*")
    import deepspeed

    from janus.config import preset
    from janus.model import JanusModel
    from janus.objective import compute_loss, objective
    from janus.parallel import init_parallel, parallel_state
    from janus.tokenizer import Tokenizer
    from pretrain import checkpoint
    from pretrain.engine import MegatronMPU, ensure_launcher_env
    from pretrain.loader import LoaderConfig, PairLoader
    from pretrain.shards import shard_urls

    cfg = TrainConfig(**config)
    ensure_launcher_env()
    torch.set_flush_denormal(True)
    init_parallel(cfg.tensor_parallel)
    rank = dist.get_rank()
    torch.manual_seed(cfg.seed)  # identical on every rank: replicated weights start equal
    tok = Tokenizer(cfg.tokenizer)
    model = JanusModel(preset(cfg.model_preset, vocab_size=tok.vocab_size))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=deepspeed_config(cfg), mpu=MegatronMPU())
    dp_rank, dp_world = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    run_dir = Path(cfg.run_dir)
    root = run_dir / "checkpoints"
    latest = [checkpoint.latest_complete(root) if rank == 0 else None]
    dist.broadcast_object_list(latest, src=0)
    step, loader_state = 0, None
    if latest[0] is not None:
        own = checkpoint.load(root, latest[0], engine)
        step, loader_state = own["step"], own["loader"]
        torch.set_rng_state(own["rng"])
    if latest[0] is None:  # dropout masks: different per data-parallel rank, identical across TP ranks
        torch.manual_seed(cfg.seed + 1000 * dp_rank)
    loader_cfg = LoaderConfig(kind=cfg.data_kind, token_budget=cfg.token_budget, max_tokens=cfg.max_tokens,
                              window=cfg.window, seed=cfg.seed, num_workers=cfg.loader_workers)
    loader = PairLoader(shard_urls(cfg.shards), loader_cfg, rank=dp_rank, world=dp_world, state=loader_state)
    obj = objective(cfg.objective)
    metrics_path = run_dir / "metrics.jsonl"
    if rank == 0:
        kept = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= step] \
            if metrics_path.exists() else []
        metrics_path.write_text("".join(line + "\n" for line in kept))
        print(f"{'resuming from step ' + str(step) if step else 'starting'}: {cfg.model_preset} JANUS, "
              f"{dist.get_world_size()} ranks (TP {cfg.tensor_parallel} x DP {dp_world}), ZeRO-{cfg.zero_stage}",
              flush=True)
    flag = run_dir / PREEMPT_FLAG
    _on_signals(lambda *_: flag.touch())  # e.g. Slurm signalling every task
    start = time.perf_counter()
    for batch in loader:
        # every rank agrees at a step boundary, so no rank waits in a collective another left
        stop = torch.tensor([float(flag.exists())])
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
        if stop.item() > 0:
            if not checkpoint.is_complete(root / checkpoint.tag_for(step), verify=False) and step > 0:
                checkpoint.save(root, step, engine, {"step": step, "loader": loader.state_dict(),
                                                     "rng": torch.get_rng_state()}, keep=cfg.keep_checkpoints)
            if rank == 0:
                print(f"preempted: checkpoint at step {step}; run the same command to resume", flush=True)
            break
        if step >= cfg.max_steps:
            break
        for group in engine.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps)
        batch = batch.to(engine.device)
        t0 = time.perf_counter()
        loss, terms = compute_loss(engine.module, batch, obj)
        engine.backward(loss)
        engine.step()
        step += 1
        logged = torch.stack([loss.detach().float(), *[v.detach().float() for v in terms.values()],
                              batch.tgt.ne(0).sum().float()])
        dist.all_reduce(logged)
        if rank == 0:
            n = dist.get_world_size()
            record = {"step": step, "loss": float(logged[0]) / n,
                      **{k: float(v) / n for k, v in zip(terms, logged[1:-1])},
                      "lr": lr_at(step - 1, cfg.lr, cfg.warmup_steps),
                      "tokens_per_s": float(logged[-1]) / (time.perf_counter() - t0),
                      "elapsed_s": time.perf_counter() - start}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"step {step}/{cfg.max_steps} loss {record['loss']:.4f} tok/s {record['tokens_per_s']:.0f}",
                  flush=True)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            checkpoint.save(root, step, engine, {"step": step, "loader": loader.state_dict(),
                                                 "rng": torch.get_rng_state()}, keep=cfg.keep_checkpoints)


def run_pretrain(cfg: TrainConfig, address: str | None = None) -> Path:
    """Start (or join) Ray and run the workers; returns the run directory."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pretrain.shards import read_index

    read_index(cfg.shards)  # a wrong path fails here, in one line, before any worker starts
    if not Path(cfg.tokenizer).is_file():
        raise FileNotFoundError(f"tokenizer {cfg.tokenizer} does not exist: train one with `janus data tokenizer`")
    run_dir = Path(cfg.run_dir).resolve()
    cfg.run_dir = str(run_dir)
    cfg.shards, cfg.tokenizer = str(Path(cfg.shards).resolve()), str(Path(cfg.tokenizer).resolve())
    save_config(cfg, run_dir / "config.json")
    flag = run_dir / PREEMPT_FLAG
    flag.unlink(missing_ok=True)
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 **({} if address else {"num_cpus": max(cfg.num_workers, os.cpu_count() or 1)}))
    _on_signals(lambda *_: flag.touch())  # after ray.init, which installs its own fatal SIGTERM handler
    trainer = TorchTrainer(
        train_worker, train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, resources_per_worker={"CPU": 1},
                                     use_gpu=torch.cuda.is_available()),
        run_config=RunConfig(storage_path=str(run_dir / "ray"), name="train",
                             failure_config=FailureConfig(max_failures=cfg.max_failures)))
    trainer.fit()
    if flag.exists():
        raise Preempted(f"preempted; the newest checkpoint is in {run_dir / 'checkpoints'}")
    return run_dir
