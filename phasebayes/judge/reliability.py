"""Judge reliability: agreement between replicates of one judge and between two judges.

Every conclusion rests on the judge, so phasebayes reports, per order parameter, how well judgements
agree, with a bootstrap interval over judged responses (units):

* :func:`krippendorff_alpha` — Krippendorff's alpha (interval or ratio-free "interval" metric by
  default, nominal available); handles missing judgements and any number of raters per unit.
* :func:`icc` — intraclass correlation: ``"ICC1"`` (one-way random, exchangeable raters: replicates
  of one judge) or ``"ICC_A1"`` (two-way, absolute agreement, single rater: two different judges);
  complete units only.
* :func:`replicate_agreement` — per order parameter, over ``score_replicates`` of a judged run.
* :func:`judge_agreement` — per order parameter, between the ``score`` of two judged runs.

Both tables are indexed by order parameter with columns ``estimate, lower, upper, n_units,
n_values, method`` and carry ``ci_prob`` and ``ci_kind = "bootstrap-percentile"`` in ``.attrs``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ..defaults import CI_PROB
from ..errors import ArgumentError, RunDataError

__all__ = ["krippendorff_alpha", "icc", "agreement", "replicate_agreement", "judge_agreement", "attach_reliability"]


def _as_units(data) -> np.ndarray:
    arr = np.asarray(data, dtype=float)
    if arr.ndim != 2:
        raise RunDataError(f"agreement data must be 2-d (units × raters), got shape {arr.shape}.")
    return arr


def _alpha_stats(arr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-unit sufficient statistics of the interval alpha for units with ≥ 2 values."""
    ok = np.isfinite(arr)
    m = ok.sum(axis=1)
    keep = m >= 2
    x = np.where(ok, arr, 0.0)[keep]
    m = m[keep].astype(float)
    s1 = x.sum(axis=1)
    s2 = (x * x).sum(axis=1)
    d = 2.0 * (m * s2 - s1 * s1) / (m - 1.0)
    return m, s1, s2, d


def _alpha_from_sums(n, s1, s2, d):
    with np.errstate(divide="ignore", invalid="ignore"):
        d_o = d / n
        d_e = (2.0 * n * s2 - 2.0 * s1 * s1) / (n * (n - 1.0))
        return 1.0 - d_o / d_e


def krippendorff_alpha(data, *, level: str = "interval") -> float:
    """Krippendorff's alpha of a ``(n_units, n_raters)`` array (NaN = no judgement).

    ``level="interval"`` uses squared differences (scores on a 0–100 scale); ``"nominal"`` uses
    0/1 disagreement. Units with fewer than two judgements are not pairable and are ignored.
    Returns NaN when there is no variation at all.
    """
    arr = _as_units(data)
    if level == "interval":
        m, s1, s2, d = _alpha_stats(arr)
        return float(_alpha_from_sums(m.sum(), s1.sum(), s2.sum(), d.sum())) if len(m) else float("nan")
    if level != "nominal":
        raise ArgumentError(f"level must be 'interval' or 'nominal', got {level!r}.")
    ok = np.isfinite(arr)
    arr = arr[ok.sum(axis=1) >= 2]
    values = np.unique(arr[np.isfinite(arr)])
    if len(values) < 2:
        return float("nan")
    counts = np.stack([(arr == v).sum(axis=1) for v in values], axis=1).astype(float)  # units × values
    m = counts.sum(axis=1)
    coinc = (counts[:, :, None] * counts[:, None, :] - np.eye(len(values)) * counts[:, :, None]) / (m - 1)[:, None, None]
    o = coinc.sum(axis=0)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    d_o = (o.sum() - np.trace(o)) / n
    d_e = (n * n - (n_c * n_c).sum()) / (n * (n - 1))
    return float(1.0 - d_o / d_e)


def icc(data, *, kind: str = "ICC1") -> float:
    """Intraclass correlation of a ``(n_units, n_raters)`` array; units with a missing value are dropped.

    ``"ICC1"``: one-way random effects, single rater — raters are exchangeable draws (replicates).
    ``"ICC_A1"``: two-way random effects, absolute agreement, single rater (McGraw & Wong) — two
    distinct judges whose systematic offset counts as disagreement.
    """
    arr = _as_units(data)
    arr = arr[np.isfinite(arr).all(axis=1)]
    n, k = arr.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = arr.mean()
    row = arr.mean(axis=1)
    col = arr.mean(axis=0)
    ss_rows = k * ((row - grand) ** 2).sum()
    ss_total = ((arr - grand) ** 2).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "ICC1":
            msb = ss_rows / (n - 1)
            msw = (ss_total - ss_rows) / (n * (k - 1))
            return float((msb - msw) / (msb + (k - 1) * msw))
        if kind == "ICC_A1":
            ss_cols = n * ((col - grand) ** 2).sum()
            msr = ss_rows / (n - 1)
            msc = ss_cols / (k - 1)
            mse = (ss_total - ss_rows - ss_cols) / ((n - 1) * (k - 1))
            return float((msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n))
    raise ArgumentError(f"kind must be 'ICC1' or 'ICC_A1', got {kind!r}.")


def agreement(
    data,
    *,
    method: str = "alpha",
    n_boot: int = 1000,
    ci_prob: float | None = None,
    seed: int | None = 0,
) -> dict[str, float]:
    """Agreement estimate with a percentile bootstrap interval over units.

    ``method``: ``"alpha"`` (interval Krippendorff's alpha), ``"alpha_nominal"``, ``"ICC1"`` or ``"ICC_A1"``.
    Returns ``{"estimate", "lower", "upper", "n_units", "n_values"}``.
    """
    arr = _as_units(data)
    ci_prob = CI_PROB if ci_prob is None else float(ci_prob)
    rng = np.random.default_rng(seed)
    finite = np.isfinite(arr)
    info = {"n_units": int((finite.sum(axis=1) >= 2).sum()), "n_values": int(finite.sum())}
    if method == "alpha":
        m, s1, s2, d = _alpha_stats(arr)
        u = len(m)
        est = float(_alpha_from_sums(m.sum(), s1.sum(), s2.sum(), d.sum())) if u else float("nan")
        boots = []
        chunk = max(1, int(2_000_000 // max(u, 1)))
        stats = np.stack([m, s1, s2, d], axis=1)
        for start in range(0, n_boot if u else 0, chunk):
            b = min(chunk, n_boot - start)
            w = rng.multinomial(u, np.full(u, 1.0 / u), size=b).astype(float)
            sums = w @ stats
            boots.append(_alpha_from_sums(sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]))
        boot = np.concatenate(boots) if boots else np.array([])
    else:
        if method == "alpha_nominal":
            fn = lambda a: krippendorff_alpha(a, level="nominal")  # noqa: E731
        elif method in ("ICC1", "ICC_A1"):
            fn = lambda a: icc(a, kind=method)  # noqa: E731
        else:
            raise ArgumentError(f"method must be 'alpha', 'alpha_nominal', 'ICC1' or 'ICC_A1', got {method!r}.")
        est = fn(arr)
        u = arr.shape[0]
        boot = np.array([fn(arr[rng.integers(0, u, size=u)]) for _ in range(n_boot)]) if u >= 2 else np.array([])
    boot = boot[np.isfinite(boot)]
    tail = (1.0 - ci_prob) / 2.0
    lo, hi = (np.quantile(boot, [tail, 1.0 - tail]) if len(boot) else (np.nan, np.nan))
    return {"estimate": float(est), "lower": float(lo), "upper": float(hi), **info}


def _table(rows: dict[str, dict], method: str, ci_prob: float | None) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "order_parameter"
    df["method"] = method
    df.attrs["ci_prob"] = CI_PROB if ci_prob is None else float(ci_prob)
    df.attrs["ci_kind"] = "bootstrap-percentile"
    return df


def replicate_agreement(
    ds: xr.Dataset, *, method: str = "alpha", n_boot: int = 1000, ci_prob: float | None = None, seed: int | None = 0
) -> pd.DataFrame:
    """Agreement between the k replicates of one judge, per order parameter.

    Units are the judged responses (step × prompt × sample); raters are the replicates
    (``score_replicates``, judged with ``replicates=k > 1``). Default method: interval alpha.
    """
    if "score_replicates" not in ds:
        raise RunDataError("the dataset has no 'score_replicates'; judge with replicates >= 2 "
                           "(e.g. ClaudeJudge(replicates=3)) to measure agreement between replicates.")
    rows = {}
    for op in ds["order_parameter"].values:
        rep = ds["score_replicates"].sel(order_parameter=op).transpose("step", "prompt", "sample", "replicate").values
        arr = rep.reshape(-1, rep.shape[-1])
        if not np.isfinite(arr).any():
            continue
        rows[str(op)] = agreement(arr, method=method, n_boot=n_boot, ci_prob=ci_prob, seed=seed)
    return _table(rows, method, ci_prob)


def judge_agreement(
    ds_a: xr.Dataset,
    ds_b: xr.Dataset,
    *,
    order_parameters: list[str] | None = None,
    method: str = "alpha",
    n_boot: int = 1000,
    ci_prob: float | None = None,
    seed: int | None = 0,
) -> pd.DataFrame:
    """Agreement between two judges' ``score`` on the same responses, per shared order parameter.

    The two datasets must share step, prompt and sample coordinates (the same run judged twice).
    ``method="ICC_A1"`` treats a constant offset between the judges as disagreement; alpha does too.
    """
    shared = [o for o in ds_a["order_parameter"].values if o in set(ds_b["order_parameter"].values)]
    if order_parameters is not None:
        shared = [o for o in order_parameters if o in shared]
    if not shared:
        raise RunDataError("the two datasets share no order parameter; judge the same rubrics with both judges.")
    rows = {}
    for op in shared:
        a = ds_a["score"].sel(order_parameter=op)
        b = ds_b["score"].sel(order_parameter=op)
        a, b = xr.align(a, b, join="inner")
        if a.size == 0:
            raise RunDataError("the two datasets share no (step, prompt, sample) cells; judge the same run with both.")
        arr = np.stack([a.values.ravel(), b.values.ravel()], axis=1)
        rows[str(op)] = agreement(arr, method=method, n_boot=n_boot, ci_prob=ci_prob, seed=seed)
    return _table(rows, method, ci_prob)



def attach_reliability(ds: xr.Dataset, table: pd.DataFrame, name: str = "replicate_agreement") -> xr.Dataset:
    """Store an agreement table in the run dataset, for the report.

    Adds ``name`` with dims ``(order_parameter, agreement_stat)`` (``estimate, lower, upper``; NaN for
    order parameters not in the table) with the method, ``ci_prob`` and ``ci_kind`` as attributes.
    """
    ops = [str(o) for o in ds["order_parameter"].values]
    stats = ["estimate", "lower", "upper"]
    values = table.reindex(ops)[stats].to_numpy(dtype=float)
    out = ds.copy()
    out[name] = xr.DataArray(values, dims=("order_parameter", "agreement_stat"),
                             coords={"order_parameter": ds["order_parameter"].values, "agreement_stat": stats})
    method = str(table["method"].iloc[0]) if "method" in table and len(table) else ""
    out[name].attrs.update({"method": method, "ci_prob": float(table.attrs.get("ci_prob", CI_PROB)),
                            "ci_kind": str(table.attrs.get("ci_kind", "bootstrap-percentile"))})
    return out
