"""Likelihood families of the change-point model: the registry and the functional interface.

Each family is one :class:`~phasebayes.models.family_base.Family` object (link, data checks,
sufficient statistics, log-likelihood on numpy and PyTensor, nuisance prior, random draws); the
string name (``likelihood="beta"``) is the public, config and saved-attrs identifier and
:func:`get_family` turns it into the object. The functions below keep the older call style
(``cell_loglik("beta", ...)``) and forward to the family's methods.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelSpecError
from .family_base import EPS, NUMPY_MATH, CellStats, Family, half_resolution, pytensor_math  # noqa: F401  (re-exported)
from .family_kinds import Beta, Binomial, NegativeBinomial, Normal, Ordinal, Poisson
from .zero_inflated import ZeroInflatedBinomial

FAMILIES: dict[str, Family] = {f.name: f for f in (Beta(), Binomial(), Normal(), Poisson(), NegativeBinomial(),
                                                   Ordinal(), ZeroInflatedBinomial())}
"""Every likelihood family by name."""

ORDINAL_MAX_CATEGORIES = 11
"""``likelihood="auto"`` picks ``ordinal`` for integer scores on a bounded scale of at most this many values."""


def get_family(name: str | Family) -> Family:
    """The :class:`Family` called ``name``; :class:`ModelSpecError` listing the known names otherwise."""
    if isinstance(name, Family):
        return name
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ModelSpecError(f"unknown likelihood {name!r}; choose one of {tuple(FAMILIES)}.") from None


def prepare_scores(family: str, y: np.ndarray, scale: tuple[float, float], *, threshold: float | None = None,
                   below: bool = True) -> np.ndarray:
    """Raw scores ``y`` (any shape, NaN = missing) on the family's observation scale (:meth:`Family.prepare`)."""
    return get_family(family).prepare(np.asarray(y, dtype=float), scale, threshold=threshold, below=below)


def n_categories(scale: tuple[float, float]) -> int:
    """Number of values of an integer scale ``(lower, upper)``: ``upper - lower + 1``."""
    return int(round(scale[1] - scale[0])) + 1


def sufficient_statistics(family: str, obs: np.ndarray, categories: np.ndarray | None = None) -> CellStats:
    """Per-cell sums of ``obs`` with shape ``(K, T, P, N)`` (:meth:`Family.statistics`).

    This is the one place where scores become per-cell statistics: everything downstream (the PyMC
    model, pointwise log-likelihoods, predictive checks) reads only the returned :class:`CellStats`.
    ``categories``: number of values per order parameter ``(K,)`` for bounded integer families.
    """
    return get_family(family).statistics(obs, categories)


def cell_loglik(family: str, stats: CellStats, mu, nuisance, m=NUMPY_MATH):
    """Summed log-likelihood of each cell given its mean ``mu`` (:meth:`Family.loglik`)."""
    return get_family(family).loglik(stats, mu, nuisance, m)


def nb_shared_loglik(stats: CellStats, alpha, m=NUMPY_MATH):
    """Negative binomial: Σ log Γ(y + α) − log Γ(α) per order parameter, ``(K,)``."""
    return FAMILIES["negative_binomial"].shared_loglik(stats, alpha, m)


def nb_cell_shared_loglik(obs: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Negative binomial: per-cell Σ log Γ(y + α) − n log Γ(α), ``(D, K, T, P)`` for ``alpha`` (D, K)."""
    return FAMILIES["negative_binomial"].cell_shared_loglik(obs, alpha)
