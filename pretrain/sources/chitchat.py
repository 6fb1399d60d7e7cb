"""PyPI `chitchat-dataset` 0.9.0 (MIT): open-domain chat; turns alternate between two speakers."""

from __future__ import annotations

import json
import zipfile

from pretrain.packages import pip_package, sha256_file

NAME, VERSION = "chitchat-dataset", "0.9.0"
SHA256 = "7bf89f36645e2d5ec87d53370c8e851b5a688479c7beb7079cb4c87fc5acea3e"
LICENSE = "MIT"


def conversations() -> tuple[list[tuple[str, list[str]]], dict]:
    """(conversation id, turns) where each turn joins one speaker's consecutive messages."""
    wheel = pip_package(NAME, VERSION, SHA256)
    with zipfile.ZipFile(wheel) as z:
        data = json.loads(z.read("chitchat_dataset/dataset.json"))
    out = []
    for cid, conv in data.items():
        turns = [" ".join(" ".join(m["text"].split()) for m in turn) for turn in conv["messages"]]
        out.append((cid, [t for t in turns if t]))
    return out, {"registry": "pypi", "package": NAME, "version": VERSION, "license": LICENSE,
                 "sha256": sha256_file(wheel)}
