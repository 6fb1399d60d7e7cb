"""Real-data recipes: GLGE layout, manifests, leak-free splits, idempotent re-runs."""

import json

import pytest

from pretrain.datasets import SPLITS, fetch
from pretrain.inputs import read_pairs


@pytest.mark.parametrize("name, minimum", [("summarization", 40000), ("dialogue", 100000), ("qg", 500)])
def test_task_recipes_write_glge_layout(name, minimum):
    out = fetch(name)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) >= minimum
    assert all(s["sha256"] for s in manifest["sources"]) and all("license" in s for s in manifest["sources"])
    by_split = {split: read_pairs(out, split) for split in SPLITS}
    assert {s: len(p) for s, p in by_split.items()} == manifest["counts"]
    assert all(src and tgt for pairs in by_split.values() for src, tgt in pairs)
    # splits are by group (source package, conversation); only generic texts ("Hello || How are you?")
    # may recur across groups
    train_src = {s for s, _ in by_split["train"]}
    test_src = [s for s, _ in by_split["test"]]
    assert sum(s in train_src for s in test_src) <= 0.05 * len(test_src)


def test_nmt_mixes_libreoffice_and_debian_descriptions(nmt_dir):
    manifest = json.loads((nmt_dir / "manifest.json").read_text())
    packages = {s.get("package") or s.get("index") for s in manifest["sources"]}
    assert "libreoffice-help-de" in packages and any("Translation-de" in p for p in packages)
    assert manifest["counts"]["train"] > 55000 and manifest["counts"]["dev"] > 1000
    train = set(read_pairs(nmt_dir, "train"))
    assert not train & set(read_pairs(nmt_dir, "test"))


def test_pretrain_mix_has_eight_sources_and_15m_words():
    out = fetch("pretrain-en")
    manifest = json.loads((out / "manifest.json").read_text())
    assert len([w for w in manifest["words"].values() if w > 100000]) >= 8
    assert manifest["total_words"] >= 15_000_000
    before = (out / "train.txt").stat().st_mtime_ns
    fetch("pretrain-en")  # a re-run is a no-op
    assert (out / "train.txt").stat().st_mtime_ns == before


def test_bad_recipe_arguments():
    with pytest.raises(ValueError, match="unknown dataset 'wmt'"):
        fetch("wmt")
    with pytest.raises(ValueError, match="must look like SRC-TGT"):
        fetch("nmt", pair="ende")


def test_missing_tool_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    from pretrain.packages import FetchError

    monkeypatch.setenv("JANUS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, dpkg, npm here
    with pytest.raises(FetchError, match="apt-get is not installed"):
        fetch("qg", tmp_path / "qg")
    assert not (tmp_path / "qg").exists() and not (tmp_path / "qg.tmp").exists()
