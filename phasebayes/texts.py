"""The one way analysis code reads per-answer texts of a run dataset, in bounded blocks.

:func:`phasebayes.open_run` leaves texts on disk; these accessors read only the cells asked for.
Missing texts come back as ``None`` (whether the dataset is lazy or in memory; in a plain in-memory
DataArray xarray stores them as NaN, :func:`phasebayes.runstore.is_missing_text` accepts both).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import xarray as xr
from xarray.core import indexing

from .errors import RunDataError
from .runstore import BLOCK_TEXTS, is_missing_text, step_blocks

__all__ = ["responses", "iter_responses", "has_texts"]


def has_texts(ds: xr.Dataset | None, name: str = "response") -> bool:
    """True if ``ds`` has the per-answer text variable ``name``."""
    return ds is not None and name in ds.variables


def _select(ds: xr.Dataset, name: str, steps, prompts, samples) -> xr.DataArray:
    if name not in ds.variables:
        raise RunDataError(f"the run dataset has no '{name}' variable (per-answer texts); generate responses first "
                           "or build the dataset with a 'response' column.")
    da = ds[name]
    sel = {k: list(v) if not np.isscalar(v) else v for k, v in (("step", steps), ("prompt", prompts),
                                                                  ("sample", samples)) if v is not None}
    try:
        da = da.sel(sel)
    except KeyError as err:
        raise RunDataError(f"selection {sel} names a step, prompt or sample that is not in the run ({err}).") from err
    return da


def _clean(da: xr.DataArray) -> xr.DataArray:
    """``da`` read into memory with missing texts as None (xarray would turn None into NaN)."""
    out = np.array(da.values, dtype=object)
    flat = out.reshape(-1)
    for i, t in enumerate(flat):
        if is_missing_text(t):
            flat[i] = None
        elif not isinstance(t, str):
            flat[i] = str(t)
    return xr.DataArray(xr.Variable(da.dims, indexing.NumpyIndexingAdapter(out), attrs=da.attrs), coords=da.coords,
                        name=da.name)


def responses(ds: xr.Dataset, *, steps: Sequence[int] | int | None = None, prompts: Sequence[str] | str | None = None,
              samples: Sequence[int] | int | None = None, name: str = "response") -> xr.DataArray:
    """Texts of the selected cells as an in-memory object DataArray (``None`` where missing).

    ``steps`` / ``prompts`` / ``samples`` select by label (a scalar drops that dim, as in ``.sel``);
    only the selected cells are read from disk. ``name`` picks another text variable
    (``stop_reason``, ``score_reason``).
    """
    da = _select(ds, name, steps, prompts, samples)
    return _clean(da)


def iter_responses(ds: xr.Dataset, *, steps: Sequence[int] | None = None, prompts: Sequence[str] | None = None,
                   name: str = "response", max_texts: int = BLOCK_TEXTS) -> Iterator[xr.DataArray]:
    """Yield the texts in blocks of whole checkpoints, each block at most ``max_texts`` texts (≥ one step).

    Each block is an object DataArray like :func:`responses` returns; memory stays bounded by the block.
    """
    da = _select(ds, name, steps, prompts, None)
    if "step" not in da.dims:
        yield _clean(da)
        return
    per_step = int(np.prod([n for d, n in da.sizes.items() if d != "step"]))
    for sl in step_blocks(da.sizes["step"], per_step, max_texts):
        yield _clean(da.isel(step=sl))
