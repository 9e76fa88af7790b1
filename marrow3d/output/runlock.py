"""One writer per run directory: an advisory lock held for a run's whole life.

``marrow3d run``, ``resume`` and ``branch`` take an exclusive ``flock`` on ``DIR/.marrow3d.lock``
before they write anything into ``DIR`` and hold it until the process ends. A second writer
gets one line naming the holder; readers never take the lock (they only test it, for an
instant, to learn whether a writer is alive), so they can never block a run.

The lock belongs to the open file, not to the file's existence: the kernel drops it when the
holder exits for any reason (``kill -9`` included), so a dead writer never leaves a stale
lock behind. The file itself stays (removing it would let two writers lock two different
files); it records the last holder (pid, host, command, start time) for the error message.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from ..errors import OutputError

__all__ = ["LOCK_NAME", "RunLock", "writer_alive"]

#: Name of the lock file inside a run directory.
LOCK_NAME = ".marrow3d.lock"
#: How long an acquisition retries: a reader's test holds a shared lock for microseconds.
_ACQUIRE_S = 2.0

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, one writer is on the user
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """The exclusive writer lock of one run directory (a context manager).

    Parameters
    ----------
    directory : Path
        The run directory (must exist).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self, command: str | None = None) -> "RunLock":
        """Take the lock or raise :class:`OutputError` naming the process that holds it."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(
                f"cannot write into the run directory {str(self.directory)!r}: {exc.strerror or exc}"
            ) from None
        if fcntl is not None:
            deadline = time.monotonic() + _ACQUIRE_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        os.close(fd)
                        raise OutputError(f"cannot lock {str(self.path)!r}: {exc.strerror or exc}") from None
                    if time.monotonic() > deadline:
                        holder = _describe_holder(fd)
                        os.close(fd)
                        raise OutputError(
                            f"{str(self.directory)!r} is being written by another marrow3d process "
                            f"({holder}); wait for it to end, or write to another directory"
                        ) from None
                    time.sleep(0.05)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or " ".join(sys.argv),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError:
            pass  # the record is for messages only; the flock is what excludes
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (idempotent); the process ending drops it too."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        return f"pid {int(info['pid'])} on {info['host']}, started {info['started']}: {str(info['command'])[:120]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def writer_alive(directory: str | Path) -> bool:
    """Whether a marrow3d process holds the writer lock of ``directory`` right now.

    Tests the lock with a shared, non-blocking request that is dropped at once, so it never
    waits and never keeps a writer out (an acquiring writer retries for a moment).
    False when the directory has no lock file.
    """
    path = Path(directory) / LOCK_NAME
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
