"""The JANUS encoder-decoder, built from plain torch layers; `janus.parallelize` shards it over a tensor-
parallel group from outside.

The decoder is ONE stack of weights. A decoder call takes any sequence of (token, position) items
plus an explicit boolean attention mask; the two streams of the paper are just items of that
sequence: content items carry real tokens or [MASK], query items carry the [MASK] embedding at the
position they predict. `janus.masks` builds the items and masks for each pass; nothing here knows
about AR or NAR.

The embedding is tied to the output projection. Under tensor parallelism (`janus.parallelize`) heads
and the FFN are split across ranks and the embedding by vocabulary, so logits come out as this rank's
vocab shard; the few reductions over that shard are in `janus.parallel`, and are identities at TP=1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from janus.config import ModelConfig
from janus.parallel import copy_to_tp
from janus.sharding import gather_full_state, load_full_state


def _linear(d_in: int, d_out: int, std: float) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


def _out_std(cfg: ModelConfig) -> float:
    return 0.02 / math.sqrt(2 * max(cfg.encoder_layers, cfg.decoder_layers))  # GPT-2's residual scaling


class Attention(nn.Module):
    """Multi-head attention. Self-attention fuses Q,K,V in one GEMM laid out per head ([head, q|k|v,
    head_dim]), so that a contiguous tensor-parallel split of its rows keeps whole heads."""

    def __init__(self, cfg: ModelConfig, cross: bool):
        super().__init__()
        d, h = cfg.d_model, cfg.n_heads
        self.cross = cross
        self.head_dim = d // h
        self.local_heads = h  # this rank's heads (janus.parallelize divides them)
        if cross:
            self.q = _linear(d, d, 0.02)
            self.kv = _linear(d, 2 * d, 0.02)
        else:
            self.qkv = _linear(d, 3 * d, 0.02)
        self.out = _linear(d, d, _out_std(cfg))

    def _heads(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        b, t, _ = x.shape
        x = x.view(b, t, self.local_heads, n, self.head_dim)
        return [x[:, :, :, i].transpose(1, 2) for i in range(n)]  # each [B, H_local, T, hd]

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self._heads(self.kv(memory), 2)
        return k, v

    def forward(self, x, mask, cache: dict | None = None, cache_keep: int | None = None, memory_kv=None):
        """x [B,T,d]; mask: additive float [B,1,T|1,Tk] (see `attention_bias`). For self-attention with a cache, keys
        are cache + new items, and the first `cache_keep` new items (the content stream) are cached."""
        if self.cross:
            (q,) = self._heads(self.q(x), 1)
            k, v = memory_kv
        else:
            q, k, v = self._heads(self.qkv(x), 3)
            if cache is not None:
                keep = k.shape[2] if cache_keep is None else cache_keep
                if "k" in cache:
                    k = torch.cat([cache["k"], k], dim=2)
                    v = torch.cat([cache["v"], v], dim=2)
                stored = k.shape[2] - q.shape[2] + keep
                cache["k"], cache["v"] = k[:, :, :stored], v[:, :, :stored]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = o.shape
        o = o.transpose(1, 2).reshape(b, t, self.local_heads * self.head_dim)
        return self.out(o)


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc1 = _linear(cfg.d_model, cfg.ffn_dim, 0.02)
        self.fc2 = _linear(cfg.ffn_dim, cfg.d_model, _out_std(cfg))
        self.act = F.gelu if cfg.activation == "gelu" else F.relu

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Layer(nn.Module):
    """A Transformer layer: self-attention, optional cross-attention, FFN; pre- or post-norm."""

    def __init__(self, cfg: ModelConfig, decoder: bool):
        super().__init__()
        self.pre_norm = cfg.norm == "pre"
        self.self_attn = Attention(cfg, cross=False)
        self.self_norm = nn.LayerNorm(cfg.d_model)
        self.cross_attn = Attention(cfg, cross=True) if decoder else None
        self.cross_norm = nn.LayerNorm(cfg.d_model) if decoder else None
        self.ffn = FeedForward(cfg)
        self.ffn_norm = nn.LayerNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def _block(self, x, norm, fn):
        if self.pre_norm:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(self, x, mask, cache=None, cache_keep=None, memory_kv=None, memory_mask=None):
        x = self._block(x, self.self_norm, lambda h: self.self_attn(h, mask, cache=cache, cache_keep=cache_keep))
        if self.cross_attn is not None:
            x = self._block(x, self.cross_norm, lambda h: self.cross_attn(h, memory_mask, memory_kv=memory_kv))
        return self._block(x, self.ffn_norm, self.ffn)


def attention_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool [B, T, Tk] (True = may attend) -> additive [B, 1, T, Tk]: 0 or -inf. Built once per call and
    shared by every layer and head (SDPA would otherwise convert a bool mask in each layer, fwd and bwd)."""
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill_(~allowed, float("-inf")).unsqueeze(1)


NEVER = -1e4  # the logit offset of ids that are never a target: exp() is 0, and KL terms stay finite


class TiedOutput(nn.Module):
    """The output projection, tied to the embedding: the same Parameter registered here too, so that a
    module owns it when logits are computed (ZeRO-3 gathers a parameter only inside the forward of a
    module that holds it)."""

    def __init__(self, embed: nn.Module):
        super().__init__()
        self.weight = embed.weight

    def forward(self, hidden: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return F.linear(copy_to_tp(hidden), self.weight, offset)  # the offset as the GEMM's bias: no extra pass


@dataclass
class Encoded:
    states: torch.Tensor  # [B, S, d]
    pad: torch.Tensor  # [B, S] bool, True at padding
    length_logits: torch.Tensor  # [B, max_length_classes]


class JanusModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate(1)
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embed.weight, std=d ** -0.5)  # N(0,1), tied to the output: huge logits, subnormal grads
        self.output = TiedOutput(self.embed)
        # pad, BOS and [MASK] are never a target: their logits are pinned far below the others, in training
        # too. [MASK] is the input of every position that predicts (the AR and AUX query streams, the masked NAR
        # positions), the residual stream carries it at norm ~sqrt(d) and the output is tied, so a free [MASK]
        # logit starts every prediction at [MASK] (~sqrt(d) above the rest: a first loss of ln(V) + 3.4 to 4.1
        # at d 128) and the first steps go to unlearning it. (Zeroing the [MASK] row instead fixed the first
        # loss but left the query streams only their positions as input, and AR stalled on the unigram plateau.)
        self.register_buffer("allowed", torch.ones(cfg.vocab_size, dtype=torch.bool), persistent=False)
        self.register_buffer("never", torch.zeros(cfg.vocab_size), persistent=False)
        self.set_vocab_shard(0, cfg.vocab_size)
        self.n_targets = cfg.vocab_size - 3  # the ids that can be a target, all shards together
        self.embed_scale = math.sqrt(d)
        self.positions = nn.Embedding(cfg.max_positions, d)
        nn.init.normal_(self.positions.weight, std=d ** -0.5)
        self.encoder = nn.ModuleList(Layer(cfg, decoder=False) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(Layer(cfg, decoder=True) for _ in range(cfg.decoder_layers))
        self.enc_embed_norm = nn.LayerNorm(d)
        self.dec_embed_norm = nn.LayerNorm(d)
        self.enc_final_norm = nn.LayerNorm(d) if cfg.norm == "pre" else nn.Identity()
        self.dec_final_norm = nn.LayerNorm(d) if cfg.norm == "pre" else nn.Identity()
        self.length_head = nn.Linear(d, cfg.max_length_classes)
        self.dropout = nn.Dropout(cfg.dropout)

    def set_vocab_shard(self, start: int, end: int) -> None:
        """The ids [start, end) this rank's logits cover (all of them unless janus.parallelize splits them)."""
        allowed = torch.ones(end - start, dtype=torch.bool)
        for special in (self.cfg.pad_id, self.cfg.bos_id, self.cfg.mask_id):
            if start <= special < end:
                allowed[special - start] = False
        self.allowed, self.never = allowed, (~allowed).float() * NEVER
        self.vocab_start = start

    # ---- embeddings and output ----
    def _embed(self, tokens, positions, norm):
        if int(positions.max()) >= self.cfg.max_positions:
            raise ValueError(f"sequence position {int(positions.max())} exceeds max_positions="
                             f"{self.cfg.max_positions}: truncate inputs or raise max_positions")
        x = self.embed(tokens) * self.embed_scale + self.positions(positions)
        return self.dropout(norm(x))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied output projection: this rank's vocab shard of the logits."""
        return self.output(hidden, self.never.to(hidden.dtype))

    # ---- encoder ----
    def encode(self, src: torch.Tensor) -> Encoded:
        pad = src.eq(self.cfg.pad_id)
        pos = torch.arange(src.shape[1], device=src.device).expand_as(src)
        x = self._embed(src, pos, self.enc_embed_norm)
        mask = attention_bias((~pad).unsqueeze(1), x.dtype)  # [B, 1, 1, S]: key padding only
        for layer in self.encoder:
            x = layer(x, mask)
        x = self.enc_final_norm(x)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1)
        return Encoded(states=x, pad=pad, length_logits=self.length_head(pooled))

    def memory_kv(self, enc: Encoded) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention K/V of every decoder layer; computed once per source, shared by all streams."""
        return [layer.cross_attn.project_kv(enc.states) for layer in self.decoder]

    # ---- decoder ----
    def decode(self, enc: Encoded, tokens, positions, mask, memory_kv=None, cache: list[dict] | None = None,
               cache_keep: int | None = None):
        """Run the decoder over items (tokens[B,T] at positions[B,T]) with self-attention mask
        mask[B,T,Tk] (Tk = cached + T). With `cache` (one dict per layer), only the first `cache_keep`
        items' K/V are kept for later calls. Returns hidden states [B,T,d]."""
        memory_kv = memory_kv if memory_kv is not None else self.memory_kv(enc)
        x = self._embed(tokens, positions, self.dec_embed_norm)
        memory_mask = attention_bias((~enc.pad).unsqueeze(1), x.dtype)
        mask = attention_bias(mask, x.dtype)
        for i, layer in enumerate(self.decoder):
            x = layer(x, mask, cache=None if cache is None else cache[i], cache_keep=cache_keep, memory_kv=memory_kv[i],
                      memory_mask=memory_mask)
        return self.dec_final_norm(x)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- whole (unsharded) state dicts, for checkpoints that move across TP sizes ----
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The TP=1-equivalent state dict, gathered from every TP rank (collective at TP > 1)."""
        return gather_full_state(self)

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_full_state(self, state)
