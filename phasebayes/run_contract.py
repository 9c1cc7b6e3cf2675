"""The run-dataset contract: score status codes, required columns, :func:`validate` (layout: ``docs/architecture.md``)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .defaults import DEFAULT_SCALE
from .errors import RunDataError

__all__ = ["STATUS", "REQUIRED_COLUMNS", "validate", "order_parameter_scale"]

STATUS: dict[str, int] = {
    "ok": 0,
    "missing": 1,  # never judged / no row in the table
    "refusal": 2,  # the judge refused to score
    "unparseable": 3,  # the judge answered, but no score could be read
    "api_error": 4,  # the call failed (after retries)
    "out_of_range": 5,  # the judge's number was outside the rubric scale
    "not_applicable": 6,  # a non-score answer the rubric allows (e.g. "CODE")
    "timeout": 7,  # the call timed out (after retries)
}
"""Codes of ``score_status``; the names are stored in the netCDF attributes (CF ``flag_meanings``)."""

REQUIRED_COLUMNS = ("step", "prompt", "sample", "order_parameter", "score")


def validate(ds: xr.Dataset, *, require_scores: bool = True) -> xr.Dataset:
    """Check ``ds`` against the run-dataset contract; return it unchanged or raise :class:`RunDataError`.

    ``require_scores=False`` accepts a dataset from the generate stage that has responses (and
    log-probabilities) but no judged ``score`` yet.
    """
    if not isinstance(ds, xr.Dataset):
        raise RunDataError(f"expected an xarray.Dataset (a run dataset), got {type(ds).__name__}.")
    if "step" not in ds.coords:
        raise RunDataError("the run dataset has no 'step' coordinate (checkpoint training steps).")
    if "score" not in ds:
        if require_scores:
            raise RunDataError(
                "the run dataset has no 'score' variable; judge it first (phasebayes judge) or build it "
                "with phasebayes.from_dataframe."
            )
    elif tuple(ds["score"].dims) != ("order_parameter", "step", "prompt", "sample"):
        raise RunDataError(
            f"'score' must have dims ('order_parameter', 'step', 'prompt', 'sample'), has {tuple(ds['score'].dims)}."
        )
    steps = ds["step"].values
    if not np.issubdtype(steps.dtype, np.integer):
        raise RunDataError(f"coordinate 'step' must be integer training steps, got dtype {steps.dtype}.")
    if len(steps) < 3:
        raise RunDataError(f"need at least 3 checkpoint steps, found {len(steps)}.")
    if np.any(np.diff(steps) <= 0) or np.any(steps < 0):
        raise RunDataError("coordinate 'step' must be non-negative and strictly increasing.")
    if "score" in ds:
        score = ds["score"].values
        if np.isinf(score).any():
            raise RunDataError("'score' contains infinite values; use NaN for missing scores.")
        for i, op in enumerate(ds["order_parameter"].values):
            if not np.isfinite(score[i]).any():
                raise RunDataError(f"order parameter '{op}' has no finite score.")
    if "train_step" in ds.dims:
        ts = ds["train_step"].values
        if np.any(np.diff(ts) <= 0):
            raise RunDataError("coordinate 'train_step' must be strictly increasing (one row per optimiser step).")
    return ds


def order_parameter_scale(ds: xr.Dataset, order_parameter: str) -> tuple[float, float]:
    """Declared ``(lower, upper)`` scale of one order parameter; NaN bounds mean unbounded."""
    if "scale_min" not in ds:
        return DEFAULT_SCALE
    sel = {"order_parameter": order_parameter}
    return float(ds["scale_min"].sel(sel)), float(ds["scale_max"].sel(sel))
