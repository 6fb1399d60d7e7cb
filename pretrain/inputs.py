"""The user's own data: text files, directories of them, JSONL, and GLGE-layout pair directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from janus.files import read_text

TEXT_SUFFIXES = (".txt", ".src", ".tgt", ".md", ".rst")


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.suffix == ".jsonl"))
    return [path]


def read_documents(paths: list[str | Path]) -> Iterator[str]:
    """Documents from text files (blank-line-separated paragraphs are one document each; .src/.tgt
    files one per line), directories
    (every text/JSONL file below them, sorted) and JSONL (`text`, or `src` and `tgt`, per line)."""
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        files = _files(path)
        if not files:
            raise ValueError(f"{path} holds no .txt/.jsonl files")
        for f in files:
            if f.suffix == ".jsonl":
                for n, line in enumerate(read_text(f).splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{f}:{n}: not JSON ({err.msg}); each line must be one JSON object") from None
                    texts = [rec[k] for k in ("text", "src", "tgt") if isinstance(rec.get(k), str)]
                    if not texts:
                        raise ValueError(f"{f}:{n}: no 'text' (or 'src'/'tgt') string field")
                    yield from texts
            elif f.suffix in (".src", ".tgt"):  # one example per line
                yield from (line.strip() for line in read_text(f).splitlines() if line.strip())
            else:
                for block in f.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                    text = " ".join(block.split())
                    if text:
                        yield text


def read_pairs(data: str | Path, split: str) -> list[tuple[str, str]]:
    """The (src, tgt) pairs of one split of a GLGE-layout directory (DIR/{split}.src and .tgt, one example
    per line), refusing a missing side, an empty line or misaligned sides in one line."""
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
    return list(zip(*sides))


def read_pair_input(path: str | Path, split: str) -> list[tuple[str, str]]:
    """(src, tgt) pairs from a GLGE directory ({split}.src/.tgt) or a JSONL file with src/tgt fields."""
    path = Path(path)
    if path.is_dir():
        return read_pairs(path, split)
    if path.suffix == ".jsonl" and path.is_file():
        pairs = []
        for n, line in enumerate(read_text(path).splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not JSON ({err.msg}); each line must be one JSON object") from None
                if not isinstance(rec.get("src"), str) or not isinstance(rec.get("tgt"), str):
                    raise ValueError(f"{path}:{n}: needs string fields 'src' and 'tgt'")
                pairs.append((rec["src"], rec["tgt"]))
        return pairs
    raise FileNotFoundError(f"{path} is neither a task directory nor a .jsonl file of src/tgt pairs")
