"""Atomic, never-silently-overwriting file writes shared by every stage."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputExistsError, RunDataError

_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only be read by setting it)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` atomically.

    Raises :class:`OutputExistsError` before any work if ``path`` exists and ``overwrite`` is false.
    On an exception inside the block the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{target} already exists; pass overwrite=True to replace it, or choose another path."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp creates 0600; give the result the permissions of a normally created file
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8); see :func:`atomic_path`."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_netcdf(obj, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an xarray Dataset or DataTree to netCDF4 atomically; see :func:`atomic_path`."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        obj.to_netcdf(tmp, engine="netcdf4")
    return Path(path)


def load_netcdf_tree(path: str | os.PathLike, *, hint: str = ""):
    """Read a netCDF4 DataTree written by :func:`save_netcdf` fully into memory (the file is closed after).

    Raises :class:`~phasebayes.errors.RunDataError` when there is no file at ``path`` (``hint`` says how
    to make one).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise RunDataError(f"no saved result at {path}" + (f"; {hint}" if hint else "") + ".")
    with xr.open_datatree(path, engine="netcdf4") as tree:
        return tree.load()


class SavedResult:
    """The one persistence path of results: ``save`` / ``load`` through ``to_datatree`` / ``from_datatree``.

    A result class defines ``to_datatree()`` (data, posterior and config in one DataTree) and the
    classmethod ``from_datatree(tree)``; ``MISSING_HINT`` completes the error for a missing file.
    """

    MISSING_HINT = ""

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the result to one netCDF4 file (atomic; refuses to overwrite unless ``overwrite``)."""
        return save_netcdf(self.to_datatree(), path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a result written by :meth:`save` (no refitting)."""
        return cls.from_datatree(load_netcdf_tree(path, hint=cls.MISSING_HINT))
