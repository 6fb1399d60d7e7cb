"""Task datasets in the GLGE layout ({train,dev,test}.{src,tgt}, one example per line) with a
manifest.json. A dataset directory is written under a temporary name and renamed when whole, so a
directory that exists is complete; fetching again is a no-op."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from janus.export import sha256_file
from janus.files import new_directory
from janus.tokenizer import Tokenizer, train_tokenizer
from pretrain.inputs import read_pairs
from pretrain.packages import cache_dir, debian_indexes

SPLITS = ("train", "dev", "test")


def _clean(text: str) -> str:
    return " ".join(text.split())


RECIPE_VERSION = 2  # bump when a recipe's output changes, so cached datasets are rebuilt


def is_complete(out_dir: Path) -> bool:
    path = Path(out_dir) / "manifest.json"
    return path.is_file() and json.loads(path.read_text()).get("recipe_version") == RECIPE_VERSION


def write_task(out_dir: Path, splits: dict[str, list[tuple[str, str]]], manifest: dict) -> Path:
    out_dir = Path(out_dir)
    with new_directory(out_dir, replace=True) as tmp:
        counts, checksums = {}, {}
        for split in SPLITS:
            pairs = [(_clean(s), _clean(t)) for s, t in splits.get(split, [])]
            pairs = [(s, t) for s, t in pairs if s and t]
            counts[split] = len(pairs)
            for side, idx in (("src", 0), ("tgt", 1)):
                path = tmp / f"{split}.{side}"
                path.write_text("".join(p[idx] + "\n" for p in pairs), encoding="utf-8")
                checksums[path.name] = sha256_file(path)
        manifest = {**manifest, "recipe_version": RECIPE_VERSION, "counts": counts, "sha256": checksums}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return out_dir


def _split_pair(pair: str) -> tuple[str, str]:
    parts = pair.split("-")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair {pair!r} must look like SRC-TGT, e.g. en-de")
    return parts[0], parts[1]


def _bucket(key: str, dev_test_per_mille: int = 20) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 1000
    return "dev" if h < dev_test_per_mille else "test" if h < 2 * dev_test_per_mille else "train"


def fetch_nmt(out_dir: Path, pair: str = "en-de") -> Path:
    """LibreOffice help aligned on (path, id) + Debian description translations (DDTP). LibreOffice's
    held-out modules (smath, schart, sdraw) give dev/test split by page; DDTP splits by source package."""
    from pretrain.sources import ddtp, libreoffice

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    src_lang, tgt_lang = _split_pair(pair)
    pairs, sources = libreoffice.aligned_pairs(src_lang, tgt_lang)
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for p in pairs:
        if p.module in libreoffice.HELD_OUT_MODULES:
            page_bit = int(hashlib.sha256(p.path.encode()).hexdigest(), 16) % 2
            splits["dev" if page_bit == 0 else "test"].append((p.src, p.tgt))
        else:
            splits["train"].append((p.src, p.tgt))
    ddtp_pairs, ddtp_info = ddtp.translation_pairs(src_lang, tgt_lang)
    seen = {pair for split in splits.values() for pair in split}
    for package, a, b in ddtp_pairs:
        if (a, b) not in seen:
            seen.add((a, b))
            splits[ddtp.split_of(package)].append((a, b))
    manifest = {"dataset": "nmt", "pair": f"{src_lang}-{tgt_lang}", "sources": sources + ddtp_info,
                "split_rule": f"LibreOffice: held-out modules {list(libreoffice.HELD_OUT_MODULES)} -> dev/test by "
                              "page; DDTP: by source package (~2% dev, ~2% test)"}
    return write_task(out_dir, splits, manifest)


def fetch_summarization(out_dir: Path) -> Path:
    """Debian package long description -> its synopsis (English), split by source package."""
    from pretrain.sources import ddtp

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    items, info = ddtp.summaries()
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for package, body, synopsis in items:
        splits[ddtp.split_of(package)].append((body, synopsis))
    return write_task(out_dir, splits, {"dataset": "summarization", "sources": info,
                                        "split_rule": "by source package (~2% dev, ~2% test)"})


def fetch_dialogue(out_dir: Path, context_turns: int = 3, min_turns: int = 6) -> Path:
    """chitchat: the last `context_turns` turns -> the reply, from conversations of >= min_turns turns;
    split by conversation."""
    from pretrain.sources import chitchat

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    conversations, info = chitchat.conversations()
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for cid, turns in conversations:
        if len(turns) < min_turns:
            continue
        for i in range(1, len(turns)):
            context = " || ".join(turns[max(0, i - context_turns):i])
            splits[_bucket(cid, 50)].append((context, turns[i]))
    return write_task(out_dir, splits, {"dataset": "dialogue", "sources": [info],
                                        "split_rule": "by conversation (~5% dev, ~5% test)",
                                        "context": f"last {context_turns} turns joined by ' || '"})


def fetch_qg(out_dir: Path) -> Path:
    """FAQ answer -> question (Python FAQ, perlfaq, Debian FAQ): evaluation only, all in dev/test."""
    from pretrain.sources import docs

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    pairs, infos = docs.faq_pairs()
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "test": []}
    for origin, answer, question in pairs:
        splits["dev" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 2 else "test"].append(
            (answer, question))
    return write_task(out_dir, splits, {"dataset": "qg", "sources": infos,
                                        "split_rule": "evaluation only: dev/test by question hash; train is empty"})


def fetch_pretrain_en(out_dir: Path) -> Path:
    """The monolingual English mix: Debian documentation, GCIDE, WordNet, package descriptions, chat and
    State of the Union addresses. Documents separated by blank lines in train.txt / dev.txt (~0.5%)."""
    from pretrain.sources import chitchat, ddtp, docs, sotu

    out_dir = Path(out_dir)
    if is_complete(out_dir):
        return out_dir
    groups = docs.english_documents()
    paths, _ = debian_indexes(["en"])
    descriptions = [d.synopsis + ". " + " ".join(d.paragraphs) for d in ddtp.parse_translation(paths["en"], "en").values()]
    groups.append(("debian-descriptions", ["\n".join(descriptions[i:i + 50]) for i in range(0, len(descriptions), 50)],
                   {"registry": "debian", "index": "bookworm main i18n Translation-en", "license": ddtp.LICENSE}))
    convs, info = chitchat.conversations()
    groups.append(("chitchat", ["\n".join(turns) for _, turns in convs], info))
    addresses, info = sotu.addresses()
    groups.append(("sotu", addresses, info))
    with new_directory(out_dir, replace=True) as tmp:
        _write_english(tmp, groups)
    return out_dir


def _write_english(tmp: Path, groups: list) -> None:
    seen, words, counts = set(), {}, {"train": 0, "dev": 0}
    with open(tmp / "train.txt", "w", encoding="utf-8") as train, open(tmp / "dev.txt", "w", encoding="utf-8") as dev:
        for name, documents, _ in groups:
            words[name] = 0
            for doc in documents:
                doc = "\n".join(" ".join(line.split()) for line in doc.splitlines() if line.strip())
                digest = hashlib.sha256(doc.encode()).digest()
                if not doc or digest in seen:
                    continue
                seen.add(digest)
                words[name] += len(doc.split())
                split = "dev" if digest[0] < 2 else "train"  # ~0.8% of documents, by content hash
                counts[split] += 1
                (dev if split == "dev" else train).write(doc + "\n\n")
    manifest = {"dataset": "pretrain-en", "recipe_version": RECIPE_VERSION,
                "sources": [{"name": n, **info} for n, _, info in groups], "words": words,
                "total_words": sum(words.values()), "documents": counts,
                "sha256": {f: sha256_file(tmp / f) for f in ("train.txt", "dev.txt")}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


RECIPES = {"nmt": fetch_nmt, "summarization": fetch_summarization, "dialogue": fetch_dialogue, "qg": fetch_qg,
           "pretrain-en": fetch_pretrain_en}


def fetch(name: str, out_dir: Path | None = None, pair: str = "en-de") -> Path:
    if name not in RECIPES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(RECIPES)}")
    default = f"nmt-{pair}" if name == "nmt" else name
    out = Path(out_dir) if out_dir else cache_dir() / "datasets" / default
    return RECIPES[name](out, pair) if name == "nmt" else RECIPES[name](out)


def nmt_tokenizer(vocab_size: int = 8000, pair: str = "en-de") -> tuple[Path, Tokenizer]:
    """The LibreOffice NMT data and a joint tokenizer trained on its train split (both cached)."""
    data = fetch("nmt", pair=pair)
    version = json.loads((data / "manifest.json").read_text())["sha256"]["train.src"][:12]
    path = cache_dir() / "tokenizers" / f"nmt-{pair}-{vocab_size}-{version}.model"
    if not path.exists():
        # every character of this small, clean corpus (umlauts included) gets a piece
        train_tokenizer((s for p in read_pairs(data, "train") for s in p), path, vocab_size=vocab_size,
                        character_coverage=1.0)
    return data, Tokenizer(path)
