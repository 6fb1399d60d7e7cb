"""LibreOffice help (Debian `libreoffice-help-*`, MPL-2.0): parallel paragraphs aligned on
(relative path, element id); every `par_id...` / `hd_id...` element has the same id in every language."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from pretrain.packages import apt_package, sha256_file, unpack_deb

VERSION = "4:7.4.7-1+deb12u14"
LICENSE = "MPL-2.0"
# sha256 of the pinned .debs; languages without a pin are still verified by apt against Debian's
# signed index, and their digest is recorded in the manifest.
SHA256 = {
    "en-us": "8faa840285734d6cfe1ed25537b48f07e74bd6412e3917bf8e5f8a653f7b3712",
    "de": "00490b63c509ac96f7f212d6a6e40452d3e0d1f97ccf4b824dd5ec4c01e8277f",
}
HELD_OUT_MODULES = ("smath", "schart", "sdraw")  # dev/test; everything else is train

_ID = re.compile(r"^(par|hd)_id")


def package_for(lang: str) -> tuple[str, str]:
    """Language code -> (Debian package suffix, help directory name): en -> en-us / en-US."""
    code = "en-us" if lang.lower() == "en" else lang.lower()
    parts = code.split("-")
    dirname = parts[0] + ("-" + parts[1].upper() if len(parts) > 1 else "")
    return code, dirname


class _Paragraphs(HTMLParser):
    """Collects the whitespace-joined text of each element whose id is par_id*/hd_id*, skipping
    `hidden` alternatives (platform-specific variants of the same sentence)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: dict[str, str] = {}
        self._stack: list[tuple[str, str | None, bool]] = []  # (tag, captured id, hidden)
        self._texts: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        pid = a.get("id")
        captured = pid if pid and _ID.match(pid) and pid not in self._texts else None
        if captured:
            self._texts[captured] = []
        hidden = "hidden" in a
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        self._stack.append((tag, captured, hidden))

    def handle_endtag(self, tag):
        while self._stack:
            t, captured, _ = self._stack.pop()
            if captured:
                text = " ".join(" ".join(self._texts[captured]).split())
                if text:
                    self.found[captured] = text
            if t == tag:
                break

    def handle_data(self, data):
        if any(hidden for _, _, hidden in self._stack):
            return
        for _, captured, _ in self._stack:
            if captured:
                self._texts[captured].append(data)


def paragraphs(html_file: Path) -> dict[str, str]:
    parser = _Paragraphs()
    parser.feed(html_file.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.found


@dataclass
class HelpPair:
    module: str
    path: str
    id: str
    src: str
    tgt: str


def fetch_help(lang: str) -> tuple[Path, dict]:
    code, dirname = package_for(lang)
    name = f"libreoffice-help-{code}"
    deb = apt_package(name, VERSION, SHA256.get(code))
    root = unpack_deb(deb) / "usr/share/libreoffice/help" / dirname / "text"
    if not root.is_dir():
        raise FileNotFoundError(f"{deb.name} has no help text at {root}; is {lang!r} a LibreOffice help language?")
    return root, {"registry": "debian", "package": name, "version": VERSION, "license": LICENSE,
                  "sha256": sha256_file(deb)}


def aligned_pairs(src_lang: str, tgt_lang: str) -> tuple[list[HelpPair], list[dict]]:
    """Every (path, id) present in both languages with differing text, deduplicated on (src, tgt)."""
    src_root, src_info = fetch_help(src_lang)
    tgt_root, tgt_info = fetch_help(tgt_lang)
    pairs, seen = [], set()
    for src_file in sorted(src_root.rglob("*.html")):
        rel = src_file.relative_to(src_root)
        tgt_file = tgt_root / rel
        if not tgt_file.exists():
            continue
        s, t = paragraphs(src_file), paragraphs(tgt_file)
        for pid in s.keys() & t.keys():
            a, b = s[pid], t[pid]
            if a == b or (a, b) in seen:
                continue
            seen.add((a, b))
            pairs.append(HelpPair(module=rel.parts[0], path=str(rel), id=pid, src=a, tgt=b))
    pairs.sort(key=lambda p: (p.path, p.id))
    return pairs, [src_info, tgt_info]
