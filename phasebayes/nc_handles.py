"""One shared read handle per netCDF4 file version in this process.

Why not a handle per reader: HDF5 shares the objects of a file opened several times in one process
and ties them to the handle that opened them first. When that handle is closed while another stays
open, the next open of the same file follows a dangling pointer (a segmentation fault in
``H5Dget_create_plist`` while converting the variable-length fill value of a text variable; seen
when a run file's lazy texts outlived the xarray handle and the file was opened again). So every
reader of run files here goes through :func:`acquire`, which hands out one ``netCDF4.Dataset`` per
file version (path, device, inode, modification time) and closes it when its last user releases it.
Reads through the handle hold :data:`LOCK` (HDF5 is not thread-safe).
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path

from xarray.backends.locks import SerializableLock

LOCK = SerializableLock()  # every read through a shared handle; xarray's data store uses it too
_REGISTRY_LOCK = threading.Lock()
_HANDLES: dict[tuple, list] = {}  # version key -> [netCDF4.Dataset, number of users]


def version_key(path: str | os.PathLike) -> tuple:
    """``(resolved path, device, inode, mtime ns, size)``: a replaced file is a new version."""
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def acquire(path: str | os.PathLike):
    """``(key, netCDF4.Dataset)`` open for reading, shared with every other user of this file version.

    Call :func:`release` with ``key`` once per ``acquire``.
    """
    import netCDF4

    key = version_key(path)
    with _REGISTRY_LOCK, LOCK:
        entry = _HANDLES.get(key)
        if entry is None or not entry[0].isopen():
            entry = _HANDLES[key] = [netCDF4.Dataset(key[0], "r"), 0]
        entry[1] += 1
        return key, entry[0]


def release(key: tuple) -> None:
    """Give back one use of the handle of ``key``; the last release closes it."""
    with _REGISTRY_LOCK, LOCK:
        entry = _HANDLES.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _HANDLES[key]
            if entry[0].isopen():
                entry[0].close()


def open_users(path: str | os.PathLike) -> int:
    """Number of users of the current version of ``path``'s shared handle (0 when none is open)."""
    try:
        key = version_key(path)
    except FileNotFoundError:
        return 0
    with _REGISTRY_LOCK:
        entry = _HANDLES.get(key)
        return entry[1] if entry else 0


class Use:
    """One use of the shared handle of ``path`` (``.nc``), released by :meth:`close` or when garbage-collected."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.key, self.nc = acquire(path)
        self._release = weakref.finalize(self, release, self.key)

    def close(self) -> None:
        self._release()
