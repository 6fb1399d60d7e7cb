"""Starting a training run from the driver: the checks that refuse bad input before anything starts, Ray
(embedded or joined), one `pretrain.trainer.Trainer` per rank, and the exit codes and signals a job
scheduler sees. `janus pretrain`, `janus finetune`, the demo and the study all start runs here."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from janus.files import FileFault, faults
from pretrain import checkpoint
from pretrain.config import TrainConfig, save_config
from pretrain.trainer import DIVERGED_FLAG, PREEMPT_FLAG, on_signals, train_worker

# `janus pretrain` exits with this code after a preemption signal (SIGTERM or SIGUSR1) made it finish
# the step, write a checkpoint and stop; rerunning the command resumes. (75 = EX_TEMPFAIL.)
PREEMPTED_EXIT_CODE = 75
# ... with 130 (128 + SIGINT) when Ctrl-C stopped it the same way,
INTERRUPTED_EXIT_CODE = 130
# ... and with this one when `max_nonfinite` losses in a row stopped it (the last good checkpoint stays).
DIVERGED_EXIT_CODE = 3


class Preempted(Exception):
    """The run stopped at a checkpoint because it was asked to (SIGTERM / SIGUSR1, or Ctrl-C: `interrupted`)."""

    def __init__(self, message: str, interrupted: bool = False):
        super().__init__(message)
        self.interrupted = interrupted


class Diverged(Exception):
    """The loss was non-finite `max_nonfinite` steps in a row."""


def quiet_ray_loggers() -> None:
    """Runs in every Ray worker process of a run. Ray Train's placement-group cleaner polls the state API,
    which lives in the dashboard we do not start, and warns every few seconds that it is unavailable."""
    import logging

    # ... and its pollers log each transient timeout under load with a traceback, then retry: not failures
    for name in ("ray.train.v2._internal.execution.controller.placement_group_cleaner",
                 "ray.train.v2._internal.execution.preemption", "ray.train.v2._internal.callbacks.preemption_callback",
                 "ray.train.v2._internal.execution.worker_group.placement_group_handle"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_before_start(cfg: TrainConfig) -> None:
    """Everything about the config and its inputs that can be known without starting Ray, refused in one
    line (ValueError / FileNotFoundError: exit 2) before any directory is created."""
    from janus.config import preset
    from janus.export import sha256_file
    from janus.tokenizer import Tokenizer
    from pretrain.artifacts import model_config, resolve
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


def run_training(cfg: TrainConfig, address: str | None = None, hooks: list = ()) -> Path:
    """Start (or join) Ray and run the workers (with `hooks`, e.g. fine-tuning's dev evaluation); returns
    the run directory."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pretrain.metrics import plot_metrics
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
                 runtime_env={"env_vars": quiet, "worker_process_setup_hook": "pretrain.launch.quiet_ray_loggers"},
                 **({} if address else {"num_cpus": max(cfg.num_workers, os.cpu_count() or 1)}))
    on_signals(_driver_stop(stop_flag), interrupt=True)  # after ray.init, which installs a fatal SIGTERM handler
    use_gpu = torch.cuda.is_available() if not address else bool(ray.cluster_resources().get("GPU"))
    trainer = TorchTrainer(
        train_worker, train_loop_config={"train": cfg.to_dict(), "hooks": list(hooks),
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

