"""Checksums over an HDF5 file: every dataset and every attribute of every group.

A checkpoint carries, in ``/meta@integrity``, the SHA-256 of each object it holds, and in
``/meta@integrity_sha256`` the SHA-256 of that record. The record is built by walking the
file after the payload is written, so datasets and attributes added to the checkpoint later
(new state, provenance) are covered without anyone listing them. Verification walks the file
again and names every object that is missing, unlisted or changed.

Each dataset enters as its dtype, shape and raw bytes (C order); each attribute as its
value: UTF-8 text for strings, dtype, shape and raw bytes for anything else. This guards
against damage (a flipped bit, a truncated or edited dataset), not against someone who
rewrites the record too.

``run.h5`` carries a record with a scope: its static part (``/meta`` and ``/anatomy``),
rewritten when the final state is added; the growing datasets are protected by their
Fletcher-32 checksums instead. (Strings live in HDF5's global heap, which has no checksum of
its own: without the record a damaged ``config_toml`` would read back as another config.)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import h5py
import numpy as np

__all__ = ["RECORD_ATTR", "RECORD_DIGEST_ATTR", "tree_digests", "write_record", "verify_record",
           "IntegrityProblem"]

#: ``/meta`` attribute holding the JSON record ``{"sha256": {object: hex digest}}``.
RECORD_ATTR = "integrity"
#: ``/meta`` attribute holding the SHA-256 of the record's text.
RECORD_DIGEST_ATTR = "integrity_sha256"
_EXCLUDED = {f"/meta@{RECORD_ATTR}", f"/meta@{RECORD_DIGEST_ATTR}"}


class IntegrityProblem(Exception):
    """The file does not match its integrity record (the message lists what differs)."""


def _value_digest(value: Any) -> str:
    h = hashlib.sha256()
    if isinstance(value, bytes):
        h.update(b"bytes|" + value)
    elif isinstance(value, str):
        h.update(b"str|" + value.encode("utf-8"))
    else:
        arr = np.asarray(value)
        if arr.dtype.kind == "O":  # arrays of strings
            h.update(b"obj|" + repr(arr.shape).encode() + b"|")
            for item in arr.ravel():
                text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                h.update(text.encode("utf-8") + b"\x00")
        else:
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def tree_digests(h5: h5py.File, scope: list[str] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> dict[str, str]:
    """SHA-256 of every dataset (``/path``) and attribute (``/path@name``) in ``h5``.

    ``scope``: only these groups (e.g. ``["/meta", "/anatomy"]``), their attributes and
    everything under them; the whole file (root attributes included) when None.
    ``arrays``: datasets already in memory (path -> the array as stored or as read), used
    instead of reading them again; every other dataset is read.

    Reads every dataset in full.

    Raises
    ------
    IntegrityProblem
        A dataset cannot be read (a chunk fails its Fletcher-32 checksum or cannot be
        decompressed).
    """
    out: dict[str, str] = {}

    def attrs_of(name: str, obj) -> None:
        for key in obj.attrs:
            path = f"{name}@{key}"
            if path not in _EXCLUDED:
                out[path] = _value_digest(obj.attrs[key])

    if scope is None:
        attrs_of("/", h5)
    else:
        for root in scope:
            if root.strip("/") in h5:
                attrs_of("/" + root.strip("/"), h5[root])

    def visit(name: str, obj) -> None:
        path = "/" + name
        if scope is not None and not any(path == r or path.startswith(r.rstrip("/") + "/") for r in scope):
            return
        if scope is None or path not in scope:
            attrs_of(path, obj)
        if isinstance(obj, h5py.Dataset):
            if arrays is not None and path in arrays:
                out[path] = _value_digest(arrays[path])
                return
            try:
                data = obj[()]
            except (OSError, RuntimeError, ValueError) as exc:
                raise IntegrityProblem(f"dataset {path} cannot be read ({' '.join(str(exc).split())})") from None
            out[path] = _value_digest(data)

    h5.visititems(visit)
    return out


def write_record(h5: h5py.File, scope: list[str] | None = None,
                 arrays: dict[str, np.ndarray] | None = None) -> None:
    """Checksum everything in the open, writable ``h5`` (or the groups of ``scope``) and store
    the record in ``/meta``. ``arrays``: datasets just written (see :func:`tree_digests`)."""
    record: dict[str, Any] = {"sha256": tree_digests(h5, scope, arrays)}
    if scope is not None:
        record["scope"] = list(scope)
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    meta = h5.require_group("meta")
    meta.attrs[RECORD_ATTR] = text
    meta.attrs[RECORD_DIGEST_ATTR] = hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_record(h5: h5py.File, arrays: dict[str, np.ndarray] | None = None) -> bool:
    """Check ``h5`` against its record; False when it has none (written before records).

    ``arrays``: datasets already read (see :func:`tree_digests`), not read again.

    Raises
    ------
    IntegrityProblem
        A damaged record, or objects missing from the file, not in the record, or changed.
    """
    meta = h5.get("meta")
    if meta is None or RECORD_ATTR not in meta.attrs:
        return False
    text = meta.attrs[RECORD_ATTR]
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    stored = meta.attrs.get(RECORD_DIGEST_ATTR)
    if isinstance(stored, bytes):
        stored = stored.decode("ascii", "replace")
    if not isinstance(text, str) or stored != hashlib.sha256(text.encode("utf-8")).hexdigest():
        raise IntegrityProblem("its integrity record (/meta@integrity) is damaged")
    try:
        data = json.loads(text)
        record, scope = data["sha256"], data.get("scope")
        if not isinstance(record, dict) or not (scope is None or all(isinstance(g, str) for g in scope)):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise IntegrityProblem("its integrity record (/meta@integrity) is not a checksum table") from None
    actual = tree_digests(h5, scope, arrays)
    missing = sorted(set(record) - set(actual))
    extra = sorted(set(actual) - set(record))
    changed = sorted(k for k in set(record) & set(actual) if record[k] != actual[k])
    if not (missing or extra or changed):
        return True
    parts = []
    for label, items in (("changed", changed), ("missing", missing), ("not in the record", extra)):
        if items:
            shown = ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")
            parts.append(f"{label}: {shown}")
    raise IntegrityProblem("it does not match its checksums (" + "; ".join(parts) + ")")
