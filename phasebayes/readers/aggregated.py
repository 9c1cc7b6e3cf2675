"""Aggregated judgements as run datasets: per-cell counts (k of n) or summaries (mean, sd, n).

Many published runs only report per-checkpoint aggregates ("37 of 199 answers misaligned", or the mean
of 25 samples per prompt). :func:`from_counts` and :func:`from_summaries` turn such tables into run
datasets whose cells feed the change-point likelihood's sufficient statistics directly — no fake
per-answer rows — so the posterior is the one of the expanded per-answer data.

Supported likelihoods: counts → ``binomial``; summaries → ``normal`` (``likelihood="auto"`` picks
them). Analyses that need individual answers (the decomposition, the dissimilarity, ``threshold=``)
raise :class:`~phasebayes.errors.RunDataError` / :class:`~phasebayes.errors.ModelSpecError` on them.

Dataset layout: the usual ``score`` holds the cell mean (a single ``sample``), plus ``cell_n``,
``cell_sum`` (k or n · mean) and, for summaries, ``cell_sumsq`` ((n − 1) sd² + n mean²), dims
``(order_parameter, step, prompt)``; attribute ``aggregated = "counts" | "summaries"``.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from ..run_build import _as_nonnegative_int, _parse_scales, assemble_run
from ..run_contract import validate
from ..runstore import netcdf_attrs as _netcdf_attrs
from ..version import __version__
from ..errors import RunDataError
from .training_logs import TrainingLog, read_training_log, training_log_variables

__all__ = ["from_counts", "from_summaries"]

_KEYS = ["order_parameter", "step", "prompt"]


def _numeric(df: pd.DataFrame, col: str, where: str) -> np.ndarray:
    raw = df[col]
    vals = pd.to_numeric(raw, errors="coerce")
    bad = vals.isna() & raw.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise RunDataError(f"{where}: column '{col}' must be numeric; row {i} holds {raw.iloc[i]!r}.")
    return vals.to_numpy(float)


def _prepare(table: pd.DataFrame, value_cols: list[str], where: str) -> pd.DataFrame:
    if not isinstance(table, pd.DataFrame):
        raise RunDataError(f"{where}: expected a pandas DataFrame, got {type(table).__name__}.")
    if len(table) == 0:
        raise RunDataError(f"{where}: the table is empty.")
    df = table.copy()
    if "prompt" not in df.columns:
        df["prompt"] = "all"  # one aggregate per checkpoint
    if "order_parameter" not in df.columns and len(value_cols):
        df["order_parameter"] = "score"
    missing = [c for c in ["step", *value_cols] if c not in df.columns]
    if missing:
        raise RunDataError(f"{where}: missing column(s) {missing}; it has {list(table.columns)}. Needed: step, prompt, "
                           f"order_parameter, {', '.join(value_cols)} (prompt / order_parameter may be left out).")
    df["step"] = _as_nonnegative_int(df["step"], "step")
    df["prompt"] = df["prompt"].astype(str)
    df["order_parameter"] = df["order_parameter"].astype(str)
    dup = df.duplicated(_KEYS, keep=False)
    if dup.any():
        raise RunDataError(f"{where}: {int(dup.sum())} rows share (step, prompt, order_parameter), e.g. "
                           f"{df.loc[dup, _KEYS].head(2).to_dict('records')}; give one aggregate per cell.")
    return df


def _grid(df: pd.DataFrame) -> tuple[list[str], np.ndarray, list[str], pd.MultiIndex]:
    steps = np.sort(df["step"].unique())
    if len(steps) < 3:
        raise RunDataError(f"need at least 3 distinct checkpoint steps to locate a transition; found {list(steps)}.")
    ops = list(dict.fromkeys(df["order_parameter"]))
    prompts = list(dict.fromkeys(df["prompt"]))
    return ops, steps, prompts, pd.MultiIndex.from_product([ops, steps, prompts], names=_KEYS)


def _finish(ds: xr.Dataset, form: str, training_log, prompt_text, attrs) -> xr.Dataset:
    if prompt_text:
        ds = ds.assign_coords(prompt_text=("prompt", [str(prompt_text.get(p, p)) for p in ds["prompt"].values]))
    if training_log is not None:
        if isinstance(training_log, (str, os.PathLike)):
            training_log = read_training_log(training_log)
        if isinstance(training_log, (TrainingLog, pd.DataFrame)):
            training_log = training_log_variables(training_log, checkpoint_steps=ds["step"].values)
        ds = ds.merge(training_log, combine_attrs="drop_conflicts")
    ds.attrs.update({"phasebayes_version": __version__, "aggregated": form,
                     "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    if attrs:
        ds.attrs.update(_netcdf_attrs(attrs))
    return validate(ds)


def from_counts(table: pd.DataFrame, training_log=None, *, prompt_text: Mapping[str, str] | None = None,
                attrs: Mapping[str, object] | None = None) -> xr.Dataset:
    """Run dataset from per-cell counts: ``k`` successes (e.g. misaligned answers) of ``n`` judged answers.

    Parameters
    ----------
    table
        Columns ``step`` (checkpoint training step), ``prompt`` (optional: one aggregate per checkpoint
        if absent), ``order_parameter`` (optional, default ``"score"``), ``k`` and ``n`` (integers,
        0 ≤ k ≤ n). A cell with n = 0 or no row is missing.
    training_log
        A table with ``step`` and per-step signals, a :class:`~phasebayes.readers.TrainingLog`, an
        ``xarray.Dataset`` of ``train_step`` variables, or a path any training-log reader accepts.
    prompt_text, attrs
        Prompt texts and provenance attributes, as in :func:`phasebayes.from_dataframe`.

    Returns a run dataset (scale 0–1, ``score`` = k / n) fitted with the ``binomial`` likelihood.
    """
    where = "from_counts"
    df = _prepare(table, ["k", "n"], where)
    k, n = _numeric(df, "k", where), _numeric(df, "n", where)
    for name, v in (("k", k), ("n", n)):
        if np.any(~np.isfinite(v)) or np.any(v < 0) or np.any(v != np.round(v)):
            raise RunDataError(f"{where}: column '{name}' must hold non-negative integers (answers); found e.g. "
                               f"{v[~np.isfinite(v) | (v < 0) | (v != np.round(v))][:3].tolist()}.")
    if np.any(k > n):
        i = int(np.flatnonzero(k > n)[0])
        raise RunDataError(f"{where}: row {i}: k = {k[i]:g} successes of n = {n[i]:g} answers; k must be <= n.")
    df["k"], df["n"] = k, n
    ops, steps, prompts, index = _grid(df)
    full = df.set_index(_KEYS).reindex(index)
    shape = (len(ops), len(steps), len(prompts))
    cn = full["n"].fillna(0).to_numpy(float).reshape(shape)
    ck = full["k"].fillna(0).to_numpy(float).reshape(shape)
    mean = np.where(cn > 0, ck / np.where(cn > 0, cn, 1), np.nan)
    ds = assemble_run(mean[..., None], order_parameters=ops, steps=steps, prompts=prompts, scales=[(0.0, 1.0)] * len(ops),
                      validate_result=False)
    dims = ("order_parameter", "step", "prompt")
    ds["cell_n"] = (dims, cn)
    ds["cell_sum"] = (dims, ck)
    ds["cell_n"].attrs["description"] = "answers judged in the cell"
    ds["cell_sum"].attrs["description"] = "successes k in the cell"
    return _finish(ds, "counts", training_log, prompt_text, attrs)


def from_summaries(table: pd.DataFrame, training_log=None, *, scales: Mapping[str, tuple[float, float] | None] | None = None,
                   ddof: int = 1, prompt_text: Mapping[str, str] | None = None,
                   attrs: Mapping[str, object] | None = None) -> xr.Dataset:
    """Run dataset from per-cell summaries: ``mean``, ``sd`` and ``n`` of the judged scores of each cell.

    Parameters
    ----------
    table
        Columns ``step``, ``prompt`` (optional), ``order_parameter`` (optional), ``mean``, ``sd``
        (standard deviation of the cell's scores, with ``ddof``; may be NaN when n = 1) and ``n``.
    scales
        Declared score scale per order parameter (checks the means; ``None`` = unbounded), as in
        :func:`phasebayes.from_dataframe`; default: unbounded (the ``normal`` likelihood needs no bounds).
    ddof
        Delta degrees of freedom of ``sd``: 1 (sample sd, pandas' default) or 0 (population sd, numpy's).

    Returns a run dataset fitted with the ``normal`` likelihood (exact for these statistics).
    """
    where = "from_summaries"
    if ddof not in (0, 1):
        raise RunDataError(f"{where}: ddof must be 0 or 1, got {ddof!r}.")
    df = _prepare(table, ["mean", "sd", "n"], where)
    mean, sd, n = (_numeric(df, c, where) for c in ("mean", "sd", "n"))
    if np.any(~np.isfinite(n)) or np.any(n < 0) or np.any(n != np.round(n)):
        raise RunDataError(f"{where}: column 'n' must hold non-negative integers (answers per cell).")
    sd = np.where((n <= ddof) & ~np.isfinite(sd), 0.0, sd)
    bad = (n > 0) & (~np.isfinite(mean) | ~np.isfinite(sd) | (sd < 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RunDataError(f"{where}: row {i}: mean = {mean[i]!r}, sd = {sd[i]!r}; a cell with n > 0 needs a finite mean "
                           "and a finite sd >= 0.")
    df["mean"], df["sd"], df["n"] = mean, sd, n
    ops, steps, prompts, index = _grid(df)
    scale = _parse_scales(scales if scales is not None else {op: None for op in ops}, ops)
    full = df.set_index(_KEYS).reindex(index)
    shape = (len(ops), len(steps), len(prompts))
    cn = full["n"].fillna(0).to_numpy(float).reshape(shape)
    cm = full["mean"].to_numpy(float).reshape(shape)
    csd = full["sd"].fillna(0).to_numpy(float).reshape(shape)
    cm = np.where(cn > 0, cm, np.nan)
    for i, op in enumerate(ops):
        lo, hi = scale[op]
        m = cm[i][np.isfinite(cm[i])]
        if (np.isfinite(lo) and np.any(m < lo)) or (np.isfinite(hi) and np.any(m > hi)):
            raise RunDataError(f"{where}: means of '{op}' range {m.min():g}..{m.max():g}, outside its scale [{lo:g}, {hi:g}]; "
                               f"declare scales={{'{op}': None}} (unbounded) or the right range.")
    ssq = np.where(cn > 0, (cn - ddof) * csd**2 + cn * np.nan_to_num(cm) ** 2, 0.0)
    ds = assemble_run(cm[..., None], order_parameters=ops, steps=steps, prompts=prompts, scales=[scale[o] for o in ops],
                      validate_result=False)
    dims = ("order_parameter", "step", "prompt")
    ds["cell_n"] = (dims, cn)
    ds["cell_sum"] = (dims, np.where(cn > 0, cn * np.nan_to_num(cm), 0.0))
    ds["cell_sumsq"] = (dims, ssq)
    ds["cell_n"].attrs["description"] = "scores in the cell"
    ds["cell_sum"].attrs["description"] = "sum of the cell's scores (n * mean)"
    ds["cell_sumsq"].attrs["description"] = "sum of squared scores ((n - ddof) sd^2 + n mean^2)"
    return _finish(ds, "summaries", training_log, prompt_text, attrs)
