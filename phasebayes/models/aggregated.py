"""Change-point likelihoods on aggregated run datasets (per-cell counts or summaries, no per-answer rows).

A run dataset built by :func:`phasebayes.from_counts` or :func:`phasebayes.from_summaries` carries the
attribute ``aggregated = "counts" | "summaries"`` and per-cell variables ``cell_n`` (answers judged),
``cell_sum`` (k successes, or n · mean) and, for summaries, ``cell_sumsq`` ((n − 1) sd² + n mean²), all
with dims ``(order_parameter, step, prompt)``. These are exactly the sufficient statistics of the
likelihood families (:mod:`phasebayes.models.families`), so the posterior equals the one of the expanded
per-answer data. Supported: counts → ``binomial``; summaries → ``normal``. The other families need
per-answer values (beta: Σ log y; negative binomial / poisson: the distinct counts) and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..errors import ModelSpecError, RunDataError
from .families import CellStats, get_family

__all__ = ["AGGREGATED_LIKELIHOODS", "AggregatedCells", "aggregated_form", "aggregated_cells", "require_per_answer"]

AGGREGATED_LIKELIHOODS = {"counts": ("binomial",), "summaries": ("normal",)}
"""Likelihood families each aggregated form supports."""


def aggregated_form(ds: xr.Dataset) -> str | None:
    """``"counts"``, ``"summaries"`` or None (per-answer scores) for a run dataset."""
    form = ds.attrs.get("aggregated")
    return str(form) if form in AGGREGATED_LIKELIHOODS else None


def require_per_answer(ds: xr.Dataset, what: str) -> None:
    """Raise :class:`RunDataError` if ``ds`` holds aggregated judgements (``what`` needs per-answer data)."""
    form = aggregated_form(ds)
    if form is not None:
        raise RunDataError(
            f"{what} needs per-answer scores (and responses / log-probabilities), but this run dataset holds "
            f"per-checkpoint {form} only (built with from_{form}). Fit ChangePointModel / GradientPeak on it, or "
            "build the run from per-answer rows (phasebayes.from_dataframe or read_judged_folder)."
        )


@dataclass
class AggregatedCells:
    """What :class:`~phasebayes.ChangePointModel` derives from the data, computed from cell statistics.

    ``obs``: cell means ``(K, T, P, 1)`` (NaN = no answer); ``stats``: :class:`CellStats` per family;
    ``n_total``: answers per order parameter ``(K,)``; ``per_cell``: mean answers per cell;
    ``data_mean`` / ``data_sd``: mean and (population) sd over all answers per order parameter, as the
    expanded data would give them.
    """

    likelihood: dict[str, str]
    obs: np.ndarray
    stats: dict[str, CellStats]
    n_total: np.ndarray
    per_cell: float
    data_mean: np.ndarray
    data_sd: np.ndarray


def _likelihood(form: str, ops: list[str], likelihood, threshold) -> dict[str, str]:
    allowed = AGGREGATED_LIKELIHOODS[form]
    if threshold is not None:
        raise ModelSpecError(f"threshold= needs per-answer scores; a run of aggregated {form} is already "
                             f"{'a count of successes' if form == 'counts' else 'per-cell means'}: drop threshold.")
    if isinstance(likelihood, dict):
        fams = {o: likelihood.get(o, "auto") for o in ops}
    else:
        fams = {o: likelihood for o in ops}
    fams = {o: (allowed[0] if f == "auto" else f) for o, f in fams.items()}
    bad = {o: f for o, f in fams.items() if f not in allowed}
    if bad:
        raise ModelSpecError(
            f"likelihood {sorted(set(bad.values()))} cannot be fitted on aggregated {form} (order parameter(s) "
            f"{sorted(bad)}): {form} support only {list(allowed)} ('auto' picks it). The other families need "
            "per-answer scores; build the run with phasebayes.from_dataframe to use them."
        )
    return fams


def aggregated_cells(ds: xr.Dataset, ops: list[str], likelihood="auto", threshold: float | None = None) -> AggregatedCells:
    """Sufficient statistics and data summaries of an aggregated run (see the module doc)."""
    form = aggregated_form(ds)
    if form is None:
        raise RunDataError("the run dataset does not hold aggregated judgements (attribute 'aggregated').")
    for name in ("cell_n", "cell_sum") + (("cell_sumsq",) if form == "summaries" else ()):
        if name not in ds:
            raise RunDataError(f"aggregated run dataset lacks '{name}'; rebuild it with phasebayes.from_{form}.")
    fams = _likelihood(form, ops, likelihood, threshold)
    sel = {"order_parameter": ops}
    n = ds["cell_n"].sel(sel).values.astype(float)
    s1 = ds["cell_sum"].sel(sel).values.astype(float)
    s2 = ds["cell_sumsq"].sel(sel).values.astype(float) if form == "summaries" else np.zeros_like(n)
    n = np.where(np.isfinite(n), n, 0.0)
    s1 = np.where(n > 0, s1, 0.0)
    s2 = np.where(n > 0, s2, 0.0)
    obs = np.where(n > 0, s1 / np.where(n > 0, n, 1.0), np.nan)[..., None]
    groups: dict[str, list[int]] = {}
    for k, op in enumerate(ops):
        groups.setdefault(fams[op], []).append(k)
    stats = {fam: get_family(fam).from_sums(n[ix], s1[ix], s2[ix]) for fam, ix in groups.items()}
    n_total = n.sum(axis=(1, 2))
    mean = s1.sum(axis=(1, 2)) / np.maximum(n_total, 1)
    second = np.array([get_family(fams[o]).mean_square(m, q) for o, m, q in
                       zip(ops, mean, s2.sum(axis=(1, 2)) / np.maximum(n_total, 1))])
    sd = np.sqrt(np.maximum(second - mean**2, 0.0))
    return AggregatedCells(fams, obs, stats, n_total.astype(int), float(n.mean()), mean, np.maximum(sd, 1e-6))
