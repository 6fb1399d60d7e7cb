"""The learning rate at each step: linear warmup, then inverse square root or polynomial decay."""

from __future__ import annotations

import math


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
