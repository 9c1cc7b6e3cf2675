"""Run-dataset files: :func:`save_run` (atomic, validated), :func:`open_run` (lazy texts), :func:`migrate_run`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import RunDataError
from .run_contract import STATUS, validate
from .runstore import netcdf_attrs as _netcdf_attrs
from .runstore import read_run, write_run
from .storage import atomic_path

__all__ = ["save_run", "open_run", "migrate_run"]


def _encodable(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = _netcdf_attrs(ds.attrs)
    for name in list(ds.variables):
        ds[name].attrs = _netcdf_attrs(ds[name].attrs)
        if ds[name].dtype == object:
            ds[name].encoding.pop("dtype", None)
    if "score_status" in ds:
        ds["score_status"].attrs.update(
            {"flag_values": np.array(list(STATUS.values()), dtype=np.int16), "flag_meanings": " ".join(STATUS)}
        )
    return ds


def save_run(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = False, require_scores: bool = True) -> Path:
    """Validate and write a run dataset to one netCDF4 file, atomically.

    Numbers go to the root group (readable by plain ``xarray.open_dataset``), per-answer texts to the
    ``/texts`` group (see :mod:`phasebayes.runstore` and ``docs/storage.md``); texts and large arrays
    are streamed, so lazy texts (from :func:`open_run` or generation shards) are never all in memory.
    Refuses to replace an existing file unless ``overwrite=True``
    (:class:`~phasebayes.errors.OutputExistsError`); an interrupted write leaves the old file intact.
    Returns the path written.
    """
    validate(ds, require_scores=require_scores)
    with atomic_path(path, overwrite=overwrite) as tmp:
        write_run(_encodable(ds), tmp)
    return Path(path)


def open_run(path: str | os.PathLike, *, require_scores: bool = True) -> xr.Dataset:
    """Open a run dataset written by :func:`save_run` (any phasebayes version) and validate it.

    Scores, statuses, coordinates and the training log are read into memory; per-answer texts
    (``response``, ``score_reason``, ...) and large arrays (``logp``, ``token_ids``) stay on disk and
    are read only where indexed: ``ds["logp"].isel(step=..., ref_step=...)`` reads one window, and
    :func:`phasebayes.responses` / :func:`phasebayes.iter_responses` read texts in bounded blocks.
    """
    path = Path(path)
    if not path.exists():
        raise RunDataError(f"no run dataset at {path}.")
    try:
        ds = read_run(path)
    except OSError as err:
        raise RunDataError(f"{path} is not a readable netCDF4 run dataset ({err}); was it written by phasebayes.save_run?") from err
    for name in ("order_parameter", "prompt"):
        if name in ds.coords and ds[name].dtype.kind in "US":
            ds = ds.assign_coords({name: ds[name].values.astype(object)})
    for name in list(ds.variables):
        if ds[name].dtype.kind == "U" and ds[name].size <= 100_000:
            ds[name] = ds[name].astype(object)
    return validate(ds, require_scores=require_scores)


def migrate_run(source: str | os.PathLike, target: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Rewrite a run file of any earlier phasebayes version in the current layout (texts streamed).

    One line: ``pb.migrate_run("old.nc", "new.nc")`` (or ``phasebayes migrate old.nc new.nc``). The
    target must differ from the source; pass ``overwrite=True`` to replace an existing target.
    """
    if Path(source).resolve() == Path(target).resolve():
        raise RunDataError(f"migrate_run writes a new file; give a target other than the source {source}.")
    ds = open_run(source, require_scores=False)
    return save_run(ds, target, overwrite=overwrite, require_scores=False)
