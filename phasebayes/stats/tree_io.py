"""Conversion of result datasets to and from netCDF-safe DataTree nodes (booleans, JSON attrs).

Shared by :class:`~phasebayes.stats.dissimilarity.DissimilarityResult` and
:class:`~phasebayes.stats.decomposition.DecompositionResult`.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from ..errors import ModelSpecError

__all__ = ["netcdf_safe", "restore", "find_node"]


def netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    """Booleans as int8 (flagged), dict/list/bool/None attrs as JSON, for netCDF."""
    ds = ds.copy()
    for name in list(ds.variables):
        v = ds[name]
        if v.dtype == bool:
            ds[name] = v.astype(np.int8)
            ds[name].attrs["phasebayes_bool"] = 1
    for k, v in list(ds.attrs.items()):
        if isinstance(v, bool) or v is None or isinstance(v, (dict, list, tuple)):
            ds.attrs[k] = json.dumps(v)
    return ds


def restore(ds: xr.Dataset) -> xr.Dataset:
    """Undo :func:`netcdf_safe`; drop dimensions inherited from a parent DataTree node but unused here."""
    unused = [d for d in ds.dims if not any(d in v.dims for v in ds.data_vars.values())]
    ds = ds.drop_dims(unused).copy()
    for name in list(ds.variables):
        if ds[name].attrs.get("phasebayes_bool") == 1:
            attrs = {k: v for k, v in ds[name].attrs.items() if k != "phasebayes_bool"}
            ds[name] = ds[name].astype(bool)
            ds[name].attrs = attrs
        if ds[name].dtype.kind in "US":
            ds[name] = ds[name].astype(object)
    for name in list(ds.coords):
        if ds[name].dtype.kind in "US":
            ds = ds.assign_coords({name: ds[name].astype(object)})
    return ds


def find_node(tree: xr.DataTree, kind: str, child: str) -> xr.DataTree:
    """The node of ``tree`` whose attrs say ``phasebayes_result=kind`` (itself, child ``child`` or any)."""
    if not isinstance(tree, xr.DataTree):
        raise ModelSpecError(f"expected an xarray.DataTree, got {type(tree).__name__}.")
    if tree.attrs.get("phasebayes_result") == kind:
        return tree
    if child in tree.children and tree[child].attrs.get("phasebayes_result") == kind:
        return tree[child]
    for node in tree.subtree:
        if node.attrs.get("phasebayes_result") == kind:
            return node
    raise ModelSpecError(f"no {kind} node in this DataTree (looked for attrs phasebayes_result={kind!r}).")
