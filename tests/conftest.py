"""Shared fixtures: real en-de sentence pairs (LibreOffice help, fetched once into the cache), a
tokenizer trained on them, and a single-process tensor-parallel group."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from janus.parallel import init_parallel
from janus.tokenizer import Tokenizer, train_tokenizer
from pretrain.datasets import fetch, read_pairs
from pretrain.registry import cache_dir

warnings.filterwarnings("ignore", message=".*Transformer Engine.*")


@pytest.fixture(scope="session")
def nmt_dir() -> Path:
    return fetch("nmt", pair="en-de")


@pytest.fixture(scope="session")
def real_pairs(nmt_dir) -> list[tuple[str, str]]:
    """A few hundred real training pairs of moderate length."""
    pairs = [p for p in read_pairs(nmt_dir, "train") if 4 <= len(p[0].split()) <= 14]
    return pairs[::20][:400]


@pytest.fixture(scope="session")
def tokenizer(nmt_dir) -> Tokenizer:
    version = json.loads((nmt_dir / "manifest.json").read_text())["sha256"]["train.src"][:12]
    path = cache_dir() / "test-tokenizers" / f"nmt-en-de-1000-{version}.model"
    if path.exists():
        return Tokenizer(path)
    sentences = [s for pair in read_pairs(nmt_dir, "train")[:4000] for s in pair]
    return train_tokenizer(sentences, path, vocab_size=1000, character_coverage=1.0)


@pytest.fixture(scope="session", autouse=True)
def parallel():
    init_parallel(1)
    torch.set_flush_denormal(True)
    yield

