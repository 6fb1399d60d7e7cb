"""Fetch pinned packages from the registries this machine reaches (Debian via apt, PyPI, npm),
verify their sha256, and unpack them into a cache. Downloads land under a temporary name and are
renamed only once verified, so a half-downloaded package is never taken for a whole one."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from janus.export import sha256_file  # noqa: F401  (the sources import it from here)
from janus.files import new_directory, new_file


class FetchError(RuntimeError):
    """A source could not be fetched; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("JANUS_CACHE", Path.home() / ".cache" / "janus-seq"))


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"{cmd[0]} is not installed; it is needed to fetch {what}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise FetchError(f"fetching {what} failed ({' '.join(cmd[:2])}): {last}")


def _apt_options(root: Path) -> list[str]:
    return [f"-o=Dir::State::Lists={root / 'lists'}", f"-o=Dir::Cache={root / 'cache'}",
            "-o=Debug::NoLocking=1"]


def apt_update(root: Path, languages: str | None = None) -> Path:
    """`apt-get update` into a private lists dir (no root install, the system's lists untouched)."""
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    stamp = root / f"lists/.updated-{languages or 'none'}"
    if not stamp.exists():
        opts = _apt_options(root) + ([f"-o=Acquire::Languages={languages}"] if languages else [])
        _run(["apt-get", *opts, "update", "-qq"], "the Debian package index")
        stamp.touch()
    return root / "lists"


def apt_package(name: str, version: str, sha256: str | None) -> Path:
    """Download NAME=VERSION as a .deb into the cache and return its path (verified)."""
    root = cache_dir() / "apt"
    final = root / "debs" / f"{name}_{version.replace(':', '%3a')}.deb"
    if final.exists() and (sha256 is None or sha256_file(final) == sha256):
        return final
    apt_update(root)
    return _download_verified(final, f"Debian package {name}={version}",
                              ["apt-get", *_apt_options(root), "download", f"{name}={version}"], "*.deb", sha256)


def unpack_deb(deb: Path) -> Path:
    """dpkg -x into a cache dir named after the .deb; an interrupted unpack is redone."""
    out = deb.with_suffix(".x")
    done = out / ".complete"
    if done.exists():
        return out
    with new_directory(out, replace=True) as tmp:
        _run(["dpkg", "-x", str(deb), str(tmp)], f"unpacking {deb.name}")
        (tmp / ".complete").touch()
    return out


def _download_verified(dest: Path, what: str, cmd: list[str], pattern: str, sha256: str | None) -> Path:
    """Run a download command in a temp dir; verify and move its single output to `dest`."""
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        _run(cmd, what, cwd=Path(tmp))
        got = list(Path(tmp).glob(pattern))
        if len(got) != 1:
            raise FetchError(f"downloading {what} produced {len(got)} files matching {pattern}, expected 1")
        digest = sha256_file(got[0])
        if sha256 is not None and digest != sha256:
            raise FetchError(f"{what}: sha256 {digest} does not match the pinned {sha256}; "
                             "update the pin in the recipe after checking the package")
        os.replace(got[0], dest)
    return dest


def pip_package(name: str, version: str, sha256: str) -> Path:
    import sys

    dest = cache_dir() / "pypi" / f"{name}-{version}.whl"
    return _download_verified(dest, f"PyPI package {name}=={version}",
                              [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                               "-d", ".", f"{name}=={version}"], "*.whl", sha256)


def npm_package(name: str, version: str, sha256: str) -> Path:
    dest = cache_dir() / "npm" / f"{name.strip('@').replace('/', '-')}-{version}.tgz"
    return _download_verified(dest, f"npm package {name}@{version}", ["npm", "pack", "--silent", f"{name}@{version}"],
                              "*.tgz", sha256)


def _cat_file(src: Path, target: Path) -> Path:
    if not target.exists():
        with new_file(target) as tmp, open(tmp, "wb") as f:
            if subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(src)], stdout=f).returncode != 0:
                raise FetchError(f"could not decompress {src.name} with apt-helper")
    return target


def debian_indexes(languages: list[str]) -> tuple[dict[str, Path], Path]:
    """Debian bookworm main's package-description translations for each language and its Packages index
    (binary -> source package), decompressed. They follow the release, so recipes record their sha256
    rather than pin it. One private lists dir per language set (an update drops lists it did not ask for)."""
    langs = sorted(set(languages) | {"en"})
    root = cache_dir() / "apt-i18n" / "-".join(langs)
    lists = apt_update(root, languages=",".join(langs))
    translations = {}
    for lang in langs:
        found = sorted(lists.glob(f"*_dists_bookworm_main_i18n_Translation-{lang}.*"))
        if not found:
            raise FetchError(f"no Debian Translation-{lang} index was downloaded; is {lang!r} a DDTP language?")
        translations[lang] = _cat_file(found[0], root / f"Translation-{lang}")
    found = sorted(lists.glob("*_dists_bookworm_main_binary-*_Packages.*"))
    if not found:
        raise FetchError("the Debian Packages index was not downloaded")
    return translations, _cat_file(found[0], root / "Packages")
