"""The JANUS objective: P_AR, P_NAR and P_AUX from one decoder, and every loss term of the spec.

Which passes run follows from the weights: AR-only (only `ar` > 0) runs the AR pass alone; CMLM-only
(`nar`, `length`) runs the NAR content stream alone; JANUS runs both passes with the AUX query stream.
All softmax/KL arithmetic is done on this rank's vocab shard with sums all-reduced over TP ranks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from janus.masks import ar_items, bang_items, janus_nar_items, masked_items, nar_items
from janus.model import JanusModel
from janus.parallel import vocab_parallel_log_softmax, vocab_pick, vocab_sum


@dataclass
class ObjectiveConfig:
    ar: float = 1.0  # LS(P_AR, y) over all target tokens
    kl_ar_nar: float = 1.0  # SKL(P_AR[M], P_NAR[M])
    kl_ar_aux: float = 3.0  # SKL(P_AR[M], P_AUX[M])
    aux: float = 0.5  # LS(P_AUX[M], y_M)
    nar: float = 0.5  # LS(P_NAR[M], y_M)
    length: float = 0.1  # CE(length)
    kl_nar_aux: float = 1.0  # SKL(P_NAR[M], P_AUX[M])
    label_smoothing: float = 0.1
    aux_order: str = "left_to_right"  # left_to_right | permutation (the XLNet variant)
    bang_streams: int = 0  # > 0: the BANG objective (mean NLL over this many predicting streams) instead
    bang_cross_stream: bool = False  # BANG's masks: False as in its released code, True as its paper describes
    # R-Drop's alpha (Liang et al., 2021): two AR passes with their own dropout, the loss
    # (NLL_1 + NLL_2 + alpha * SKL(P_1, P_2)) / 2, i.e. R-Drop's loss halved so that `ar` keeps its scale
    rdrop: float = 0.0

    @property
    def needs_ar(self) -> bool:
        return any(w > 0 for w in (self.ar, self.kl_ar_nar, self.kl_ar_aux, self.rdrop))

    @property
    def needs_aux(self) -> bool:
        return any(w > 0 for w in (self.aux, self.kl_ar_aux, self.kl_nar_aux))

    @property
    def needs_nar(self) -> bool:
        return self.needs_aux or any(w > 0 for w in (self.nar, self.kl_ar_nar, self.length))


_BANG = dict(ar=0.0, kl_ar_nar=0.0, kl_ar_aux=0.0, aux=0.0, nar=0.0, length=0.0, kl_nar_aux=0.0, bang_streams=4)

OBJECTIVES: dict[str, dict] = {
    # the NMT objective as released
    "janus": {},
    # BART-style pretraining: 0.5*(NLL_AR + NLL_NAR + NLL_AUX) + 0.5*(SKL(NAR,AUX) + SKL(AR,AUX))
    "janus-pretrain": dict(ar=0.5, nar=0.5, aux=0.5, kl_nar_aux=0.5, kl_ar_aux=0.5, kl_ar_nar=0.0, length=0.0,
                           label_smoothing=0.0),
    "ar": dict(ar=1.0, kl_ar_nar=0.0, kl_ar_aux=0.0, aux=0.0, nar=0.0, length=0.0, kl_nar_aux=0.0),
    # the R-Drop control: AR with a consistency term between two dropout passes (R-Drop's default alpha)
    "ar-rdrop": dict(ar=1.0, kl_ar_nar=0.0, kl_ar_aux=0.0, aux=0.0, nar=0.0, length=0.0, kl_nar_aux=0.0, rdrop=5.0),
    "cmlm": dict(ar=0.0, kl_ar_nar=0.0, kl_ar_aux=0.0, aux=0.0, nar=1.0, length=0.1, kl_nar_aux=0.0),
    # JANUS without P_AUX and the KL terms: AR and CMLM losses on one decoder (the demo's first stage)
    "ar-cmlm": dict(ar=1.0, kl_ar_nar=0.0, kl_ar_aux=0.0, aux=0.0, nar=0.5, length=0.1, kl_nar_aux=0.0),
    # BANG (Qi et al., 2021): 4 predicting streams, AR to NAR, masks as in microsoft/BANG's code
    "bang": _BANG,
    # the same with the paper's cross-stream-visible [MASK]s (see janus.masks.bang_items)
    "bang-cross-stream": dict(_BANG, bang_cross_stream=True),
    # JANUS with the XLNet variant of P_AUX
    "janus-permutation": dict(aux_order="permutation"),
}


KL_TERMS = ("kl_ar_nar", "kl_ar_aux", "kl_nar_aux")


def objective(name: str, kl_scale: float = 1.0, **overrides) -> ObjectiveConfig:
    """The named objective, with `overrides`, and its SKL weights times `kl_scale`."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    cfg = dataclasses.replace(ObjectiveConfig(**OBJECTIVES[name]), **overrides)
    return dataclasses.replace(cfg, **{term: getattr(cfg, term) * kl_scale for term in KL_TERMS})


@dataclass
class Batch:
    src: torch.Tensor  # [B, S] source ids, padded
    tgt: torch.Tensor  # [B, L] bos .. eos, padded
    masked: torch.Tensor  # [B, L] bool: the decoder's NAR masked set M
    order: torch.Tensor | None = None  # [B, L] generation rank of each position for P_AUX (None: left to right)

    def tensors(self):  # (not dataclasses.astuple: it deep-copies every tensor)
        return (getattr(self, f.name) for f in dataclasses.fields(self))

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(*(None if t is None else t.to(device, non_blocking=non_blocking) for t in self.tensors()))

    def pin_memory(self) -> "Batch":
        """Page-locked copies, so a GPU copy can overlap compute (DataLoader's pin_memory calls this)."""
        return Batch(*(None if t is None else t.pin_memory() for t in self.tensors()))


def label_smoothed_nll(logp: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float,
                       allowed: torch.Tensor, n_allowed: int) -> torch.Tensor:
    """Label smoothing spreads eps over the ids that can be a target (`allowed`, this rank's shard of them)."""
    nll = -vocab_pick(logp, target)
    loss = (1.0 - eps) * nll - eps * vocab_sum(logp, allowed.to(logp.dtype)) / n_allowed if eps > 0 else nll
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def _targets(model: JanusModel) -> tuple[torch.Tensor, int]:
    return model.allowed, model.n_targets


def symmetric_kl(logp: torch.Tensor, logq: torch.Tensor, valid: torch.Tensor, p: torch.Tensor | None = None,
                 q: torch.Tensor | None = None) -> torch.Tensor:
    """(KL(p||q) + KL(q||p)) / 2 = sum_v (p - q)(log p - log q) / 2, mean over valid positions. `p`, `q`:
    exp(logp), exp(logq) when the caller has them (each distribution enters two of JANUS's three terms)."""
    p = logp.exp() if p is None else p
    q = logq.exp() if q is None else q
    skl = 0.5 * vocab_sum((p - q) * (logp - logq))
    return (skl * valid).sum() / valid.sum().clamp(min=1)


def length_targets(tgt: torch.Tensor, pad_id: int, classes: int) -> torch.Tensor:
    return tgt.ne(pad_id).sum(1).clamp(max=classes - 1)


def bang_loss(model: JanusModel, batch: Batch, cfg: ObjectiveConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BANG: the mean over predicting streams of each stream's label-smoothed NLL of y_1..y_n."""
    mc = model.cfg
    tgt = batch.tgt
    n, k = tgt.shape[1] - 1, cfg.bang_streams
    enc = model.encode(batch.src)
    items = bang_items(tgt[:, :-1], k, mc.pad_id, mc.mask_id, cfg.bang_cross_stream)
    h = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=model.memory_kv(enc))[:, n:]
    logp = vocab_parallel_log_softmax(model.logits(h)).view(tgt.shape[0], k, n, -1)
    valid = tgt[:, 1:].ne(mc.pad_id).float()
    terms = {f"stream{s + 1}": label_smoothed_nll(logp[:, s], tgt[:, 1:], valid, cfg.label_smoothing, *_targets(model))
             for s in range(k)}
    return sum(terms.values()) / k, terms


def compute_loss(model: JanusModel, batch: Batch, cfg: ObjectiveConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns the weighted total and each term (unweighted) for logging."""
    if cfg.bang_streams > 0:
        return bang_loss(model, batch, cfg)
    mc = model.cfg
    tgt = batch.tgt
    eps = cfg.label_smoothing
    enc = model.encode(batch.src)
    memory = model.memory_kv(enc)
    terms: dict[str, torch.Tensor] = {}
    weights = dataclasses.asdict(cfg)

    if (cfg.aux_order == "permutation") != (batch.order is not None):
        raise ValueError(f"aux_order={cfg.aux_order!r} but the batch {'has no' if batch.order is None else 'has an'} "
                         "AUX order: set the same aux_order in the loader config")
    mpos, mvalid = masked_items(batch.masked, batch.order)
    y_m = tgt.gather(1, mpos)
    valid_m = mvalid.float()

    if cfg.needs_ar:
        items = ar_items(tgt, mc.pad_id, mc.mask_id)
        n = tgt.shape[1] - 1
        h = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=memory)[:, n:]
        logp_ar = vocab_parallel_log_softmax(model.logits(h))  # row t-1 predicts tgt[:, t]
        valid = tgt[:, 1:].ne(mc.pad_id).float()
        terms["ar"] = label_smoothed_nll(logp_ar, tgt[:, 1:], valid, eps, *_targets(model))
        if cfg.rdrop > 0:  # the same pass again: another dropout mask
            h2 = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=memory)[:, n:]
            logp_ar2 = vocab_parallel_log_softmax(model.logits(h2))
            terms["ar"] = 0.5 * (terms["ar"] + label_smoothed_nll(logp_ar2, tgt[:, 1:], valid, eps, *_targets(model)))
            terms["rdrop"] = 0.5 * symmetric_kl(logp_ar, logp_ar2, valid)
        # AR predictions of the masked tokens: y_t is predicted at query row t-1
        logp_ar_m = logp_ar.gather(1, (mpos - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, logp_ar.shape[-1]))

    if cfg.needs_nar:
        noised = tgt.masked_fill(batch.masked, mc.mask_id)
        length = tgt.shape[1]
        if cfg.needs_aux:
            items = janus_nar_items(tgt, noised, mpos, mvalid, mc.pad_id, mc.mask_id)
        else:
            items = nar_items(noised, mc.pad_id)
        h = model.decode(enc, items.tokens, items.positions, items.mask, memory_kv=memory)
        h_nar = h[:, :length].gather(1, mpos.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        logp_nar = vocab_parallel_log_softmax(model.logits(h_nar))
        terms["nar"] = label_smoothed_nll(logp_nar, y_m, valid_m, eps, *_targets(model))
        # a KL term at weight 0 is not computed; each distribution's probabilities are computed once
        p_nar = logp_nar.exp() if cfg.kl_ar_nar > 0 or cfg.kl_nar_aux > 0 else None
        p_ar_m = logp_ar_m.exp() if cfg.kl_ar_nar > 0 or cfg.kl_ar_aux > 0 else None  # (either implies needs_ar)
        if cfg.needs_aux:
            k = mpos.shape[1]
            logp_aux = vocab_parallel_log_softmax(model.logits(h[:, length + k:]))
            p_aux = logp_aux.exp() if cfg.kl_ar_aux > 0 or cfg.kl_nar_aux > 0 else None
            terms["aux"] = label_smoothed_nll(logp_aux, y_m, valid_m, eps, *_targets(model))
            if cfg.kl_nar_aux > 0:
                terms["kl_nar_aux"] = symmetric_kl(logp_nar, logp_aux, valid_m, p_nar, p_aux)
        if cfg.kl_ar_nar > 0:
            terms["kl_ar_nar"] = symmetric_kl(logp_ar_m, logp_nar, valid_m, p_ar_m, p_nar)
        if cfg.kl_ar_aux > 0:
            terms["kl_ar_aux"] = symmetric_kl(logp_ar_m, logp_aux, valid_m, p_ar_m, p_aux)
        terms["length"] = F.cross_entropy(enc.length_logits.float(),
                                          length_targets(tgt, mc.pad_id, mc.max_length_classes))

    total = sum(weights[name] * value for name, value in terms.items() if weights[name] > 0)
    return total, terms
