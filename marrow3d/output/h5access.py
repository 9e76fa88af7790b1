"""Opening marrow3d's HDF5 files so that readers can neither hang nor block a writer, and
giving up a file cleanly when it can no longer be written.

Readers cannot block a writer because no marrow3d writer asks HDF5 for a file lock on a
file others may have open (a run's final write reopens run.h5 with ``locking=False``; the
run directory's own writer lock, :mod:`marrow3d.output.runlock`, keeps other writers out),
whatever locks readers take. Readers (:func:`open_for_reading`) open a file in one of three
ways, chosen from the file's superblock and the run directory's writer lock:

``plain``
    A closed file (a finished run, a checkpoint): an ordinary read-only open. HDF5 compares
    the stored end of file with the real size, so a truncated file is an error at once.
``swmr``
    A file a live run is writing: a SWMR read. HDF5 retries a metadata read whose checksum
    fails (the writer may be half-way through a flush) with an exponential back-off; its
    default of 100 attempts sleeps for the better part of an hour on a damaged file. The
    attempts are capped at :data:`SWMR_READ_ATTEMPTS` (about 20 ms of retrying in all).
``recovered``
    A file whose writer is gone but left it flagged "open for write" (``kill -9``, a crash):
    HDF5 refuses ordinary opens of such a file until ``h5clear`` rewrites its superblock.
    The file is read through a view whose superblock has the flags cleared and the end of
    file raised to the real size (what ``h5clear -s --increment=0`` would write), and is
    never modified. A SWMR writer extends the file past the stored end of file, so the
    view's end is the real size; a file shorter than its stored end of file is truncated.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import io
import os
import re
import time
import weakref
from pathlib import Path

import h5py

from ..errors import CheckpointError
from .runlock import writer_alive

__all__ = [
    "WRITE_OPTIONS",
    "open_for_reading",
    "read_superblock",
    "Superblock",
    "abandon",
    "write_failure",
    "is_no_space",
    "SWMR_READ_ATTEMPTS",
    "lookup3",
]

#: h5py.File options of every marrow3d writer: no raw-data chunk cache, so a failed write
#: (disk full) raises where the data is written. With a cache, HDF5 writes a chunk when its
#: dataset object is garbage-collected, where h5py can only print the failure, and a later
#: call (starting SWMR mode) then crashes the process.
WRITE_OPTIONS = {"rdcc_nbytes": 0}
#: Metadata read attempts of a SWMR reader (HDF5's back-off starts at a nanosecond and doubles:
#: 24 attempts retry for about 20 ms, 100 attempts for most of an hour).
SWMR_READ_ATTEMPTS = 24
#: How long a reader waits for a live writer that holds the file outside SWMR (its final write).
_BUSY_WAIT_S = 10.0
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Superblock consistency flags (superblock versions 2 and 3).
_FLAG_WRITE = 0x1
_FLAG_SWMR_WRITE = 0x4
#: errno values that mean "no room to write".
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


# ---------------------------------------------------------------------------------- superblock
class Superblock:
    """The fields of a version 2/3 superblock (at offset 0) that decide how to open a file."""

    def __init__(self, raw: bytes) -> None:
        self.version = raw[8]
        self.offset_size = raw[9]
        o = self.offset_size
        self.flags = raw[11]
        self.eof = int.from_bytes(raw[12 + 2 * o:12 + 3 * o], "little")
        self.checksum_at = 12 + 4 * o
        self.raw = raw[:self.checksum_at + 4]

    @property
    def open_for_write(self) -> bool:
        return bool(self.flags & _FLAG_WRITE)

    @property
    def swmr_writing(self) -> bool:
        return bool(self.flags & _FLAG_SWMR_WRITE)

    def cleared(self, size: int) -> bytes:
        """This superblock with the flags cleared and the end of file at ``size``, re-checksummed."""
        o = self.offset_size
        head = bytearray(self.raw)
        head[11] = 0
        head[12 + 2 * o:12 + 3 * o] = max(self.eof, size).to_bytes(o, "little")
        head[self.checksum_at:self.checksum_at + 4] = lookup3(bytes(head[:self.checksum_at])).to_bytes(4, "little")
        return bytes(head)


def read_superblock(path: str | Path) -> Superblock | None:
    """The superblock of ``path`` when it is version 2 or 3 at offset 0 (None otherwise)."""
    with open(path, "rb") as fh:
        raw = fh.read(64)
    if len(raw) < 12 or raw[:8] != _SIGNATURE or raw[8] not in (2, 3) or raw[9] not in (2, 4, 8):
        return None
    sb = Superblock(raw)
    if len(raw) < sb.checksum_at + 4:
        return None
    return sb


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum of HDF5 metadata (superblock v2/3)."""
    m = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & m

    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & m
    i = 0
    while n - i > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & m
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & m
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & m
        a = (a - c) & m; a ^= rot(c, 4); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= rot(a, 6); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= rot(b, 8); b = (b + a) & m  # noqa: E702
        a = (a - c) & m; a ^= rot(c, 16); c = (c + b) & m  # noqa: E702
        b = (b - a) & m; b ^= rot(a, 19); a = (a + c) & m  # noqa: E702
        c = (c - b) & m; c ^= rot(b, 4); b = (b + a) & m  # noqa: E702
        i += 12
    tail = data[i:]
    if not tail:
        return c
    tail = tail + bytes(12 - len(tail))
    a = (a + int.from_bytes(tail[0:4], "little")) & m
    b = (b + int.from_bytes(tail[4:8], "little")) & m
    c = (c + int.from_bytes(tail[8:12], "little")) & m
    c ^= b; c = (c - rot(b, 14)) & m  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & m  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & m  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & m  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & m  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & m  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & m  # noqa: E702
    return c


class _ClearedView(io.RawIOBase):
    """Read-only file object over ``path`` whose superblock bytes are replaced by ``head``."""

    def __init__(self, path: str | Path, head: bytes) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size
        self._head = head
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        if self._pos < len(self._head) and data:
            k = min(len(self._head) - self._pos, len(data))
            data = self._head[self._pos:self._pos + k] + data[k:]
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


#: Files read through a :class:`_ClearedView`: closed before the interpreter tears down the
#: Python file objects HDF5 reads through (closing them the other way round crashes).
_VIEW_FILES: "weakref.WeakSet[h5py.File]" = weakref.WeakSet()


@atexit.register
def _close_views() -> None:
    for f in list(_VIEW_FILES):
        try:
            f.close()
        except Exception:  # noqa: BLE001 - interpreter exit: nothing left to report to
            pass


# ---------------------------------------------------------------------------------- SWMR reads
def _hdf5_library():
    """The HDF5 shared library h5py runs on (for the one setting h5py does not expose)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            paths = {line.split()[-1] for line in fh if "libhdf5" in line and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        name = os.path.basename(path)
        if name.startswith("libhdf5") and not name.startswith("libhdf5_hl") and ".so" in name:
            try:
                lib = ctypes.CDLL(path)
                fn = lib.H5Pset_metadata_read_attempts
            except (OSError, AttributeError):
                continue
            fn.argtypes = [ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int
            return lib
    return None


_LIB: list = []


def _cap_read_attempts(fapl) -> bool:
    if not _LIB:
        _LIB.append(_hdf5_library())
    lib = _LIB[0]
    return lib is not None and lib.H5Pset_metadata_read_attempts(fapl.id, SWMR_READ_ATTEMPTS) >= 0


def _open_swmr(path: str) -> h5py.File:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
    _cap_read_attempts(fapl)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


# ---------------------------------------------------------------------------------- readers
def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def open_for_reading(path: str | Path, *, lock_held: bool = False) -> tuple[h5py.File, str]:
    """Open a marrow3d HDF5 file read-only without taking locks; return ``(file, how)``.

    ``how`` is ``"plain"``, ``"swmr"`` or ``"recovered"`` (see the module docstring).
    ``lock_held``: the caller holds the run directory's writer lock (a resume reading the
    old run.h5), so a file flagged open for write was left by a writer that is gone.

    Raises
    ------
    CheckpointError
        Missing, foreign, truncated or damaged file, or a file a live run holds outside SWMR
        for longer than a few seconds; one line naming the file.
    """
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise CheckpointError(f"{name!r} does not exist")
    if not p.is_file():
        raise CheckpointError(f"{name!r} is not a regular file")
    try:
        is_h5 = h5py.is_hdf5(name)
    except OSError as exc:
        raise CheckpointError(f"{name!r} cannot be read: {_first_line(exc)}") from None
    if not is_h5:
        raise CheckpointError(f"{name!r} is not an HDF5 file (truncated or foreign)")
    deadline = time.monotonic() + _BUSY_WAIT_S
    while True:
        try:
            return h5py.File(name, "r"), "plain"
        except OSError as exc:
            flagged = "already open for write" in str(exc) or "consistency flags" in str(exc)
            if not flagged:
                raise CheckpointError(f"{name!r} cannot be read (truncated or damaged): {_first_line(exc)}") from None
        try:
            sb = read_superblock(p)
        except OSError as exc:
            raise CheckpointError(f"{name!r} cannot be read: {_first_line(exc)}") from None
        if sb is None:
            raise CheckpointError(f"{name!r} is flagged open for write and its superblock is not one marrow3d writes")
        if not lock_held and writer_alive(p.parent):
            if sb.swmr_writing:
                try:
                    return _open_swmr(name), "swmr"
                except OSError as exc:
                    raise CheckpointError(f"{name!r} cannot be read while its run writes it: "
                                          f"{_first_line(exc)}") from None
            # a live run writing outside SWMR (its last write): wait a moment for it
            if time.monotonic() > deadline:
                raise CheckpointError(
                    f"{name!r} is held by its run for a final write; try again when the run has ended"
                )
            time.sleep(0.1)
            continue
        return _open_recovered(p, sb), "recovered"


def _open_recovered(path: Path, sb: Superblock) -> h5py.File:
    view = _ClearedView(path, sb.cleared(path.stat().st_size))
    try:
        f = h5py.File(view, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        view.close()
        raise CheckpointError(
            f"{str(path)!r} was left open by a writer that stopped (killed?) and cannot be read: {_first_line(exc)}"
        ) from None
    _VIEW_FILES.add(f)
    f._marrow3d_view = view  # keep the file object alive as long as HDF5 reads through it
    return f


# ---------------------------------------------------------------------------------- writers
_ERRNO_IN_TEXT = re.compile(r"errno = (\d+)")


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return code
    m = _ERRNO_IN_TEXT.search(str(exc))
    return int(m.group(1)) if m else None


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or h5py's RuntimeError wrapping one) means no room to write."""
    return _errno_of(exc) in _NO_SPACE


def write_failure(exc: BaseException) -> str:
    """A short reason for a failed write: ``no space left on device (errno 28)`` and the like."""
    code = _errno_of(exc)
    if code == errno.EFBIG:
        return "the file size limit was reached (errno 27, File too large: see `ulimit -f`)"
    if code is not None:
        return f"{os.strerror(code).lower()} (errno {code})"
    return _first_line(exc)[:200]


def abandon(h5: h5py.File | None) -> None:
    """Close ``h5`` after a write into it failed, without writing anything more.

    HDF5 keeps the data it could not write in its cache and retries at every close, at
    interpreter exit too (where a file it can never flush ends in a crash). The file's
    descriptor is pointed at ``/dev/null`` first, so those last writes succeed there and
    the file keeps what was already on disk: for a SWMR file, a consistent earlier state.
    """
    if h5 is None:
        return
    try:
        if not h5.id.valid:
            return
    except Exception:  # noqa: BLE001
        return
    try:
        fd = h5.id.get_vfd_handle()
        sink = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(sink, fd)
        finally:
            os.close(sink)
    except Exception:  # noqa: BLE001 - not a sec2 file: closing is the best left to try
        pass
    try:
        h5.close()
    except Exception:  # noqa: BLE001 - the writes went nowhere on purpose
        pass
