"""English text from pinned Debian documentation packages, and FAQ answer -> question pairs."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from pretrain.packages import apt_package, sha256_file, unpack_deb

# name: (version, sha256, licence)
PACKAGES = {
    "linux-doc-6.1": ("6.1.192-2", "d1d1b5a602f0d439ecc39e713e044bf2df30d839fb4bf8a7b859ba3273c47993", "GPL-2.0"),
    "python3.11-doc": ("3.11.2-6+deb12u9", "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be",
                       "PSF-2.0"),
    "perl-doc": ("5.36.0-7+deb12u4", "f4269cff4576d6f02a6756df842988e58451c7e945b08517dd235531b24e48f8",
                 "Artistic-1.0 or GPL-1.0+"),
    "dict-gcide": ("0.48.5+nmu2", "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f", "GPL-3.0+"),
    "wordnet-base": ("1:3.0-37", "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752", "WordNet-3.0"),
    "debian-faq": ("11.1", "427426e0cfa6888622fc1d72631071cb4b5a1f86ccde722e7820bcef284de5d0", "GPL-2.0+"),
}


def fetch(name: str) -> tuple[Path, dict]:
    version, sha, licence = PACKAGES[name]
    deb = apt_package(name, version, sha)
    return unpack_deb(deb), {"registry": "debian", "package": name, "version": version, "license": licence,
                             "sha256": sha256_file(deb)}


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


_RST_NOISE = re.compile(r"^(\.\. |:[a-z]+:|[=\-~^*#+`]{3,}\s*$)")


def rst_documents(root: Path, pattern: str) -> list[str]:
    """Prose paragraphs of Sphinx `_sources/*.rst.txt` (directives, rules, code blocks dropped)."""
    docs = []
    for f in sorted(root.glob(pattern)):
        kept = []
        for para in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace")):
            lines = [ln for ln in para.splitlines() if ln.strip() and not _RST_NOISE.match(ln.strip())]
            if not lines or para.startswith((" ", "\t")):  # indented: code or directive bodies
                continue
            text = " ".join(" ".join(lines).split())
            if len(text.split()) >= 5:
                kept.append(text)
        if kept:
            docs.append("\n".join(kept))
    return docs


def pod_documents(root: Path) -> list[str]:
    docs = []
    for f in sorted(root.glob("usr/share/perl/*/pod/*.pod")):
        kept = [p for p in _paragraphs(f.read_text(encoding="utf-8", errors="replace"))
                if not p.startswith("=") and len(p.split()) >= 5]
        # verbatim (code) paragraphs are indented in POD; _paragraphs collapsed them, so drop code-like ones
        kept = [p for p in kept if not re.search(r"[;{}$@]\s*$", p)]
        if kept:
            docs.append("\n".join(kept))
    return docs


def gcide_documents(root: Path) -> list[str]:
    with gzip.open(root / "usr/share/dictd/gcide.dict.dz", "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    entries = [p for p in _paragraphs(text) if len(p.split()) >= 8]
    return ["\n".join(entries[i:i + 50]) for i in range(0, len(entries), 50)]


def wordnet_documents(root: Path) -> list[str]:
    docs = []
    for part in ("noun", "verb", "adj", "adv"):
        glosses = []
        for line in (root / f"usr/share/wordnet/data.{part}").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue
            words = line.split(" | ", 1)[0].split()
            lemma = words[4].replace("_", " ") if len(words) > 4 else ""
            glosses.append(f"{lemma}: {line.split(' | ', 1)[1].strip()}")
        docs.extend("\n".join(glosses[i:i + 100]) for i in range(0, len(glosses), 100))
    return docs


def _sections(lines: list[str], is_title) -> list[tuple[str, list[str]]]:
    """Split lines into (title, body lines) where is_title(lines, i) returns the title at line i or None."""
    out, title, body, i = [], None, [], 0
    while i < len(lines):
        found = is_title(lines, i)
        if found:
            if title:
                out.append((title, body))
            title, body = found[0], []
            i += found[1]
            continue
        body.append(lines[i])
        i += 1
    if title:
        out.append((title, body))
    return out


def _rst_title(lines, i):
    if i + 1 < len(lines) and lines[i].strip() and re.fullmatch(r"[-=~^*]{3,}", lines[i + 1].strip()):
        return lines[i].strip(), 2
    return None


def _pod_title(lines, i):
    m = re.match(r"^=head\d (.+)$", lines[i])
    return (m.group(1).strip(), 1) if m else None


def _faq_txt_title(lines, i):
    m = re.match(r"^\d+(?:\.\d+)+\.\s+(.+)$", lines[i])
    return (m.group(1).strip(), 1) if m else None


def _answer(body: list[str], skip=("..", "=")) -> str:
    paras = [p for p in _paragraphs("\n".join(body)) if not p.startswith(skip)]
    return " ".join(" ".join(paras).split()[:200])


def faq_pairs() -> tuple[list[tuple[str, str, str]], list[dict]]:
    """(origin, answer, question) from the Python FAQ, perlfaq1-9 and the Debian FAQ."""
    sources = []
    py, info = fetch("python3.11-doc")
    sources.append(info)
    files = [(f"python:{f.name}", f.read_text(encoding="utf-8"), _rst_title)
             for f in sorted(py.glob("usr/share/doc/python3.11/html/_sources/faq/*.rst.txt"))]
    perl, info = fetch("perl-doc")
    sources.append(info)
    files += [(f"perl:{f.name}", f.read_text(encoding="utf-8", errors="replace"), _pod_title)
              for f in sorted(perl.glob("usr/share/perl/*/pod/perlfaq[1-9].pod"))]
    deb, info = fetch("debian-faq")
    sources.append(info)
    with gzip.open(deb / "usr/share/doc/debian/FAQ/debian-faq.en.txt.gz", "rt", encoding="utf-8") as f:
        files.append(("debian-faq", f.read(), _faq_txt_title))
    pairs = []
    for origin, text, is_title in files:
        for title, body in _sections(text.splitlines(), is_title):
            answer = _answer(body)
            if title.endswith("?") and len(answer.split()) >= 5:
                pairs.append((origin, answer, title))
    return pairs, sources


def english_documents() -> list[tuple[str, list[str], dict]]:
    """(source name, documents, provenance) for each Debian documentation source."""
    out = []
    root, info = fetch("linux-doc-6.1")
    out.append(("linux-doc", rst_documents(root, "usr/share/doc/linux-doc-6.1/html/_sources/**/*.rst.txt"), info))
    root, info = fetch("python3.11-doc")
    out.append(("python-doc", rst_documents(root, "usr/share/doc/python3.11/html/_sources/**/*.rst.txt"), info))
    root, info = fetch("perl-doc")
    out.append(("perl-doc", pod_documents(root), info))
    root, info = fetch("dict-gcide")
    out.append(("gcide", gcide_documents(root), info))
    root, info = fetch("wordnet-base")
    out.append(("wordnet", wordnet_documents(root), info))
    return out
