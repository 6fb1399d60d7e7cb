"""MFU's numerator: the FLOPs `step_flops` counts from shapes equal what torch's FlopCounterMode counts on
a real forward + backward, for every objective (attention through SDPA's math kernel, which decomposes into
matmuls torch can count; its fused CPU kernel has no FLOP formula and would count as 0)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from janus.config import preset
from janus.flops import step_flops
from janus.model import JanusModel
from janus.noising import span_mask
from janus.objective import Batch, compute_loss, objective
from janus.tokenizer import pad_batch


@pytest.mark.parametrize("name", ["ar", "ar-rdrop", "cmlm", "janus", "bang"])
def test_step_flops_equal_torchs_count(name, tokenizer, real_pairs):
    pairs = real_pairs[:16]
    tgt = pad_batch([tokenizer.encode(t) for _, t in pairs])
    batch = Batch(pad_batch([tokenizer.encode(s) for s, _ in pairs]), tgt,
                  span_mask(tgt, 0, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    model = JanusModel(preset("tiny", vocab_size=tokenizer.vocab_size, dropout=0.1))
    obj = objective(name)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counted:
        compute_loss(model, batch, obj)[0].backward()
    assert counted.get_total_flops() == pytest.approx(step_flops(model.cfg, batch, obj), rel=0.01)
    without = step_flops(model.cfg, batch, obj, attention=False)
    assert without < 0.97 * step_flops(model.cfg, batch, obj)  # the attention term is there, and counted
