"""One run per output folder: an advisory lock on ``OUT/.vesselseg.lock``.

The lock is an ``flock`` held for the whole run, so the operating system releases it when
the process ends however it ends (no stale lock to delete by hand after a crash or a kill).
The file records the holder's process id and start time for the refusal message. The file
itself is left in place: deleting it while another process waits on it would let two runs in.

Shards of one run (``--shard I/N``) share the output folder: each holds the folder's lock
*shared* (so a whole run or a ``merge``, which hold it exclusively, cannot start beside them)
and its own part's lock exclusively (so the same shard cannot run twice at once).
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class LockedError(RuntimeError):
    """Another run holds the output folder; the message says which and what to do."""


class OutputLock:
    """``with OutputLock(path):`` holds the lock or raises ``LockedError`` at once.

    ``shared``: hold it beside other shared holders (the shards of one run); the file then
    says that shards hold it.
    """

    def __init__(self, path: Path, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another vesselseg run{holder} is writing into {self.path.parent}; wait for it to "
                "finish (rerunning then resumes where it stopped) or choose another --out"
            ) from None
        except OSError:
            os.close(fd)
            raise
        who = "shards (--shard)" if self.shared else f"pid {os.getpid()}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{who} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f" ({text})" if text else ""
