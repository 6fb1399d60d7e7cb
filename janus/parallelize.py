"""Tensor parallelism applied to a plainly built JanusModel from outside (as torchtitan parallelizes
its models): each linear layer becomes megatron-core's column- or row-parallel layer holding this rank's
slice of the same weights, and the tied embedding becomes vocab-parallel. Heads and the FFN are split
across ranks (column-parallel in, row-parallel out); everything else stays replicated.

Building the whole model first and slicing it gives every TP size the same weights from one seed."""

from __future__ import annotations

import torch
from torch import nn

from janus.model import Attention, FeedForward, JanusModel
from janus.parallel import megatron_config, tensor_parallel, tp_group, tp_rank, tp_size


class ColumnParallel(tensor_parallel.ColumnParallelLinear):
    """Output features split over TP ranks; returns the output alone, as nn.Linear does."""

    def forward(self, x):
        return super().forward(x)[0]


class RowParallel(tensor_parallel.RowParallelLinear):
    """Input features split over TP ranks, the result all-reduced; returns the output alone."""

    def forward(self, x):
        return super().forward(x)[0]


def _fill(param: nn.Parameter, whole: torch.Tensor, dim: int) -> None:
    """This rank's contiguous slice of `whole` along `dim`, marked as megatron marks its sharded
    parameters (janus.sharding and DeepSpeed's gradient norm read the marks)."""
    with torch.no_grad():
        param.copy_(whole.chunk(tp_size(), dim)[tp_rank()])
    if not hasattr(param, "tensor_model_parallel"):  # megatron marks a column layer's bias itself
        tensor_parallel.set_tensor_model_parallel_attributes(param, True, dim, 1)


def _column(layer: nn.Linear) -> ColumnParallel:
    new = ColumnParallel(layer.in_features, layer.out_features, config=megatron_config(), init_method=None,
                         bias=True, gather_output=False, tp_group=tp_group())
    _fill(new.weight, layer.weight, 0)
    _fill(new.bias, layer.bias, 0)
    return new


def _row(layer: nn.Linear) -> RowParallel:
    new = RowParallel(layer.in_features, layer.out_features, config=megatron_config(), init_method=None,
                      bias=True, input_is_parallel=True, skip_bias_add=False, tp_group=tp_group())
    _fill(new.weight, layer.weight, 1)
    with torch.no_grad():
        new.bias.copy_(layer.bias)  # added once, after the all-reduce: replicated
    return new


def parallelize(model: JanusModel) -> JanusModel:
    """Shard `model` (built whole, on this rank) over this process's tensor-parallel group; a no-op at TP=1."""
    tp = tp_size()
    if tp == 1:
        return model
    model.cfg.validate(tp)
    for module in list(model.modules()):
        if isinstance(module, Attention):
            for name in ("q", "kv", "qkv"):
                if hasattr(module, name):
                    setattr(module, name, _column(getattr(module, name)))
            module.out = _row(module.out)
            module.local_heads = model.cfg.n_heads // tp
        elif isinstance(module, FeedForward):
            module.fc1, module.fc2 = _column(module.fc1), _row(module.fc2)
    whole = model.embed.weight
    model.embed = tensor_parallel.VocabParallelEmbedding(model.cfg.vocab_size, model.cfg.d_model, init_method=None,
                                                         config=megatron_config(), tp_group=tp_group())
    _fill(model.embed.weight, whole, 0)
    model.output.weight = model.embed.weight  # still tied
    model.set_vocab_shard(model.embed.vocab_start_index, model.embed.vocab_end_index)
    return model
