"""Move between a model's TP-sharded parameters and the whole (TP=1-equivalent) state dict.

megatron-core marks each sharded parameter with `tensor_model_parallel=True` and its
`partition_dim`; shards are contiguous slices in TP-rank order (stride 1 everywhere in JANUS).
Only parameters are state: megatron's `_extra_state` entries are always None here.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from janus.parallel import tp_group, tp_rank, tp_size


def _is_sharded(p: torch.Tensor) -> bool:
    return bool(getattr(p, "tensor_model_parallel", False))


def gather_full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    full = {}
    for name, p in model.named_parameters():
        t = p.detach()
        if _is_sharded(p) and tp_size() > 1:
            parts = [torch.empty_like(t) for _ in range(tp_size())]
            dist.all_gather(parts, t.contiguous(), group=tp_group())
            t = torch.cat(parts, dim=p.partition_dim)
        full[name] = t.cpu().clone()
    return full


def load_full_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(f"state dict does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            t = state[name]
            if _is_sharded(p):
                t = t.chunk(tp_size(), dim=p.partition_dim)[tp_rank()]
            if t.shape != p.shape:
                raise ValueError(f"{name}: checkpoint shape {tuple(t.shape)} does not fit the model's "
                                 f"{tuple(p.shape)}; was it saved with another model config?")
            p.copy_(t)
