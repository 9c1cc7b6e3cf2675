"""Building a run dataset: from a tidy table (:func:`from_dataframe`), from dense arrays
(:func:`assemble_run`), and the training log as ``train_step`` variables (:func:`training_log_dataset`)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from .defaults import DEFAULT_SCALE
from .errors import RunDataError
from .run_contract import REQUIRED_COLUMNS, STATUS, validate
from .runstore import netcdf_attrs as _netcdf_attrs
from .version import __version__

__all__ = ["from_dataframe", "assemble_run", "training_log_dataset"]


def _as_nonnegative_int(values: pd.Series, what: str) -> np.ndarray:
    """Convert a column of steps / sample indices to int64 or raise a RunDataError naming bad rows."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if values.isna().any():
        raise RunDataError(f"column '{what}' has {int(values.isna().sum())} empty value(s); every row needs a {what}.")
    if bad.any():
        examples = list(values[bad].astype(str).unique()[:3])
        raise RunDataError(f"column '{what}' must hold integers; found non-numeric values such as {examples}.")
    arr = numeric.to_numpy(dtype=float)
    frac = arr != np.round(arr)
    if frac.any():
        raise RunDataError(
            f"column '{what}' must hold integers (training steps / sample indices); "
            f"found non-integer values such as {list(np.unique(arr[frac])[:3])}."
        )
    if (arr < 0).any():
        raise RunDataError(f"column '{what}' must be >= 0; found negative values such as {list(np.unique(arr[arr < 0])[:3])}.")
    return arr.astype(np.int64)


def _parse_scales(
    scales: Mapping[str, tuple[float, float] | None] | None, order_parameters: list[str]
) -> dict[str, tuple[float, float]]:
    """Declared scale per order parameter; NaN bounds mean unbounded (None declares that)."""
    scales = dict(scales or {})
    unknown = set(scales) - set(order_parameters)
    if unknown:
        raise RunDataError(
            f"scales names order parameter(s) {sorted(unknown)} that are not in the table; "
            f"the table has {order_parameters}."
        )
    out = {}
    for op in order_parameters:
        bounds = scales.get(op, DEFAULT_SCALE)
        if bounds is None:
            bounds = (np.nan, np.nan)
        lo, hi = (np.nan if b is None else float(b) for b in bounds)
        if np.isfinite(lo) and np.isfinite(hi) and not lo < hi:
            raise RunDataError(f"scale of '{op}' must have lower < upper, got {bounds}.")
        out[op] = (lo, hi)
    return out


def from_dataframe(
    scores: pd.DataFrame,
    training_log: pd.DataFrame | None = None,
    *,
    scales: Mapping[str, tuple[float, float] | None] | None = None,
    prompt_text: Mapping[str, str] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> xr.Dataset:
    """Build and validate a run dataset from a tidy table of judged responses.

    Parameters
    ----------
    scores
        One row per judged response with columns ``step`` (int ≥ 0, training step of the checkpoint),
        ``prompt`` (prompt id), ``sample`` (int ≥ 0), ``order_parameter`` (name) and ``score``
        (float; NaN = no score). Optional columns: ``status`` (a name of :data:`STATUS`),
        ``response`` (text; a missing cell or NaN is stored as a missing text, ``None``),
        ``n_tokens`` (int), ``prompt_text``.
    training_log
        Optional table with one row per optimiser step: ``step`` plus any of ``grad_norm``, ``loss``,
        ``learning_rate`` and other numeric per-step signals.
    scales
        Declared scale per order parameter as ``(lower, upper)``; ``None`` declares an unbounded
        score (counts, lengths, z-scores). Undeclared order parameters get the judge scale 0–100.
    prompt_text
        Optional mapping prompt id → prompt text (else the ``prompt_text`` column, else the id).
    attrs
        Provenance attributes to store (base model, generation settings, judge ids, ...).

    Returns
    -------
    xarray.Dataset of the run-dataset contract (``docs/storage.md``). Missing (step, prompt, sample, order_parameter) cells are
    NaN with status ``"missing"``; nothing is imputed.
    """
    if not isinstance(scores, pd.DataFrame):
        raise RunDataError(f"scores must be a pandas DataFrame, got {type(scores).__name__}.")
    if len(scores) == 0:
        raise RunDataError("the scores table is empty; it needs one row per judged response.")
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise RunDataError(
            f"the scores table lacks column(s) {missing}; it has {list(scores.columns)}. "
            f"Required: {list(REQUIRED_COLUMNS)} (rename your columns to match)."
        )
    df = scores.copy()
    df["step"] = _as_nonnegative_int(df["step"], "step")
    df["sample"] = _as_nonnegative_int(df["sample"], "sample")
    df["prompt"] = df["prompt"].astype(str)
    df["order_parameter"] = df["order_parameter"].astype(str)

    raw_score = df["score"]
    score = pd.to_numeric(raw_score, errors="coerce")
    non_numeric = score.isna() & raw_score.notna() & ~raw_score.astype(str).str.strip().str.lower().isin(["nan", "", "none"])
    if non_numeric.any():
        examples = list(raw_score[non_numeric].astype(str).unique()[:3])
        raise RunDataError(
            f"column 'score' must be numeric (NaN for no score); found {int(non_numeric.sum())} "
            f"non-numeric value(s) such as {examples}. Record non-score answers in a 'status' column."
        )
    score = score.astype(float)
    if np.isinf(score).any():
        raise RunDataError(
            f"column 'score' has {int(np.isinf(score).sum())} infinite value(s); use NaN for a missing score."
        )
    df["score"] = score

    keys = ["order_parameter", "step", "prompt", "sample"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        example = df.loc[dup, keys].head(3).to_dict("records")
        raise RunDataError(
            f"{int(dup.sum())} rows share the same (step, prompt, sample, order_parameter), e.g. {example}. "
            "Each judged response must appear once; average replicates first or give them distinct samples."
        )

    steps = np.sort(df["step"].unique())
    if len(steps) < 3:
        raise RunDataError(
            f"need at least 3 distinct checkpoint steps to locate a transition; found {len(steps)}: {list(steps)}."
        )
    ops = list(dict.fromkeys(df["order_parameter"]))
    prompts = list(dict.fromkeys(df["prompt"]))
    samples = np.sort(df["sample"].unique())
    scale = _parse_scales(scales, ops)

    for op in ops:
        vals = df.loc[df["order_parameter"] == op, "score"]
        finite = vals[np.isfinite(vals)]
        if len(finite) == 0:
            raise RunDataError(f"order parameter '{op}' has no finite score; drop it or fix its judging.")
        lo, hi = scale[op]
        outside = ((finite < lo) if np.isfinite(lo) else False) | ((finite > hi) if np.isfinite(hi) else False)
        if np.any(outside):
            raise RunDataError(
                f"order parameter '{op}' has {int(np.sum(outside))} score(s) outside its declared scale "
                f"[{lo:g}, {hi:g}] (range seen: {finite.min():g} to {finite.max():g}). Declare its scale, e.g. "
                f"scales={{'{op}': ({finite.min():g}, {finite.max():g})}}, or scales={{'{op}': None}} if unbounded."
            )

    index = pd.MultiIndex.from_product([ops, steps, prompts, samples], names=keys)
    full = df.set_index(keys).reindex(index)
    shape = (len(ops), len(steps), len(prompts), len(samples))
    score_arr = full["score"].to_numpy(dtype=float).reshape(shape)

    if "status" in df.columns:
        names = full["status"].astype(object).where(full["status"].notna(), None)
        unknown = {s for s in names.dropna().unique() if str(s) not in STATUS}
        if unknown:
            raise RunDataError(f"unknown status value(s) {sorted(map(str, unknown))}; allowed: {list(STATUS)}.")
        codes = np.array([STATUS[str(s)] if s is not None else -1 for s in names], dtype=np.int16)
    else:
        codes = np.full(index.size, -1, dtype=np.int16)
    codes = codes.reshape(shape)
    finite = np.isfinite(score_arr)
    codes = np.where(codes == -1, np.where(finite, STATUS["ok"], STATUS["missing"]), codes)
    if np.any(finite & (codes != STATUS["ok"])):
        raise RunDataError("rows with a finite score must have status 'ok' (or no status); found other statuses.")
    score_arr = np.where(codes == STATUS["ok"], score_arr, np.nan)

    if prompt_text is None and "prompt_text" in df.columns:
        prompt_text = df.drop_duplicates("prompt").set_index("prompt")["prompt_text"].astype(str).to_dict()
    texts = [str((prompt_text or {}).get(p, p)) for p in prompts]

    ds = assemble_run(
        score_arr,
        codes,
        order_parameters=ops,
        steps=steps,
        prompts=prompts,
        samples=samples,
        scales=[scale[o] for o in ops],
        prompt_text=texts,
        validate_result=False,
    )
    cell_index = pd.MultiIndex.from_product([steps, prompts, samples], names=["step", "prompt", "sample"])
    if "response" in df.columns:
        resp = df.drop_duplicates(["step", "prompt", "sample"]).set_index(["step", "prompt", "sample"])["response"]
        resp = resp.reindex(cell_index)
        values = resp.to_numpy(dtype=object)
        text = np.array([None if (v is None or (isinstance(v, float) and v != v)) else str(v) for v in values], dtype=object)
        ds["response"] = (("step", "prompt", "sample"), text.reshape(shape[1:]))  # None = no text for this cell
    if "n_tokens" in df.columns:
        ntok = df.drop_duplicates(["step", "prompt", "sample"]).set_index(["step", "prompt", "sample"])["n_tokens"]
        ds["n_tokens"] = (("step", "prompt", "sample"), pd.to_numeric(ntok.reindex(cell_index)).to_numpy(float).reshape(shape[1:]))

    if training_log is not None:
        ds = ds.merge(training_log_dataset(training_log))
    ds.attrs.update({"phasebayes_version": __version__, "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    if attrs:
        ds.attrs.update(_netcdf_attrs(attrs))
    validate(ds)
    return ds


def assemble_run(
    score: np.ndarray,
    score_status: np.ndarray | None = None,
    *,
    order_parameters: list[str],
    steps: np.ndarray | list[int],
    prompts: list[str],
    samples: np.ndarray | list[int] | None = None,
    scales: list[tuple[float, float]] | None = None,
    prompt_text: list[str] | None = None,
    validate_result: bool = True,
) -> xr.Dataset:
    """Assemble a run dataset from arrays (for stages that already hold dense arrays).

    ``score`` has shape ``(order_parameter, step, prompt, sample)``; ``score_status`` the same shape
    (default: ``ok`` where finite, ``missing`` elsewhere). ``scales`` lists ``(lower, upper)`` per order
    parameter (NaN = unbounded; default 0–100). Extra variables (``response``, ``logp``, training log)
    can be merged afterwards.
    """
    score = np.asarray(score, dtype=float)
    if score.ndim != 4:
        raise RunDataError(f"score must be 4-d (order_parameter, step, prompt, sample), got shape {score.shape}.")
    n_op, _, n_prompt, n_sample = score.shape
    if score_status is None:
        score_status = np.where(np.isfinite(score), STATUS["ok"], STATUS["missing"])
    samples = np.arange(n_sample) if samples is None else np.asarray(samples)
    scales = scales if scales is not None else [DEFAULT_SCALE] * n_op
    texts = list(prompts) if prompt_text is None else list(prompt_text)
    ds = xr.Dataset(
        {
            "score": (("order_parameter", "step", "prompt", "sample"), score),
            "score_status": (("order_parameter", "step", "prompt", "sample"), np.asarray(score_status, dtype=np.int16)),
            "scale_min": (("order_parameter",), np.array([float(s[0]) for s in scales])),
            "scale_max": (("order_parameter",), np.array([float(s[1]) for s in scales])),
        },
        coords={
            "order_parameter": np.array(list(order_parameters), dtype=object),
            "step": np.asarray(steps, dtype=np.int64),
            "prompt": np.array(list(prompts), dtype=object),
            "prompt_text": ("prompt", np.array(texts, dtype=object)),
            "sample": np.asarray(samples, dtype=np.int64),
        },
    )
    ds.attrs["phasebayes_version"] = __version__
    return validate(ds) if validate_result else ds


def training_log_dataset(log: pd.DataFrame) -> xr.Dataset:
    """Validate a per-optimiser-step training log table and turn it into ``train_step`` variables."""
    if not isinstance(log, pd.DataFrame):
        raise RunDataError(f"training_log must be a pandas DataFrame, got {type(log).__name__}.")
    if len(log) == 0:
        raise RunDataError("the training log is empty; pass training_log=None if there is none.")
    if "step" not in log.columns:
        raise RunDataError(f"the training log needs a 'step' column (optimiser step); it has {list(log.columns)}.")
    steps = _as_nonnegative_int(log["step"], "step")
    uniq, counts = np.unique(steps, return_counts=True)
    if (counts > 1).any():
        raise RunDataError(
            f"the training log has duplicate steps such as {list(uniq[counts > 1][:3])}; "
            "keep one row per optimiser step (e.g. the last logged value)."
        )
    order = np.argsort(steps)
    data = {}
    for col in log.columns:
        if col == "step":
            continue
        values = pd.to_numeric(log[col], errors="coerce")
        if values.isna().all() and log[col].notna().any():
            continue  # a text column (e.g. a timestamp) is not a per-step signal
        data[col] = (("train_step",), values.to_numpy(float)[order])
    if not data:
        raise RunDataError("the training log has no numeric signal column (expected e.g. grad_norm, loss).")
    return xr.Dataset(data, coords={"train_step": steps[order]})
