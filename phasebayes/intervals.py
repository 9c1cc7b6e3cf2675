"""Posterior summaries with explicit interval conventions (the one place that computes intervals)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import defaults
from .errors import ModelSpecError

__all__ = ["interval", "summarize_draws", "resolve_ci"]


def resolve_ci(ci_prob: float | None, ci_kind: str | None) -> tuple[float, str]:
    """Fill in the global defaults and check ``ci_prob`` ∈ (0, 1), ``ci_kind`` ∈ {"hdi", "eti"}."""
    prob = defaults.CI_PROB if ci_prob is None else float(ci_prob)
    kind = defaults.CI_KIND if ci_kind is None else str(ci_kind).lower()
    if not 0.0 < prob < 1.0:
        raise ModelSpecError(f"ci_prob must be in (0, 1), got {ci_prob}.")
    if kind not in ("hdi", "eti"):
        raise ModelSpecError(f"ci_kind must be 'hdi' (highest density) or 'eti' (equal tailed), got {ci_kind!r}.")
    return prob, kind


def interval(draws: np.ndarray, ci_prob: float | None = None, ci_kind: str | None = None) -> tuple[float, float]:
    """Credible interval of 1-d ``draws``: highest-density (shortest) or equal-tailed."""
    prob, kind = resolve_ci(ci_prob, ci_kind)
    x = np.sort(np.asarray(draws, dtype=float).ravel())
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (np.nan, np.nan)
    if kind == "eti":
        lo, hi = np.quantile(x, [(1 - prob) / 2, 1 - (1 - prob) / 2])
        return float(lo), float(hi)
    m = int(np.ceil(prob * x.size))
    if m >= x.size:
        return float(x[0]), float(x[-1])
    widths = x[m - 1 :] - x[: x.size - m + 1]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + m - 1])


def summarize_draws(
    draws: dict[str, np.ndarray],
    *,
    ci_prob: float | None = None,
    ci_kind: str | None = None,
    index_name: str = "order_parameter",
    units: str | None = None,
) -> pd.DataFrame:
    """One row per key: mean, median, sd, lower, upper of the draws (any shape, flattened).

    The table's ``attrs`` record ``ci_prob``, ``ci_kind`` (and ``units``) so no interval is unlabeled.
    """
    prob, kind = resolve_ci(ci_prob, ci_kind)
    rows = {}
    for key, d in draws.items():
        x = np.asarray(d, dtype=float).ravel()
        lo, hi = interval(x, prob, kind)
        rows[key] = {"mean": np.nanmean(x), "median": np.nanmedian(x), "sd": np.nanstd(x), "lower": lo, "upper": hi}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = index_name
    table.attrs.update({"ci_prob": prob, "ci_kind": kind})
    if units:
        table.attrs["units"] = units
    return table
