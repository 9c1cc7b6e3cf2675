"""On-disk layout of the run dataset: one netCDF4 file, numbers in the root group, texts in ``/texts``.

Layout (``phasebayes_run_format = 2`` in the root attributes; see ``docs/storage.md``)::

    run.nc
    ├── /                 every numeric variable and all coordinates (plain ``xarray.open_dataset``)
    │     logp, token_ids, embedding: chunked one checkpoint (and one ref_step) at a time, zlib level 1
    └── /texts            per-answer texts (``response``, ``stop_reason``, ``score_reason``) as
                          variable-length UTF-8 strings, chunked one checkpoint at a time;
                          ``<name>_missing`` (uint8, 1 = no text) when some texts are missing

:func:`write_run` streams the texts and the large numeric arrays block by block along ``step`` (or
``ref_step``), so a dataset whose texts are lazy (opened from a file, or backed by generation shards)
is written without holding all texts in memory. :func:`read_run` returns a dataset whose texts are
lazy :class:`TextArray` variables (an index reads only the cells it selects) and whose large numeric
arrays stay on disk until indexed. Files written before this layout (texts in the root group) open the
same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from . import nc_handles

__all__ = [
    "FORMAT_VERSION", "TEXT_GROUP", "TextArray", "BlockArray", "lazy_variable", "is_text_variable", "numeric_part",
    "write_run", "read_run", "step_blocks",
]

FORMAT_VERSION = 2
TEXT_GROUP = "texts"
LAZY_DIMS = ("ref_step", "token", "embedding_dim")
"""Numeric variables with one of these dims are kept on disk by :func:`read_run` until indexed."""
BLOCK_BYTES = 64 * 2**20
"""Target size of one block streamed by :func:`write_run` (numeric arrays)."""
BLOCK_TEXTS = 50_000
"""Target number of texts in one block streamed by :func:`write_run` / read by the text accessors."""


def netcdf_attrs(attrs: Mapping[str, object]) -> dict[str, object]:
    """Make attributes netCDF-safe: dicts/lists/bools/None become JSON strings."""
    out: dict[str, object] = {}
    for key, value in attrs.items():
        if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(value, bool):
            out[key] = value
        else:
            out[key] = json.dumps(value, default=str, sort_keys=True)
    return out


def is_text_variable(var: xr.Variable) -> bool:
    """True for a string variable with one value per answer (dims include ``step`` and ``sample``)."""
    return (var.dtype == object or var.dtype.kind in "US") and {"step", "sample"} <= set(var.dims)


def numeric_part(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without its per-answer texts and per-answer arrays (``logp``, ``token_ids``, ``embedding``).

    What a fitted model needs to store next to its posterior (scores, statuses, coordinates, training
    log); it costs memory in proportion to the scores.
    """
    drop = [n for n in ds.data_vars if is_text_variable(ds[n].variable) or set(ds[n].dims) & set(LAZY_DIMS)]
    return ds.drop_vars(drop)


def is_missing_text(value: object) -> bool:
    """True for None or a float NaN (how a missing text appears in memory)."""
    return value is None or (isinstance(value, float) and value != value)


def step_blocks(n: int, per_item: int, budget: int) -> Iterator[slice]:
    """Slices of ``range(n)`` such that each block holds at most ``budget`` units (``per_item`` each)."""
    size = max(1, budget // max(1, per_item))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _outer_read(read: Callable[[tuple], np.ndarray], key: tuple) -> np.ndarray:
    """Apply an outer-indexing ``key`` through ``read``, which gets only sorted unique integer arrays."""
    sub, post, axis = [], [], 0
    for k in key:
        if isinstance(k, np.ndarray):
            uniq, inv = np.unique(k, return_inverse=True)
            sub.append(uniq)
            post.append((axis, inv))
            axis += 1
        else:
            sub.append(k)
            if not isinstance(k, (int, np.integer)):
                axis += 1
    data = read(tuple(sub))
    for ax, inv in post:
        data = np.take(data, inv, axis=ax)
    return data


class TextArray(BackendArray):
    """Lazy view of one text variable in a netCDF4 file (object array of ``str``; None = missing).

    It holds a use of the file's shared read handle (:mod:`phasebayes.nc_handles`) from creation on, so
    the data survive the path being replaced, and reads only the selected cells.
    """

    def __init__(self, path: str | os.PathLike, group: str | None, name: str, shape: tuple[int, ...],
                 missing: str | None = None) -> None:
        self.path, self.group, self.name, self.missing = str(path), group, name, missing
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(object)
        self._use = nc_handles.Use(path)

    def _handle(self):
        if self._use is None:
            self._use = nc_handles.Use(self.path)
        return self._use.nc

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        nc = self._handle()
        with nc_handles.LOCK:
            grp = nc[self.group] if self.group else nc

            def read(k: tuple) -> np.ndarray:
                data = np.asarray(grp[self.name][k], dtype=object)
                if self.missing is not None:
                    grp[self.missing].set_auto_mask(False)
                    mask = np.asarray(grp[self.missing][k]).astype(bool)
                    if mask.any():
                        data = data.copy()
                        data[mask] = None
                return data

            return _outer_read(read, key)

    def __deepcopy__(self, memo: dict) -> TextArray:
        return self  # a read-only view: copies share it

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_use"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._use = None  # a copy in another process opens the path again on first read


class BlockArray(BackendArray):
    """Lazy array assembled from blocks along one axis: ``load(i)`` returns the slab at index ``i``.

    Used for datasets backed by files that are not the run file (e.g. generation shards); the slab of
    the last index read is cached, so reading several variables of one shard parses it once per variable.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, axis: int, load: Callable[[int], np.ndarray]) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.axis, self._load = axis, load

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER, self._read)

    def __deepcopy__(self, memo: dict) -> BlockArray:
        return self  # a read-only view: copies share it

    def _read(self, key: tuple) -> np.ndarray:
        def read(k: tuple) -> np.ndarray:
            along = k[self.axis]
            idx = [along] if isinstance(along, (int, np.integer)) else np.arange(self.shape[self.axis])[along]
            rest = k[: self.axis] + k[self.axis + 1:]
            slabs = [np.asarray(self._load(int(i)), dtype=self.dtype)[rest] for i in idx]
            if isinstance(along, (int, np.integer)):
                return slabs[0]
            out_axis = sum(1 for x in k[: self.axis] if not isinstance(x, (int, np.integer)))
            if not slabs:
                shape = list(np.empty(self.shape, dtype=np.uint8)[k].shape)
                return np.empty(shape, dtype=self.dtype)
            return np.stack(slabs, axis=out_axis)

        return _outer_read(read, key)


def lazy_variable(dims: tuple[str, ...], array: BackendArray, attrs: Mapping | None = None) -> xr.Variable:
    """An :class:`xarray.Variable` over a lazy backend array (nothing is read until indexed)."""
    return xr.Variable(dims, indexing.LazilyIndexedArray(array), attrs=dict(attrs or {}))


# --------------------------------------------------------------------------------------------- write
def _stream_axis(var: xr.Variable) -> str:
    return "ref_step" if "ref_step" in var.dims else ("step" if "step" in var.dims else var.dims[0])


def _chunks(var: xr.Variable) -> tuple[int, ...]:
    return tuple(1 if d in ("step", "ref_step") else max(1, n) for d, n in zip(var.dims, var.shape))


def _ensure_dims(nc, var: xr.Variable) -> None:
    for d, n in zip(var.dims, var.shape):
        if d not in nc.dimensions:
            nc.createDimension(d, n)


def _write_numeric(nc, name: str, var: xr.Variable) -> None:
    _ensure_dims(nc, var)
    kind = var.dtype.kind
    fill = np.nan if kind == "f" else False
    out = nc.createVariable(name, var.dtype, var.dims, chunksizes=_chunks(var), zlib=True, complevel=1,
                            shuffle=True, fill_value=fill)
    out.setncatts({k: v for k, v in netcdf_attrs(var.attrs).items() if k != "_FillValue"})
    axis = _stream_axis(var)
    ax = var.dims.index(axis)
    per = max(1, var.dtype.itemsize * int(np.prod(var.shape)) // max(1, var.shape[ax]))
    for sl in step_blocks(var.shape[ax], per, BLOCK_BYTES):
        index = tuple(sl if i == ax else slice(None) for i in range(var.ndim))
        out[index] = np.asarray(var.isel({axis: sl}).values)


def _write_text(grp, name: str, var: xr.Variable) -> None:
    ax = var.dims.index("step")
    chunks = _chunks(var)
    out = grp.createVariable(name, str, var.dims, chunksizes=chunks)
    out.setncatts(netcdf_attrs(var.attrs))
    mask_var = None
    per = max(1, int(np.prod(var.shape)) // max(1, var.shape[ax]))
    for sl in step_blocks(var.shape[ax], per, BLOCK_TEXTS):
        block = np.asarray(var.isel(step=sl).values, dtype=object)
        flat = block.ravel()
        miss = np.fromiter((is_missing_text(t) for t in flat), bool, flat.size)
        strings = np.empty(flat.size, dtype=object)
        strings[:] = ["" if m else str(t) for t, m in zip(flat, miss)]
        index = tuple(sl if i == ax else slice(None) for i in range(var.ndim))
        out[index] = strings.reshape(block.shape)
        if miss.any():
            if mask_var is None:
                mask_var = grp.createVariable(f"{name}_missing", "u1", var.dims, chunksizes=chunks, zlib=True,
                                              fill_value=0)
                mask_var.setncattr("description", f"1 where '{name}' has no text (missing), 0 where it has one")
            mask_var[index] = miss.reshape(block.shape).astype(np.uint8)


def write_run(ds: xr.Dataset, path: str | os.PathLike) -> None:
    """Write ``ds`` (already netCDF-encodable) to ``path`` in the current layout, streaming large parts.

    The caller provides atomicity (:func:`phasebayes.storage.atomic_path`).
    """
    import netCDF4

    texts = [n for n in ds.data_vars if is_text_variable(ds[n].variable)]
    big = [n for n in ds.data_vars if n not in texts and (set(ds[n].dims) & set(LAZY_DIMS)
                                                            or not getattr(ds[n].variable, "_in_memory", True))]
    root = ds.drop_vars(texts + big)
    root.attrs = {**root.attrs, "phasebayes_run_format": FORMAT_VERSION,
                  "phasebayes_texts": (f"per-answer texts ({', '.join(texts)}) are in the netCDF group "
                                       f"'/{TEXT_GROUP}'; read them with phasebayes.responses / phasebayes.open_run")
                  if texts else "none"}
    root.to_netcdf(path, engine="netcdf4")
    with netCDF4.Dataset(path, "a") as nc:
        for name in big:
            _write_numeric(nc, name, ds[name].variable)
        if texts:
            grp = nc.createGroup(TEXT_GROUP)
            grp.setncattr("description", "per-answer texts of the run, variable-length UTF-8, one chunk per checkpoint")
            for name in texts:
                _ensure_dims(nc, ds[name].variable)
                _write_text(grp, name, ds[name].variable)


# ---------------------------------------------------------------------------------------------- read
def _text_variables(nc) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """``(root_texts, group_texts)``: name -> (dims, shape, missing-mask name) of the text variables."""
    found: tuple[dict, dict] = ({}, {})
    with nc_handles.LOCK:
        for slot, grp in ((0, nc), (1, nc.groups.get(TEXT_GROUP))):
            if grp is None:
                continue
            for name, v in grp.variables.items():
                if v.dtype is str and {"step", "sample"} <= set(v.dimensions):
                    mask = f"{name}_missing" if f"{name}_missing" in grp.variables else None
                    attrs = {k: v.getncattr(k) for k in v.ncattrs() if k != "_FillValue"}
                    found[slot][name] = (tuple(v.dimensions), tuple(v.shape), mask, attrs)
    return found


def read_run(path: str | os.PathLike) -> xr.Dataset:
    """Open a run file: small numeric variables in memory, large ones and all texts lazy.

    Every reader shares one netCDF4 handle per file version (:mod:`phasebayes.nc_handles` says why).
    """
    from xarray.backends import NetCDF4DataStore
    from xarray.backends.file_manager import DummyFileManager

    path = Path(path)
    use = nc_handles.Use(path)  # released by ds.close() or when the dataset is garbage-collected
    store = NetCDF4DataStore(DummyFileManager(use.nc, close=use.close), lock=nc_handles.LOCK)
    root_texts, group_texts = _text_variables(use.nc)
    ds = xr.open_dataset(store, drop_variables=list(root_texts))
    lazy = [n for n in ds.data_vars if set(ds[n].dims) & set(LAZY_DIMS)]
    for name, var in ds.variables.items():
        if name not in lazy:
            var.load()
    if not lazy:
        ds.close()
    for slot, found in ((None, root_texts), (TEXT_GROUP, group_texts)):
        for name, (dims, shape, mask, attrs) in found.items():
            ds[name] = lazy_variable(dims, TextArray(path, slot, name, shape, mask), attrs)
    return ds
