"""Tensor-parallel plumbing: process groups and vocab-parallel softmax arithmetic.

This module owns the one-time set-up of megatron's `parallel_state` (training needs it at any TP size:
DeepSpeed's data-parallel groups come from it) and the few reductions over the vocab-sharded output
that the losses and decoders need. Without groups (a model run at TP=1 by `janus.load` or evaluation)
TP size is 1 and every reduction is the identity: no process group is started.
"""

from __future__ import annotations

import atexit
import os
import socket
import warnings

import torch
import torch.distributed as dist

with warnings.catch_warnings():
    # megatron-core warns at import that Apex / Transformer Engine are absent; we use neither.
    warnings.simplefilter("ignore")
    from megatron.core import parallel_state, tensor_parallel
    from megatron.core.model_parallel_config import ModelParallelConfig


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_parallel(tensor_parallel_size: int = 1, backend: str | None = None) -> None:
    """Initialise torch.distributed (a 1-process group if nothing launched us) and megatron's groups.

    Idempotent: a second call with the same TP size is a no-op.
    """
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            dist.init_process_group(backend=backend)
        else:
            backend = backend or "gloo"
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://127.0.0.1:{free_port()}",
                rank=0,
                world_size=1,
            )
        atexit.register(destroy_parallel)  # a gloo group left to interpreter teardown can abort the process
    if parallel_state.model_parallel_is_initialized():
        current = parallel_state.get_tensor_model_parallel_world_size()
        if current != tensor_parallel_size:
            raise RuntimeError(
                f"tensor parallelism is already initialised with TP={current}; "
                f"cannot switch to TP={tensor_parallel_size} in the same process"
            )
        return
    world = dist.get_world_size()
    if world % tensor_parallel_size:
        raise ValueError(
            f"tensor_parallel={tensor_parallel_size} does not divide the world size {world}: "
            "use a TP size that divides the number of workers"
        )
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel_size)


def destroy_parallel() -> None:
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def tp_size() -> int:
    if not parallel_state.model_parallel_is_initialized():
        return 1
    return parallel_state.get_tensor_model_parallel_world_size()


def tp_rank() -> int:
    return parallel_state.get_tensor_model_parallel_rank() if tp_size() > 1 else 0


def megatron_config(params_dtype: torch.dtype = torch.float32) -> ModelParallelConfig:
    # the layers are created empty and filled with slices of a whole model's weights (janus.parallelize)
    return ModelParallelConfig(
        tensor_model_parallel_size=tp_size(),
        use_cpu_initialization=True,
        perform_initialization=False,
        params_dtype=params_dtype,
        gradient_accumulation_fusion=False,
        sequence_parallel=False,
    )


def tp_group():
    return parallel_state.get_tensor_model_parallel_group()


# ---- differentiable collectives over the tensor-parallel group (identity at TP=1) ----
def copy_to_tp(x: torch.Tensor) -> torch.Tensor:
    """Identity forward, all-reduce of the gradient backward (entering a TP region)."""
    if tp_size() == 1:
        return x
    return tensor_parallel.copy_to_tensor_model_parallel_region(x, group=tp_group())


def reduce_from_tp(x: torch.Tensor) -> torch.Tensor:
    """All-reduce forward, identity backward (leaving a TP region)."""
    if tp_size() == 1:
        return x
    return tensor_parallel.reduce_from_tensor_model_parallel_region(x, group=tp_group())


def gather_from_tp(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the last dim's shards from every TP rank (for decoding: not differentiable).
    megatron's own gather allocates on the CUDA device, so it cannot serve CPU runs."""
    if tp_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(tp_size())]
    dist.all_gather(parts, x.contiguous(), group=tp_group())
    return torch.cat(parts, dim=-1)


def local_vocab_start(local_vocab: int) -> int:
    return tp_rank() * local_vocab


class _AllReduceSumForSharded(torch.autograd.Function):
    """All-reduce whose result feeds rank-local (sharded) computation: every rank's use of the sum
    contributes to its gradient, so the backward all-reduces too (unlike `reduce_from_tp`, whose
    result feeds replicated computation)."""

    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x, group=tp_group())
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=tp_group())
        return grad


def vocab_parallel_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over a vocab sharded across TP ranks; returns this rank's shard of log-probs."""
    logits = logits.float()
    if tp_size() == 1:  # one fused kernel, forward and backward (the decomposed form costs 2x at vocab size)
        return torch.log_softmax(logits, dim=-1)
    row_max = logits.max(dim=-1, keepdim=True).values.detach().clone()
    dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=tp_group())
    sum_exp = _AllReduceSumForSharded.apply((logits - row_max).exp().sum(dim=-1, keepdim=True))
    return logits - row_max - sum_exp.log()


def vocab_sum(x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the (sharded) last dim, each entry times `weights` [V_local] if given, all-reduced over TP
    ranks, differentiably. A weighted sum is one GEMV: no vocab-sized product is written."""
    return reduce_from_tp(x.sum(dim=-1) if weights is None else x @ weights)


def vocab_pick(logp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logp[..., target] for a vocab-sharded logp; every rank gets the full value."""
    local = logp.shape[-1]
    start = local_vocab_start(local)
    in_shard = (target >= start) & (target < start + local)
    idx = (target - start).clamp(0, local - 1)
    picked = logp.gather(-1, idx.unsqueeze(-1)).squeeze(-1) * in_shard
    return reduce_from_tp(picked)
