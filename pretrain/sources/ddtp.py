"""Debian package descriptions (DDTP): the `Translation-<lang>` apt indexes of bookworm main.

- translation pairs: English and translated descriptions joined on `Description-md5`; the synopses
  pair up, and the long-description paragraphs where both sides have the same number of paragraphs;
- summarization: English long description -> its one-line synopsis.
Every item carries its source package, so splits never put sibling packages on both sides.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pretrain.packages import debian_indexes, sha256_file

LICENSE = "per package (Debian package descriptions; DDTP translations under the packages' licences)"
BOILERPLATE = re.compile(r"transitional (dummy )?package|dummy transitional|dummy package", re.I)


@dataclass
class Description:
    package: str
    md5: str
    synopsis: str
    paragraphs: list[str]


def parse_translation(path: Path, lang: str) -> dict[str, Description]:
    """md5 -> description (first occurrence)."""
    out: dict[str, Description] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for record in text.split("\n\n"):
        pkg = md5 = None
        desc_lines: list[str] = []
        in_desc = False
        for line in record.splitlines():
            if line.startswith("Package: "):
                pkg, in_desc = line[9:].strip(), False
            elif line.startswith("Description-md5: "):
                md5, in_desc = line[17:].strip(), False
            elif line.startswith(f"Description-{lang}: "):
                desc_lines, in_desc = [line.split(": ", 1)[1]], True
            elif in_desc and line.startswith(" "):
                desc_lines.append(line[1:])
            else:
                in_desc = False
        if not (pkg and md5 and desc_lines) or md5 in out:
            continue
        paragraphs, current = [], []
        for line in desc_lines[1:]:
            if line.strip() == ".":
                if current:
                    paragraphs.append(" ".join(" ".join(current).split()))
                current = []
            else:
                current.append(line)
        if current:
            paragraphs.append(" ".join(" ".join(current).split()))
        out[md5] = Description(pkg, md5, " ".join(desc_lines[0].split()), [p for p in paragraphs if p])
    return out


def source_packages(packages_index: Path) -> dict[str, str]:
    """binary package -> source package name."""
    mapping, pkg, src = {}, None, None
    for line in packages_index.read_text(encoding="utf-8", errors="replace").splitlines() + [""]:
        if line.startswith("Package: "):
            pkg = line[9:].strip()
        elif line.startswith("Source: "):
            src = line[8:].split()[0]
        elif not line.strip():
            if pkg:
                mapping[pkg] = src or pkg
            pkg, src = None, None
    return mapping


def split_of(source_package: str, dev_test_per_mille: int = 20) -> str:
    """Deterministic split by source package: ~2% dev, ~2% test."""
    h = int(hashlib.sha256(source_package.encode()).hexdigest(), 16) % 1000
    return "dev" if h < dev_test_per_mille else "test" if h < 2 * dev_test_per_mille else "train"


def _info(paths: dict[str, Path]) -> list[dict]:
    return [{"registry": "debian", "index": f"bookworm main i18n Translation-{lang}", "sha256": sha256_file(p),
             "license": LICENSE} for lang, p in paths.items()]


def translation_pairs(src_lang: str, tgt_lang: str) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """(source package, src text, tgt text), deduplicated; one side must be English (DDTP pivots on it)."""
    if "en" not in (src_lang, tgt_lang):
        raise ValueError(f"DDTP pairs need English on one side, got {src_lang}-{tgt_lang}")
    other = tgt_lang if src_lang == "en" else src_lang
    paths, packages = debian_indexes([other])
    en, xx = parse_translation(paths["en"], "en"), parse_translation(paths[other], other)
    sources = source_packages(packages)
    out, seen = [], set()
    for md5, t in xx.items():
        e = en.get(md5)
        if e is None:
            continue
        src_pkg = sources.get(e.package, e.package)
        items = [(e.synopsis, t.synopsis)]
        if len(e.paragraphs) == len(t.paragraphs):
            items += list(zip(e.paragraphs, t.paragraphs))
        for a, b in items:
            pair = (a, b) if src_lang == "en" else (b, a)
            if a != b and pair not in seen:
                seen.add(pair)
                out.append((src_pkg, *pair))
    return out, _info(paths)


def summaries(min_words: int = 30) -> tuple[list[tuple[str, str, str]], list[dict]]:
    """(source package, long description, synopsis) for English descriptions of >= min_words words."""
    paths, packages = debian_indexes(["en"])
    sources = source_packages(packages)
    out, seen = [], set()
    for d in parse_translation(paths["en"], "en").values():
        body = " ".join(d.paragraphs)
        if len(body.split()) < min_words or BOILERPLATE.search(d.synopsis + " " + body) or body in seen:
            continue
        seen.add(body)
        out.append((sources.get(d.package, d.package), body, d.synopsis))
    return out, _info(paths)
