"""Task data in the GLGE layout: DIR/{train,dev,test}.{src,tgt}, one example per line, any language pair.
Bad data is refused in one line naming the file and the numbers."""

from __future__ import annotations

from pathlib import Path

from janus.files import read_text
from pretrain.datasets import SPLITS

TASKS = ("nmt", "summarization", "question_generation", "dialogue")


def read_split(data: str | Path, split: str) -> list[tuple[str, str]]:
    d = Path(data)
    sides = []
    for side in ("src", "tgt"):
        path = d / f"{split}.{side}"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a task directory holds {{train,dev,test}}.{{src,tgt}}")
        lines = read_text(path).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                raise ValueError(f"{path} line {n} is empty: every line must hold one example "
                                 f"(remove that pair from both {split}.src and {split}.tgt)")
        sides.append(lines)
    if len(sides[0]) != len(sides[1]):
        raise ValueError(f"{d / (split + '.src')} has {len(sides[0])} lines but {d / (split + '.tgt')} has "
                         f"{len(sides[1])}: the two sides must be line-aligned")
    if not sides[0]:
        raise ValueError(f"{d / (split + '.src')} is empty")
    return list(zip(*sides))


def check_task(task: str, data: str | Path, splits=SPLITS) -> dict[str, list[tuple[str, str]]]:
    if task not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if not Path(data).is_dir():
        raise FileNotFoundError(f"--data {data} is not a directory (fetch one with `janus data fetch`)")
    return {split: read_split(data, split) for split in splits}
