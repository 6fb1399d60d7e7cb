"""Task data in the GLGE layout: DIR/{train,dev,test}.{src,tgt}, one example per line, any language pair.
Bad data is refused in one line naming the file and the numbers."""

from __future__ import annotations

from pathlib import Path

from pretrain.datasets import SPLITS
from pretrain.inputs import read_pairs

TASKS = ("nmt", "summarization", "question_generation", "dialogue")


def check_task(task: str, data: str | Path, splits=SPLITS) -> dict[str, list[tuple[str, str]]]:
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data} is not a directory (fetch one with `janus data fetch`)")
    found = {split: read_pairs(data, split) for split in splits}
    for split, pairs in found.items():
        if not pairs:
            raise ValueError(f"{Path(data) / (split + '.src')} is empty")
    return found
