"""Writing files so that nothing is ever half-written or lost, and saying in one line what went wrong.

Every file or directory the project writes appears whole or not at all: it is written under a temporary
name beside its final path (unique, so two writers never share one) and renamed; on any failure the
temporary is removed. A fault of the file system becomes a `FileFault` whose message is one line naming
the path and the cause.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
}


class FileFault(RuntimeError):
    """A file-system fault, as one line: `PATH: cause`."""


def describe(err: BaseException, path: str | os.PathLike | None = None) -> str:
    """`PATH: cause` for an OSError (or torch's serializer error, which hides ENOSPC behind a C++ message)."""
    where = getattr(err, "filename", None) or path or "?"
    code = getattr(err, "errno", None)
    if code in CAUSES:
        return f"{where}: {CAUSES[code]}"
    text = str(err)
    if "unexpected pos" in text or "PytorchStreamWriter failed" in text or "file write failed" in text:
        free = _free_bytes(where)
        cause = "no space left on the device" if free is not None and free < (64 << 20) else "a write failed"
        return f"{where}: {cause} (the serializer stopped mid-file; {free or 0:,} bytes free)"
    cause = getattr(err, "strerror", None) or (text.splitlines()[0] if text else type(err).__name__)
    return f"{where}: {cause}"


def _free_bytes(path) -> int | None:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


@contextmanager
def faults(path: str | os.PathLike, name_it: bool = False) -> Iterator[None]:
    """Turns an OSError inside the block into a one-line FileFault naming the file it hit, or with
    `name_it` always `path` (when the file hit was a temporary that no longer exists)."""
    try:
        yield
    except FileFault:
        raise
    except OSError as err:
        if name_it:
            err.filename = None
        raise FileFault(describe(err, path)) from None


def _temp_beside(path: Path, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` whole or not at all (temp file beside it, fsync, rename)."""
    path = Path(path)
    with faults(path):
        tmp = _temp_beside(path, directory=False)
        try:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
    return path


@contextmanager
def new_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path` for a writer that wants a file name (a tar writer, a
    serializer); renamed to `path` when the block ends, removed if it fails."""
    path = Path(path)
    with faults(path):
        tmp = _temp_beside(path, directory=False)
        try:
            yield tmp
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise


@contextmanager
def new_directory(path: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yields a temporary directory beside `path`; it becomes `path` when the block ends, and is removed
    if the block fails. `path` must not exist unless `replace`: then the old directory is moved aside
    first and removed only once the new one is in place (a crash in between leaves it, renamed, beside)."""
    path = Path(path)
    with faults(path):
        if path.exists() and not replace:
            raise FileFault(f"{path}: already exists")
        tmp = _temp_beside(path, directory=True)
        try:
            yield tmp
            os.chmod(tmp, 0o755)
            old = None
            if path.exists():
                old = _temp_beside(path, directory=True)
                os.rmdir(old)
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; bytes that are not UTF-8 are refused naming the file and the line."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path} line {line}: bytes that are not UTF-8 ({data[err.start:err.start + 4]!r}); "
                         f"convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
