"""One live run per run directory.

Rank 0 of a run holds an exclusive `flock` on RUN_DIR/run.lock for as long as it trains; the kernel
drops it when that process exits, however it dies. A second `janus pretrain`/`finetune` on the same
directory therefore cannot write checkpoints and metrics alongside the first. This matters after
a job is killed too. Killing the driver (kill -9, a closed terminal) leaves Ray's worker processes
alive for a second or two: they sit in their own process groups and only notice that their raylet
is gone at its next liveness check. A restart waits for them, then resumes from what they finished.

On a shared file system the lock needs flock support: NFS has it; Lustre needs the `flock` mount
option. Where the file system refuses locks, the run goes on with a warning and without this guard.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_FILE = "run.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


class RunDirInUse(RuntimeError):
    """Another live process holds the run directory."""


def _holder(path: Path) -> str:
    try:
        who = json.loads(path.read_text())
        return f"pid {who['pid']} on {who['host']} (since {who['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in _UNSUPPORTED:
            return None
        raise


def hold(run_dir: str | os.PathLike, wait_s: float) -> int | None:
    """Take the run directory's lock, waiting up to `wait_s` for a holder to exit. Returns the open
    descriptor: the lock lasts until it is closed or this process exits. Raises RunDirInUse."""
    path = Path(run_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, told = time.monotonic() + wait_s, False
    while True:
        got = _try_lock(fd)
        if got is None:
            os.close(fd)
            print(f"warning: {path.parent} is on a file system without flock: nothing stops a second run from "
                  f"writing this run directory at the same time", flush=True)
            return None
        if got:
            break
        if time.monotonic() >= deadline:
            os.close(fd)
            raise RunDirInUse(f"{path.parent} is in use by {_holder(path)}: another run is writing it. Stop that "
                              f"run (or wait for it), or choose another run_dir")
        if not told:
            print(f"waiting up to {wait_s:.0f}s for {_holder(path)} to release {path.parent}", flush=True)
            told = True
        time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    return fd


def wait_until_free(run_dir: str | os.PathLike, wait_s: float) -> None:
    """The driver's check before it starts any worker: the same wait and error as `hold`, but the lock
    is let go at once (rank 0 takes it for the run)."""
    fd = hold(run_dir, wait_s)
    if fd is not None:
        os.close(fd)
