"""Likelihood families written on per-cell sufficient statistics.

A *cell* is one (order parameter, step, prompt). Each family turns the raw scores of a cell
(shape ``(..., n_samples)``, NaN = missing) into a few sums, and evaluates the summed log-likelihood
of the cell from those sums. The same formula runs on numpy (post-hoc: pointwise log-likelihood,
tests) and on PyTensor (inside the PyMC model), so the model's cost grows with
steps × prompts, not with the number of samples.

Means ``mu`` are on the data's natural scale: a probability for ``beta`` (scaled score) and
``binomial``, the mean for ``normal``, the rate for ``poisson`` and ``negative_binomial``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from scipy import special

from ..errors import ModelSpecError

FAMILIES = ("beta", "binomial", "normal", "poisson", "negative_binomial", "ordinal")

ORDINAL_MAX_CATEGORIES = 11
"""``likelihood="auto"`` picks ``ordinal`` for integer scores on a bounded scale of at most this many values."""

NUMPY_MATH = SimpleNamespace(log=np.log, log1p=np.log1p, gammaln=special.gammaln, sqrt=np.sqrt, pi=np.pi)


def pytensor_math() -> SimpleNamespace:
    """The same math namespace on PyTensor (imported lazily)."""
    import pytensor.tensor as pt

    return SimpleNamespace(log=pt.log, log1p=pt.log1p, gammaln=pt.gammaln, sqrt=pt.sqrt, pi=np.pi)


@dataclass
class CellStats:
    """Sufficient statistics of every cell of one family, arrays of shape ``(K, T, P)``.

    ``n`` counts finite observations; ``s1``/``s2`` are family-specific sums (see
    :func:`sufficient_statistics`); ``const`` is the part of the log-likelihood that has no parameter.
    For ``negative_binomial``, ``values``/``value_counts`` list each order parameter's distinct
    observed counts and their multiplicities, shapes ``(K, V)`` (padded with zero counts).
    For ``ordinal``, ``counts`` holds the number of scores in each category, ``(K, T, P, C)`` (C = the
    largest number of categories of the group; unused categories of a shorter scale count zero), and
    ``n_categories`` the number of categories per order parameter, ``(K,)``.
    """

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    const: np.ndarray
    values: np.ndarray | None = None
    value_counts: np.ndarray | None = None
    counts: np.ndarray | None = None
    n_categories: np.ndarray | None = None


def squeeze_unit(x: np.ndarray, n_total: int) -> np.ndarray:
    """Map [0, 1] into (0, 1): ``(x (N − 1) + 1/2) / N`` (Smithson & Verkuilen 2006), N = observations."""
    n_total = max(int(n_total), 2)
    return (x * (n_total - 1) + 0.5) / n_total


def prepare_scores(family: str, y: np.ndarray, scale: tuple[float, float], *, threshold: float | None = None,
                   below: bool = True) -> np.ndarray:
    """Transform raw scores ``y`` (any shape, NaN = missing) into the family's observation scale.

    - ``beta``: rescale ``[lower, upper]`` to [0, 1] and squeeze into (0, 1) (so judge scores of
      exactly 0 or 100 are allowed);
    - ``binomial``: the indicator ``y < threshold`` (``below=True``) or ``y > threshold``; without a
      threshold the scores must already be 0/1;
    - ``poisson`` / ``negative_binomial``: non-negative integer counts required;
    - ``ordinal``: integer scores on the bounded scale ``[lower, upper]`` become category indices
      ``0 .. upper - lower`` (Likert 1-5 -> 0..4);
    - ``normal``: unchanged.
    Raises :class:`ModelSpecError` when the data cannot follow the family.
    """
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(y)
    if family == "beta":
        lo, hi = scale
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ModelSpecError(
                "likelihood 'beta' needs a bounded scale; declare it in from_dataframe(scales=...) "
                "or use likelihood='normal' / 'negative_binomial' for unbounded scores."
            )
        x = (y - lo) / (hi - lo)
        return np.where(finite, squeeze_unit(x, int(finite.sum())), np.nan)
    if family == "binomial":
        if threshold is not None:
            ind = (y < threshold) if below else (y > threshold)
            return np.where(finite, ind.astype(float), np.nan)
        vals = np.unique(y[finite])
        if not np.all(np.isin(vals, [0.0, 1.0])):
            raise ModelSpecError(
                "likelihood 'binomial' needs 0/1 scores or a threshold, e.g. "
                "ChangePointModel(ds, likelihood='binomial', threshold=30) for 'score < 30'."
            )
        return y
    if family in ("poisson", "negative_binomial"):
        v = y[finite]
        if np.any(v < 0) or np.any(v != np.round(v)):
            raise ModelSpecError(
                f"likelihood '{family}' needs non-negative integer counts (e.g. response length in tokens); "
                "use 'beta' for bounded scores or 'normal' for continuous ones."
            )
        return y
    if family == "normal":
        return y
    if family == "ordinal":
        lo, hi = scale
        v = y[finite]
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo != np.round(lo) or hi != np.round(hi):
            raise ModelSpecError(
                "likelihood 'ordinal' needs an integer bounded scale such as (1, 5); declare it in "
                "from_dataframe(scales={'name': (1, 5)})."
            )
        if np.any(v != np.round(v)) or np.any(v < lo) or np.any(v > hi):
            raise ModelSpecError(
                f"likelihood 'ordinal' needs integer scores between {lo:g} and {hi:g}; use 'beta' for "
                "continuous bounded scores."
            )
        if hi - lo < 2:
            raise ModelSpecError("likelihood 'ordinal' needs at least 3 categories; use 'binomial' for 0/1 scores.")
        return y - lo
    raise ModelSpecError(f"unknown likelihood {family!r}; choose one of {FAMILIES}.")


def n_categories(scale: tuple[float, float]) -> int:
    """Number of categories of an integer scale ``(lower, upper)``: ``upper - lower + 1``."""
    return int(round(scale[1] - scale[0])) + 1


def sufficient_statistics(family: str, obs: np.ndarray, categories: np.ndarray | None = None) -> CellStats:
    """Per-cell sums of ``obs`` with shape ``(K, T, P, N)`` (observation scale, NaN = missing).

    This is the one place where scores become per-cell statistics: everything downstream (the PyMC
    model, pointwise log-likelihoods, predictive checks) reads only the returned :class:`CellStats`.
    ``categories`` (ordinal only) gives the number of categories per order parameter, ``(K,)``
    (default: the largest observed index + 1).
    """
    finite = np.isfinite(obs)
    n = finite.sum(-1).astype(float)
    z = np.where(finite, obs, 0.0)
    zero = np.zeros_like(n)
    if family == "beta":
        safe = np.where(finite, obs, 0.5)
        s1 = np.where(finite, np.log(safe), 0.0).sum(-1)
        s2 = np.where(finite, np.log1p(-safe), 0.0).sum(-1)
        return CellStats(n, s1, s2, zero)
    if family == "binomial":
        return CellStats(n, z.sum(-1), zero, zero)
    if family == "normal":
        return CellStats(n, z.sum(-1), (z * z).sum(-1), -0.5 * n * np.log(2 * np.pi))
    if family == "poisson":
        return CellStats(n, z.sum(-1), zero, -np.where(finite, special.gammaln(z + 1), 0.0).sum(-1))
    if family == "negative_binomial":
        const = -np.where(finite, special.gammaln(z + 1), 0.0).sum(-1)
        k = obs.shape[0]
        uniq = [np.unique(obs[i][finite[i]], return_counts=True) for i in range(k)]
        v_max = max(len(u[0]) for u in uniq)
        values = np.zeros((k, v_max))
        counts = np.zeros((k, v_max))
        for i, (v, c) in enumerate(uniq):
            values[i, : len(v)] = v
            counts[i, : len(c)] = c
        return CellStats(n, z.sum(-1), zero, const, values, counts)
    if family == "ordinal":
        ncat = (np.asarray(categories, dtype=int) if categories is not None
                else np.array([int(np.nanmax(obs[i])) + 1 for i in range(obs.shape[0])]))
        cmax = int(ncat.max())
        idx = np.where(finite, obs, -1).astype(int)
        cat_counts = (idx[..., None] == np.arange(cmax)).sum(-2).astype(float)  # (K, T, P, C)
        return CellStats(n, zero, zero, zero, counts=cat_counts, n_categories=ncat)
    raise ModelSpecError(f"unknown likelihood {family!r}; choose one of {FAMILIES}.")


def cell_loglik(family: str, stats: CellStats, mu, nuisance, m=NUMPY_MATH):
    """Summed log-likelihood of each cell given its mean ``mu`` (broadcast against ``stats.n``).

    ``nuisance`` has one value per order parameter broadcast as ``(K, 1, 1)`` (or with leading draw
    dims): beta concentration φ, normal σ, negative-binomial α (variance μ + μ²/α); ignored for
    binomial and poisson. For ``negative_binomial`` the term Σ log Γ(y + α) − n log Γ(α) does not
    depend on the cell's mean and is left out here: the model adds it once per order parameter from
    the value counts (:func:`nb_shared_loglik`), pointwise checks per cell (:func:`nb_cell_shared_loglik`).
    """
    n, s1, s2, const = stats.n, stats.s1, stats.s2, stats.const
    if family == "beta":
        phi = nuisance
        a = mu * phi
        b = (1.0 - mu) * phi
        return n * (m.gammaln(phi) - m.gammaln(a) - m.gammaln(b)) + (a - 1.0) * s1 + (b - 1.0) * s2
    if family == "binomial":
        return s1 * m.log(mu) + (n - s1) * m.log1p(-mu)
    if family == "normal":
        sigma = nuisance
        return const - n * m.log(sigma) - (s2 - 2.0 * mu * s1 + n * mu * mu) / (2.0 * sigma * sigma)
    if family == "poisson":
        return const + s1 * m.log(mu) - n * mu
    if family == "negative_binomial":
        alpha = nuisance
        return const + n * alpha * (m.log(alpha) - m.log(alpha + mu)) + s1 * (m.log(mu) - m.log(alpha + mu))
    if family == "ordinal":
        raise ModelSpecError("the ordinal family's likelihood needs cut points: use phasebayes.models.ordinal.")
    raise ModelSpecError(f"unknown likelihood {family!r}; choose one of {FAMILIES}.")


def nb_shared_loglik(stats: CellStats, alpha, m=NUMPY_MATH):
    """Σ over all observations of one order parameter of log Γ(y + α) − log Γ(α); shape ``(K,)``.

    ``alpha`` has shape ``(K,)``; uses the distinct values and their counts, so the cost is the number
    of distinct counts, not the number of samples.
    """
    v = stats.values
    c = stats.value_counts
    total = c.sum(-1)
    return (c * m.gammaln(v + alpha[:, None])).sum(-1) - total * m.gammaln(alpha)


def nb_cell_shared_loglik(obs: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-cell Σ log Γ(y + α) − n log Γ(α) for negative binomial, numpy.

    ``obs`` is ``(K, T, P, N)``; ``alpha`` is ``(D, K)`` posterior draws. Returns ``(D, K, T, P)``.
    Uses per-cell counts of distinct values: cost grows with draws × cells × distinct values.
    """
    d, k = alpha.shape
    out = np.zeros((d, *obs.shape[:3]))
    for i in range(k):
        o = obs[i]
        finite = np.isfinite(o)
        vals = np.unique(o[finite])
        idx = np.searchsorted(vals, np.where(finite, o, vals[0]))
        counts = np.zeros((*o.shape[:2], len(vals)))
        np.add.at(counts, (*np.indices(o.shape)[:2], idx), finite.astype(float))
        lg = special.gammaln(vals[None, :] + alpha[:, i : i + 1]) - special.gammaln(alpha[:, i : i + 1])  # (D, V)
        out[:, i] = np.einsum("tpv,dv->dtp", counts, lg)
    return out
