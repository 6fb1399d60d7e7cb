"""Setting up the DeepSpeed engine: its config for a run, the `mpu` adapter over megatron-core's groups, and
the fp16 loss scale it keeps."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from janus.parallel import parallel_state
from pretrain.config import TrainConfig


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


class MegatronMPU:
    """The `mpu` interface DeepSpeed asks for, answered from megatron-core's parallel_state, so that
    ZeRO shards over the data-parallel group and gradient norms reduce over the TP group. (megatron-core
    renamed these functions; DeepSpeed still calls the old names.)"""

    get_model_parallel_group = staticmethod(parallel_state.get_tensor_model_parallel_group)
    get_model_parallel_rank = staticmethod(parallel_state.get_tensor_model_parallel_rank)
    get_model_parallel_world_size = staticmethod(parallel_state.get_tensor_model_parallel_world_size)
    get_tensor_model_parallel_group = staticmethod(parallel_state.get_tensor_model_parallel_group)
    get_tensor_model_parallel_rank = staticmethod(parallel_state.get_tensor_model_parallel_rank)
    get_tensor_model_parallel_world_size = staticmethod(parallel_state.get_tensor_model_parallel_world_size)
    get_tensor_model_parallel_src_rank = staticmethod(parallel_state.get_tensor_model_parallel_src_rank)
    get_data_parallel_group = staticmethod(parallel_state.get_data_parallel_group)
    get_data_parallel_rank = staticmethod(parallel_state.get_data_parallel_rank)
    get_data_parallel_world_size = staticmethod(parallel_state.get_data_parallel_world_size)

    @staticmethod
    def get_data_parallel_group_ranks():
        return dist.get_process_group_ranks(parallel_state.get_data_parallel_group())


def loss_scale(engine) -> float | None:
    """fp16's dynamic loss scale (None in bf16/fp32), from whichever DeepSpeed optimizer wraps the model."""
    if not engine.fp16_enabled():
        return None
    scale = getattr(engine.optimizer, "loss_scale", None) or getattr(engine.optimizer, "cur_scale", None)
    return float(scale) if scale is not None else None


def ensure_launcher_env() -> None:
    """DeepSpeed insists on LOCAL_RANK; a single process started by hand (or Ray's local mode) has none."""
    os.environ.setdefault("LOCAL_RANK", "0")
