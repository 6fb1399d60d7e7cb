"""DeepSpeed engine set-up over the megatron-core tensor-parallel groups."""

from __future__ import annotations

import os

import torch.distributed as dist

from janus.parallel import parallel_state


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


def ensure_launcher_env() -> None:
    """DeepSpeed insists on LOCAL_RANK; a single process started by hand (or Ray's local mode) has none."""
    os.environ.setdefault("LOCAL_RANK", "0")
