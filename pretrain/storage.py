"""Where shards live: a local directory, an HTTP(S) server, or an object store read through a command.

A shard location is a base: `/data/corpus`, `https://host/corpus/`, `s3://bucket/corpus/`,
`gs://bucket/corpus/`; `index.json` and the shards it lists are files under it. HTTP(S) is read
directly; any other scheme through a command template with `{url}` (webdataset's `pipe:` idea), by
default `aws s3 cp {url} -` for s3:// and `gcloud storage cat {url}` for gs://. A read takes one whole
file, with a timeout on every connection and read, a bounded number of retries with exponential backoff,
and then a one-line `Unavailable` naming the URL and the last cause: it never hangs.
"""

from __future__ import annotations

import http.client
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_READERS = {"s3": "aws s3 cp {url} -", "gs": "gcloud storage cat {url}"}


@dataclass
class StorageConfig:
    reader: str = ""  # a command that writes {url} to stdout; default per scheme (DEFAULT_READERS)
    timeout_s: float = 30.0  # a connection, a read or a command that stalls this long fails the attempt
    retries: int = 3  # attempts after the first
    backoff_s: float = 1.0  # the wait before the first retry, doubled before each next one


class Unavailable(OSError):
    """A remote file that could not be read after every retry: one line, `URL: cause (N attempts)`."""


def is_remote(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def join(location: str, name: str) -> str:
    if is_remote(location):
        return str(location).rstrip("/") + "/" + name
    return str(Path(str(location).removeprefix("file://")) / name)


def read(url: str, cfg: StorageConfig | None = None) -> bytes:
    """The whole file at `url` (a local path or a remote URL)."""
    cfg = cfg or StorageConfig()
    if not is_remote(url):
        return Path(url.removeprefix("file://")).read_bytes()
    attempts = cfg.retries + 1
    for attempt in range(attempts):
        try:
            return _fetch(url, cfg)
        except _Final as err:
            raise Unavailable(f"{url}: {err}") from None
        except (OSError, http.client.HTTPException, subprocess.SubprocessError) as err:
            cause = _cause(err)
        if attempt + 1 < attempts:
            time.sleep(cfg.backoff_s * 2 ** attempt)
    raise Unavailable(f"{url}: {cause} ({attempts} attempts)")


class _Final(Exception):
    """An answer no retry changes (404, 403, ...)."""


def _fetch(url: str, cfg: StorageConfig) -> bytes:
    scheme = url.split("://", 1)[0]
    if scheme in ("http", "https") and not cfg.reader:
        try:
            with urllib.request.urlopen(url, timeout=cfg.timeout_s) as response:
                data = response.read()
                expected = response.headers.get("Content-Length")
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500 and err.code not in (408, 429):
                raise _Final(f"HTTP {err.code} {err.reason}") from None
            raise
        if expected is not None and len(data) != int(expected):  # the connection dropped mid-file
            raise http.client.IncompleteRead(data, int(expected) - len(data))
        return data
    template = cfg.reader or DEFAULT_READERS.get(scheme)
    if not template:
        raise _Final(f"no reader for {scheme}:// URLs: set shard_reader to a command with {{url}}, e.g. "
                     f"'curl -sf {{url}}'")
    command = [part.replace("{url}", url) for part in shlex.split(template)]
    done = subprocess.run(command, capture_output=True, timeout=cfg.timeout_s)
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise subprocess.CalledProcessError(done.returncode, command[0], stderr=last)
    return done.stdout


def _cause(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return _cause(err.reason) if isinstance(err.reason, BaseException) else str(err.reason)
    if isinstance(err, (socket.timeout, TimeoutError, subprocess.TimeoutExpired)):
        return "timed out (the server stalled)"
    if isinstance(err, http.client.IncompleteRead):
        return f"the connection dropped mid-file ({len(err.partial):,} bytes read, {err.expected:,} missing)"
    if isinstance(err, subprocess.CalledProcessError):
        return f"`{err.cmd}` exited {err.returncode}: {err.stderr}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the server up?)"
    return f"{type(err).__name__}: {err}"
