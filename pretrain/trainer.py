"""`janus pretrain` (and `janus finetune`, which runs the same engine): Ray Train's TorchTrainer runs one
DeepSpeed ZeRO worker per rank over the megatron-core tensor-parallel JANUS backbone, streaming shards
through the loader.

The run directory is the unit of resume: every start looks for the newest complete checkpoint under
RUN_DIR/checkpoints and continues from it (model, optimizer, loader cursor, RNG state, counters). A
checkpoint written by another number of data-parallel ranks is converted once to DeepSpeed's universal
format and loaded from that (elastic resume); the data order then restarts from a seed derived from the
step, since the old per-rank cursors do not divide among the new ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from janus.files import FileFault, atomic_write, faults
from pretrain import checkpoint
from pretrain.config import TrainConfig, save_config

# `janus pretrain` exits with this code after a preemption signal (SIGTERM or SIGUSR1) made it finish
# the step, write a checkpoint and stop; rerunning the command resumes. (75 = EX_TEMPFAIL.)
PREEMPTED_EXIT_CODE = 75
# ... with 130 (128 + SIGINT) when Ctrl-C stopped it the same way,
INTERRUPTED_EXIT_CODE = 130
# ... and with this one when `max_nonfinite` losses in a row stopped it (the last good checkpoint stays).
DIVERGED_EXIT_CODE = 3
PREEMPT_FLAG = "PREEMPTED"
DIVERGED_FLAG = "DIVERGED"


class Preempted(Exception):
    """The run stopped at a checkpoint because it was asked to (SIGTERM / SIGUSR1, or Ctrl-C: `interrupted`)."""

    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


class Diverged(Exception):
    """The loss was non-finite `max_nonfinite` steps in a row."""


def _on_signals(handler, interrupt: bool = False) -> None:
    for sig in (signal.SIGTERM, signal.SIGUSR1, *([signal.SIGINT] if interrupt else [])):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread of this process: the driver's handler covers it
            pass


def lr_at(step: int, peak: float, warmup: int, schedule: str = "inverse_sqrt", total: int = 0,
          end: float = 0.0, power: float = 1.0, time_left: float = 1.0) -> float:
    """Linear warmup to `peak`, then inverse square root decay, or polynomial decay to `end` at `total`
    steps or when `time_left` (the fraction of a time budget still unspent) reaches 0, whichever is first."""
    s, w = step + 1, max(1, warmup)
    if s <= w:
        return peak * s / w
    if schedule == "inverse_sqrt":
        return peak * math.sqrt(w / s)
    if schedule == "polynomial":
        left = max(0.0, min(1 - (s - w) / max(1, total - w), time_left))
        return end + (peak - end) * left ** power
    raise ValueError(f"lr_schedule {schedule!r}: choose inverse_sqrt or polynomial")


def deepspeed_config(cfg: TrainConfig, universal: bool = False) -> dict:
    on_gpu = torch.cuda.is_available()
    return {
        "train_micro_batch_size_per_gpu": 1,  # batches are token-budgeted by the loader
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.grad_clip,
        "optimizer": {"type": "AdamW", "params": {"lr": cfg.lr, "betas": [0.9, 0.98], "eps": 1e-8,
                                                  "weight_decay": cfg.weight_decay, "torch_adam": True}},
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": on_gpu and cfg.precision == "bf16"},
        "fp16": {"enabled": on_gpu and cfg.precision == "fp16", "loss_scale": 0},  # 0: dynamic loss scaling
        "checkpoint": {"load_universal": universal},
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


class Progress:
    """Rank 0's progress: a bar (Ray's tqdm, drawn by the driver) on a terminal, else a line every ~2%
    of the run (logs, Slurm output) with the step, loss, tokens/s and ETA."""

    def __init__(self, total: int, done: int, bar: bool):
        self.total, self.first, self.start = total, done, time.perf_counter()
        self.every = max(1, total // 50)
        self.bar = None
        if bar:
            from ray.experimental.tqdm_ray import tqdm

            self.bar = tqdm(total=total, desc="train", unit="step")
            self.bar.update(done)

    def update(self, step: int, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)
            self.bar.update(1)
        elif step % self.every == 0 or step == self.total:
            rate = (time.perf_counter() - self.start) / max(1, step - self.first)
            eta = int(rate * (self.total - step))
            print(f"step {step}/{self.total} {text} ETA {eta // 60}m{eta % 60:02d}s", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Counters:
    step: int = 0  # optimizer steps taken
    tokens: int = 0  # target tokens trained on, all ranks
    nonfinite: int = 0  # batches skipped for a non-finite loss
    nonfinite_in_row: int = 0
    seconds: float = 0.0  # wall clock spent in the step loop, every session of the run together
    evals_since_best: int = 0  # dev evaluations since the best one (patience)


def _checkpoint_files(cfg: TrainConfig, model) -> dict[str, bytes]:
    layout = {name: (p.partition_dim if getattr(p, "tensor_model_parallel", False) else None)
              for name, p in model.named_parameters()}
    config = {"train": cfg.to_dict(), "model": model.cfg.to_dict()}
    return {"config.json": json.dumps(config, indent=2).encode(), "layout.json": json.dumps(layout).encode(),
            "tokenizer.model": Path(cfg.tokenizer).read_bytes()}


def train_worker(config: dict) -> None:
    """The per-rank train function (Ray calls it in each worker; torch.distributed is initialised).
    `config` holds the TrainConfig and, for fine-tuning, a dev `evaluator(model) -> (name, value)`."""
    import warnings

    warnings.filterwarnings("ignore", message=".*(Transformer Engine|tp_group is None|all_gather_into_tensor).*")
    import deepspeed
    from torch.utils.tensorboard import SummaryWriter

    from janus.config import ModelConfig, preset
    from janus.flops import measure_peak_gflops, step_flops
    from janus.model import JanusModel
    from janus.objective import compute_loss, objective
    from janus.parallel import init_parallel, parallel_state, tensor_parallel
    from janus.tokenizer import Tokenizer
    from pretrain.engine import MegatronMPU, ensure_launcher_env
    from pretrain.init_weights import load_init, model_config
    from pretrain.loader import LoaderConfig, PairLoader
    from pretrain.run_lock import hold
    from pretrain.shards import read_index, shard_urls

    cfg = TrainConfig(**config["train"])
    evaluator = config.get("evaluator")
    ensure_launcher_env()
    torch.set_flush_denormal(True)
    if not torch.cuda.is_available():  # one thread per core this worker was given: more only oversubscribes
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if torch.cuda.is_available():  # Ray shares the node's GPUs among its workers: LOCAL_RANK picks this one's
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    init_parallel(cfg.tensor_parallel)
    if torch.cuda.is_available():  # megatron's CUDA RNG tracker (TP regions) must be seeded before use
        tensor_parallel.model_parallel_cuda_manual_seed(cfg.seed)
    rank, world = dist.get_rank(), dist.get_world_size()
    dp_rank, dp_world = parallel_state.get_data_parallel_rank(), parallel_state.get_data_parallel_world_size()
    run_dir = Path(cfg.run_dir)
    root = run_dir / "checkpoints"

    # where to resume from, decided by rank 0 (one view of the file system), converted if the world changed
    found, lock = [None, False], None
    if rank == 0:
        lock = hold(run_dir, cfg.lock_wait_s)  # held until this process ends: no second run writes here
        found[0] = checkpoint.latest_complete(root)
        if found[0] is not None:
            written = checkpoint.manifest(root / checkpoint.tag_for(found[0]))
            found[1] = (written["world_size"], written.get("tensor_parallel", 1)) != (world, cfg.tensor_parallel)
            if found[1]:
                print(f"checkpoint step {found[0]} was written by {written['world_size']} ranks, this run has "
                      f"{world}: converting it to DeepSpeed's universal format", flush=True)
                checkpoint.universal_dir(root, found[0])
    dist.broadcast_object_list(found, src=0)
    latest, elastic = found

    torch.manual_seed(cfg.seed)  # identical on every rank: replicated weights start equal
    tok = Tokenizer(cfg.tokenizer)
    # a resumed run keeps its checkpoint's shape; fine-tuning from `init` takes that model's (with this dropout)
    model_cfg = preset(cfg.model_preset, vocab_size=tok.vocab_size)
    if cfg.dropout >= 0:
        model_cfg = dataclasses.replace(model_cfg, dropout=cfg.dropout)
    if latest is not None:
        saved = json.loads((root / checkpoint.tag_for(latest) / "config.json").read_text())["model"]
        model_cfg = ModelConfig.from_dict(saved)
    elif cfg.init:
        model_cfg = dataclasses.replace(model_config(cfg.init), dropout=model_cfg.dropout, vocab_size=tok.vocab_size)
    model = JanusModel(model_cfg)
    if latest is None and cfg.init:
        load_init(model, cfg.init, cfg.tokenizer)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=deepspeed_config(cfg, universal=elastic), mpu=MegatronMPU())
    counters, loader_state = Counters(), None
    if latest is not None:
        own = checkpoint.load(root, latest, engine, universal=elastic)
        counters = Counters(**own["counters"])
        if elastic:  # a new data order; dropout streams re-seeded from the step
            torch.manual_seed(cfg.seed + 7919 * counters.step + 1000 * dp_rank)
        else:
            loader_state = own["loader"]
            torch.set_rng_state(own["rng"])
            if own.get("cuda_rng") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(own["cuda_rng"])
    else:  # dropout masks: different per data-parallel rank, identical across TP ranks
        torch.manual_seed(cfg.seed + 1000 * dp_rank)
    obj = objective(cfg.objective)
    loader_cfg = LoaderConfig(kind=cfg.data_kind, aux_order=obj.aux_order, token_budget=cfg.token_budget,
                              max_source_tokens=cfg.max_source_tokens, max_target_tokens=cfg.max_target_tokens,
                              truncate_source=cfg.long_source == "truncate", window=cfg.window,
                              storage=cfg.storage(), wait_s=cfg.shard_wait_s, masking=cfg.masking,
                              seed=cfg.seed + (7919 * counters.step if elastic else 0), num_workers=cfg.loader_workers)
    index = read_index(cfg.shards, cfg.storage())
    loader = PairLoader(shard_urls(cfg.shards, index), loader_cfg, rank=dp_rank, world=dp_world, state=loader_state,
                        checksums=[s.get("sha256") for s in index["shards"]])
    files = _checkpoint_files(cfg, model)
    info = {"tensor_parallel": cfg.tensor_parallel, "zero_stage": cfg.zero_stage}

    def save() -> None:
        own = {"counters": vars(counters).copy(), "loader": loader.state_dict(), "rng": torch.get_rng_state(),
               "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
        checkpoint.save(root, counters.step, engine, own, keep=cfg.keep_checkpoints, files=files, info=info)

    peak = torch.tensor([cfg.peak_gflops or measure_peak_gflops(reps=5)])
    dist.all_reduce(peak)  # MFU is relative to the sum of every rank's peak

    metrics_path = run_dir / "metrics.jsonl"
    writer, bar = None, None
    if rank == 0:
        kept = [line for line in metrics_path.read_text().splitlines() if json.loads(line)["step"] <= counters.step] \
            if metrics_path.exists() else []
        metrics_path.write_text("".join(line + "\n" for line in kept))
        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=counters.step + 1)
        print(f"{'resuming from step ' + str(counters.step) if counters.step else 'starting'}: "
              f"{cfg.model_preset} JANUS ({cfg.objective}), {world} ranks (TP {cfg.tensor_parallel} x DP {dp_world}), "
              f"ZeRO-{cfg.zero_stage}, {engine.device}, {torch.get_num_threads()} threads/rank", flush=True)
        bar = Progress(cfg.max_steps, counters.step, config.get("progress_bar", False))

    bad_batches = {int(x) for x in cfg.debug_nonfinite_batches.split(",") if x.strip()}
    stop_flag, diverged_flag = run_dir / PREEMPT_FLAG, run_dir / DIVERGED_FLAG
    _on_signals(lambda *_: stop_flag.touch())  # e.g. Slurm signalling every task
    start, drawn = time.perf_counter(), 0
    last_step_end, spent_before = start, counters.seconds
    budget_s = cfg.max_minutes * 60
    fault = None
    try:
        for batch in loader:
            drawn += 1
            if counters.step >= cfg.max_steps or (budget_s > 0 and counters.seconds >= budget_s) \
                    or (cfg.patience and counters.evals_since_best >= cfg.patience):
                break
            time_left = 1.0 - counters.seconds / budget_s if budget_s else 1.0  # agreed by every rank below
            for group in engine.optimizer.param_groups:
                group["lr"] = lr_at(counters.step, cfg.lr, cfg.warmup_steps, cfg.lr_schedule, cfg.max_steps, cfg.lr_end,
                                    cfg.lr_power, time_left)
            # counted on the host copy, so that logging needs no device sync of its own
            flops = step_flops(model.cfg, batch, obj) / cfg.tensor_parallel  # this rank's share
            target_tokens = int(batch.tgt.ne(model.cfg.pad_id).sum())
            batch = batch.to(engine.device, non_blocking=True)
            loss, terms = compute_loss(engine.module, batch, obj)
            if drawn in bad_batches:
                loss = loss * float("nan")
            # one collective and one host sync per step decide for every rank together whether to stop (a
            # signal arrived), to skip the step (a non-finite loss) or to make it the last (the time budget is
            # spent), so no rank waits in a collective another left; the slowest rank's clock is everyone's
            flags = torch.stack([torch.tensor(float(stop_flag.exists()), device=loss.device),
                                 (~torch.isfinite(loss.detach())).float(),
                                 torch.tensor(spent_before + time.perf_counter() - start, device=loss.device)])
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            stop, bad, counters.seconds = flags.tolist()
            final = counters.step + 1 >= cfg.max_steps or (budget_s > 0 and counters.seconds >= budget_s)
            why = "max_steps" if counters.step + 1 >= cfg.max_steps else "clock"
            if stop > 0:
                if counters.step > 0 and not checkpoint.is_complete(root / checkpoint.tag_for(counters.step), verify=False):
                    save()
                if rank == 0:
                    print(f"stopping: checkpoint at step {counters.step}", flush=True)
                break
            if bad > 0:  # every rank skips this step together
                counters.nonfinite += 1
                counters.nonfinite_in_row += 1
                if rank == 0:
                    print(f"non-finite loss at step {counters.step + 1}: skipped ({counters.nonfinite_in_row} in a row)",
                          flush=True)
                if counters.nonfinite_in_row >= cfg.max_nonfinite:
                    if rank == 0:
                        last = checkpoint.latest_complete(root)
                        diverged_flag.write_text(
                            f"the loss was non-finite {counters.nonfinite_in_row} steps in a row at step "
                            f"{counters.step + 1}; the last good checkpoint is step {last} in {root}. Lower lr, raise "
                            f"warmup_steps or grad_clip, or check the data; rerunning resumes from that checkpoint\n")
                    break
                continue
            counters.nonfinite_in_row = 0
            engine.backward(loss)
            engine.step()
            counters.step += 1
            grad_norm = engine.get_global_grad_norm()
            data = loader.totals()
            logged = torch.cat([torch.stack([loss.detach(), *(v.detach() for v in terms.values())]).float(),
                                torch.tensor([target_tokens, flops, data.skipped, data.dropped_too_long,
                                              data.truncated_source], dtype=torch.float32, device=loss.device)])
            dist.all_reduce(logged)
            logged = logged.tolist()  # the step's one read-back of logged values
            truncated, too_long = int(logged[-1]) // cfg.tensor_parallel, int(logged[-2]) // cfg.tensor_parallel
            logged = logged[:-2]
            seconds = time.perf_counter() - last_step_end  # wall clock: loader wait + step + logging
            last_step_end = time.perf_counter()
            counters.tokens += int(logged[-3]) // cfg.tensor_parallel
            if rank == 0:
                record = {"step": counters.step, "loss": float(logged[0]) / world,
                          **{k: float(v) / world for k, v in zip(terms, logged[1:-3])},
                          "lr": engine.optimizer.param_groups[0]["lr"],
                          "grad_norm": float(grad_norm) if grad_norm is not None else None,
                          "tokens_per_s": float(logged[-3]) / cfg.tensor_parallel / seconds,
                          "mfu": float(logged[-2]) / seconds / 1e9 / float(peak),
                          "gflops": float(logged[-2]) / 1e9, "peak_gflop_s": float(peak),
                          "tokens": counters.tokens, "skipped_nonfinite": counters.nonfinite,
                          "data_skipped": int(logged[-1]) // cfg.tensor_parallel,
                          "pairs_dropped_too_long": too_long, "pairs_truncated": truncated,
                          "loss_scale": _loss_scale(engine),
                          "elapsed_s": time.perf_counter() - start}
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                for key, value in record.items():
                    if key != "step" and value is not None:
                        writer.add_scalar(f"train/{key}", value, counters.step)
                bar.update(counters.step, f"loss {record['loss']:.3f} {record['tokens_per_s']:.0f} tok/s "
                                          f"MFU {record['mfu']:.0%}")
            due = counters.step % cfg.checkpoint_every == 0 or final
            if evaluator is not None and cfg.eval_every and (counters.step % cfg.eval_every == 0 or final):
                name, value = evaluator(engine.module)  # every rank decodes: TP/ZeRO-3 forwards are collective
                best = checkpoint.best_step(root)
                best_value = json.loads((root / "best.json").read_text())["value"] if best is not None else None
                if rank == 0:
                    print(f"step {counters.step}: dev {name} {value:.2f}", flush=True)
                    writer.add_scalar(f"dev/{name}", value, counters.step)
                    with open(run_dir / "dev.jsonl", "a") as f:
                        f.write(json.dumps({"step": counters.step, name: value}) + "\n")
                improved = best_value is None or value > best_value
                counters.evals_since_best = 0 if improved else counters.evals_since_best + 1
                if improved:
                    save()
                    due = False
                    if rank == 0:
                        checkpoint.mark_best(root, counters.step, name, value)
                elif cfg.patience and counters.evals_since_best >= cfg.patience:
                    final, due, why = True, True, "patience"  # the dev metric has stopped improving: the last step
                    if rank == 0:
                        print(f"dev {name} has not improved for {cfg.patience} evaluations (best {best_value:.2f} at "
                              f"step {best}): stopping at step {counters.step}", flush=True)
                dist.barrier()
            if due:
                save()
            if cfg.debug_sigkill_at_step == counters.step and rank == world - 1 \
                    and not (run_dir / "debug-killed").exists():
                (run_dir / "debug-killed").touch()
                os.kill(os.getpid(), signal.SIGKILL)
            if final:
                if rank == 0:
                    if why == "clock":
                        print(f"time budget max_minutes={cfg.max_minutes:g} spent: stopped at step {counters.step}",
                              flush=True)
                    atomic_write(run_dir / "stopped.json", json.dumps({"step": counters.step, "why": why}) + "\n")
                break
    except FileFault as err:  # every rank raises the same one (checkpoint.save agrees on it)
        fault = str(err)
    if rank == 0:
        bar.close()
        writer.close()
        if lock is not None:
            os.close(lock)
    return {"fault": fault}  # rank 0's return value reaches the driver: a fault is reported there in one line


def _loss_scale(engine) -> float | None:
    """fp16's dynamic loss scale (None in bf16/fp32), from whichever DeepSpeed optimizer wraps the model."""
    if not engine.fp16_enabled():
        return None
    scale = getattr(engine.optimizer, "loss_scale", None) or getattr(engine.optimizer, "cur_scale", None)
    return float(scale) if scale is not None else None


def quiet_ray_loggers() -> None:
    """Runs in every Ray worker process of a run. Ray Train's placement-group cleaner polls the state API,
    which lives in the dashboard we do not start, and warns every few seconds that it is unavailable."""
    import logging

    # ... and its pollers log each transient timeout under load with a traceback, then retry: not failures
    for name in ("ray.train.v2._internal.execution.controller.placement_group_cleaner",
                 "ray.train.v2._internal.execution.preemption", "ray.train.v2._internal.callbacks.preemption_callback",
                 "ray.train.v2._internal.execution.worker_group.placement_group_handle"):
        logging.getLogger(name).setLevel(logging.ERROR)


def plot_metrics(run_dir: Path) -> Path | None:
    """loss.png: the total loss and each term against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    if not rows:
        return None
    skip = {"step", "lr", "grad_norm", "tokens_per_s", "mfu", "gflops", "peak_gflop_s", "tokens",
            "skipped_nonfinite", "data_skipped", "pairs_dropped_too_long", "pairs_truncated", "loss_scale",
            "elapsed_s"}
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in rows]
    for key in [k for k in rows[-1] if k not in skip]:
        ax.plot(steps, [r.get(key) for r in rows], label=key, linewidth=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"{Path(run_dir).name}: training loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    out = Path(run_dir) / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def check_before_start(cfg: TrainConfig) -> None:
    """Everything about the config and its inputs that can be known without starting Ray, refused in one
    line (ValueError / FileNotFoundError: exit 2) before any directory is created."""
    from janus.config import preset
    from janus.export import sha256_file
    from janus.tokenizer import Tokenizer
    from pretrain.init_weights import model_config, resolve
    from pretrain.loader import LoaderConfig, length_report
    from pretrain.shards import read_index
    from pretrain.storage import join as storage_join

    cfg.validate()
    index = read_index(cfg.shards, cfg.storage())
    index_path = storage_join(cfg.shards, "index.json")
    n_shards = len(index["shards"])
    streams = cfg.num_workers // cfg.tensor_parallel * max(1, cfg.loader_workers)
    if n_shards < streams:
        raise ValueError(f"{cfg.shards} has {n_shards} shards but the run reads {streams} streams "
                         f"(data-parallel ranks x loader_workers): write more, smaller shards (--per-shard)")
    if index.get("kind", cfg.data_kind) != cfg.data_kind:
        raise ValueError(f"{index_path} holds {index['kind']} shards but data_kind={cfg.data_kind!r}: "
                         f"set data_kind={index['kind']}")
    if not cfg.tokenizer or not Path(cfg.tokenizer).is_file():
        raise FileNotFoundError(f"tokenizer {cfg.tokenizer or '(none given)'} does not exist: give tokenizer= the "
                                f"sentencepiece model the shards were written with")
    if index.get("tokenizer_sha256") and index["tokenizer_sha256"] != sha256_file(cfg.tokenizer):
        raise ValueError(f"tokenizer {cfg.tokenizer} is not the one {index_path} was written with "
                         f"(sha256 {index['tokenizer_sha256'][:12]}): give that tokenizer, or rewrite the shards "
                         f"with `janus data shard --tokenizer {cfg.tokenizer}`")
    vocab = Tokenizer(cfg.tokenizer).vocab_size
    preset(cfg.model_preset, vocab_size=vocab).validate(cfg.tensor_parallel)
    if cfg.init:
        source = resolve(cfg.init)
        if sha256_file(source / "tokenizer.model") != sha256_file(cfg.tokenizer):
            raise ValueError(f"tokenizer {cfg.tokenizer} is not the one init={source} was trained with "
                             f"({source / 'tokenizer.model'}): shard the data with that tokenizer")
        model_config(source).validate(cfg.tensor_parallel)
    truncate = cfg.long_source == "truncate"
    report = length_report(index, LoaderConfig(kind=cfg.data_kind, max_source_tokens=cfg.max_source_tokens,
                                               max_target_tokens=cfg.max_target_tokens, truncate_source=truncate))
    if report is not None:
        if report["dropped_at_most"] >= report["pairs"]:
            fix = "" if truncate or cfg.data_kind != "pairs" else ", or set long_source=truncate"
            raise ValueError(f"{cfg.shards}: every one of its {report['pairs']:,} pairs is empty or longer than "
                             f"max_source_tokens={cfg.max_source_tokens} / max_target_tokens="
                             f"{cfg.max_target_tokens}: raise those (up to the model's max_positions){fix}")
        dropped = report["dropped_at_least"], report["dropped_at_most"]
        if report["truncated_source"] or dropped[1]:
            print(f"length limits on {report['pairs']:,} pairs: {report['truncated_source']:,} sources truncated to "
                  f"max_source_tokens={cfg.max_source_tokens}; "
                  f"{dropped[0]:,}{'' if dropped[0] == dropped[1] else f'-{dropped[1]:,}'} pairs dropped "
                  f"(empty, or longer than the limits; long_source={cfg.long_source})", flush=True)


def check_resume(cfg: TrainConfig, run_dir: Path) -> None:
    """A resumed run keeps its tensor-parallel size and its tokenizer."""
    from janus.config import ModelConfig
    from janus.export import sha256_file
    from janus.tokenizer import Tokenizer

    steps = checkpoint.complete_steps(run_dir / "checkpoints", verify=False)  # rank 0 verifies the sums later
    if not steps:
        return
    directory = run_dir / "checkpoints" / checkpoint.tag_for(steps[-1])
    written = checkpoint.manifest(directory).get("tensor_parallel", 1)
    if written != cfg.tensor_parallel:
        raise ValueError(f"{run_dir} resumes from a checkpoint written at tensor_parallel={written}: keep that "
                         f"(the number of workers may change), or `janus export` it and start a new run "
                         f"with init=EXPORT")
    if sha256_file(directory / "tokenizer.model") != sha256_file(cfg.tokenizer):
        raise ValueError(f"tokenizer {cfg.tokenizer} is not {directory / 'tokenizer.model'}, the one {run_dir} "
                         f"trained with: resume with that tokenizer (and its shards), or give a new run_dir")
    model = ModelConfig.from_dict(json.loads((directory / "config.json").read_text())["model"])
    if model.vocab_size != Tokenizer(cfg.tokenizer).vocab_size:
        raise ValueError(f"{directory / 'config.json'} has a {model.vocab_size}-piece vocabulary and tokenizer "
                         f"{cfg.tokenizer} {Tokenizer(cfg.tokenizer).vocab_size}: resume with the run's tokenizer")


def run_training(cfg: TrainConfig, address: str | None = None, evaluator=None) -> Path:
    """Start (or join) Ray and run the workers; returns the run directory."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pretrain.run_lock import wait_until_free
    from pretrain.storage import is_remote

    check_before_start(cfg)
    run_dir = Path(cfg.run_dir).resolve()
    cfg.run_dir = str(run_dir)
    wait_until_free(run_dir, cfg.lock_wait_s)  # before anything here is read or written
    check_resume(cfg, run_dir)
    if not is_remote(cfg.shards):
        cfg.shards = str(Path(cfg.shards).resolve())
    cfg.tokenizer = str(Path(cfg.tokenizer).resolve())
    if cfg.init:
        cfg.init = str(Path(cfg.init).resolve())
    with faults(run_dir):
        save_config(cfg, run_dir / "config.json")
    stop_flag, diverged_flag = run_dir / PREEMPT_FLAG, run_dir / DIVERGED_FLAG
    stop_flag.unlink(missing_ok=True)
    diverged_flag.unlink(missing_ok=True)
    address = address or os.environ.get("RAY_ADDRESS")
    # Ray Train V2 echoes each worker print through logging too: one copy of each line is enough
    quiet = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    os.environ.update(quiet)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": quiet, "worker_process_setup_hook": "pretrain.trainer.quiet_ray_loggers"},
                 **({} if address else {"num_cpus": max(cfg.num_workers, os.cpu_count() or 1)}))
    _on_signals(_driver_stop(stop_flag), interrupt=True)  # after ray.init, which installs a fatal SIGTERM handler
    use_gpu = torch.cuda.is_available() if not address else bool(ray.cluster_resources().get("GPU"))
    trainer = TorchTrainer(
        train_worker, train_loop_config={"train": cfg.to_dict(), "evaluator": evaluator,
                                           "progress_bar": sys.stdout.isatty()},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(storage_path=str(run_dir / "ray"), name="train",
                             failure_config=FailureConfig(max_failures=cfg.max_failures)))
    # Ray Train's own Ctrl-C handler aborts the workers mid-step; ours stops them at a checkpoint instead
    trainer._register_sigint_handler = lambda controller: None
    try:
        result = trainer.fit()
    finally:
        if started_ray:  # an embedded cluster lives as long as its job
            ray.shutdown()
    fault = (result.return_value or {}).get("fault")
    if fault:
        step = checkpoint.latest_complete(run_dir / "checkpoints")
        raise FileFault(f"{fault}; rerunning resumes from " + (f"step {step}" if step else "the start"))
    plot_metrics(run_dir)
    if diverged_flag.exists():
        raise Diverged(diverged_flag.read_text().strip())
    if stop_flag.exists():
        step = checkpoint.latest_complete(run_dir / "checkpoints")
        interrupted = stop_flag.read_text().strip() == "SIGINT"
        raise Preempted(f"{'interrupted' if interrupted else 'preempted'} at the checkpoint of step {step} in "
                        f"{run_dir / 'checkpoints'}; run the same command to resume", interrupted=interrupted)
    return run_dir


def _driver_stop(stop_flag: Path):
    """SIGTERM/SIGUSR1/SIGINT: the workers finish their step, checkpoint and stop; a second Ctrl-C stops at once."""
    seen = []

    def handler(signum, frame):
        if signum == signal.SIGINT and seen:
            raise KeyboardInterrupt
        if not seen:
            stop_flag.write_text(signal.Signals(signum).name + "\n")
        seen.append(signum)
        if signum == signal.SIGINT:
            print("\ninterrupted: finishing this step and writing a checkpoint (Ctrl-C again to stop at once, "
                  "losing the steps since the last checkpoint)", file=sys.stderr, flush=True)
    return handler

