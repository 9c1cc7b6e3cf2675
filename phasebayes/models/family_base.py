"""The :class:`Family` base class: one likelihood family of the change-point model as one object.

A *cell* is one (order parameter, step, prompt). A family turns the raw scores of a cell (shape
``(..., n_samples)``, NaN = missing) into a few sums (:class:`CellStats`) and evaluates the summed
log-likelihood of the cell from those sums. The same formula runs on numpy (post-hoc: pointwise
log-likelihood, tests) and on PyTensor (inside the PyMC model): the math functions come in a namespace
``m`` (:data:`NUMPY_MATH` or :func:`pytensor_math`), so each family writes its likelihood once.

Means ``mu`` are on the family's natural scale (a probability for ``beta`` and ``binomial``, the
mean for ``normal``, the rate for counts); the link maps them to the linear predictor on which the
levels and their priors live. ``docs/changepoint-models.md`` explains how to add a family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np
from scipy import special

from ..errors import ModelSpecError

EPS = 1e-9
"""Probabilities are clipped into (EPS, 1 − EPS) before they enter a log-likelihood."""

def _inc_at(x: np.ndarray, idx: np.ndarray, v) -> np.ndarray:
    """``x`` with ``v`` added at positions ``idx`` of its last axis (a copy)."""
    x = np.array(x, dtype=float)
    x[..., idx] += v
    return x


NUMPY_MATH = SimpleNamespace(log=np.log, log1p=np.log1p, exp=np.exp, gammaln=special.gammaln, sqrt=np.sqrt, pi=np.pi,
                             betainc=special.betainc, inc_at=_inc_at)


def pytensor_math() -> SimpleNamespace:
    """The same math namespace on PyTensor (imported lazily)."""
    import pytensor.tensor as pt

    return SimpleNamespace(log=pt.log, log1p=pt.log1p, exp=pt.exp, gammaln=pt.gammaln, sqrt=pt.sqrt, pi=np.pi,
                           betainc=pt.betainc, inc_at=lambda x, idx, v: pt.inc_subtensor(x[..., idx], v))


@dataclass
class CellStats:
    """Sufficient statistics of every cell of one family, arrays of shape ``(K, T, P)``.

    ``n`` counts finite observations; ``s1``/``s2`` are family-specific sums (see each family's
    :meth:`Family.statistics`); ``const`` is the part of the log-likelihood that has no parameter.
    For ``negative_binomial``, ``values``/``value_counts`` list each order parameter's distinct
    observed counts and their multiplicities, shapes ``(K, V)`` (padded with zero counts).
    ``n_categories``, ``(K,)``: the number of possible values per order parameter of a bounded
    integer family (ordinal categories; 0..n trials of a binomial count); for ``ordinal``, ``counts``
    holds the number of scores in each category, ``(K, T, P, C)``. For ``beta``, ``at_lower``/``at_upper``
    count the scores exactly at the bounds per cell, ``(K, T, P)``, which enter as rounded (censored)
    observations within ``bound_width`` of the bound, ``(K,)`` on the unit scale (None: no score at a bound).
    """

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    const: np.ndarray
    values: np.ndarray | None = None
    value_counts: np.ndarray | None = None
    counts: np.ndarray | None = None
    n_categories: np.ndarray | None = None
    at_lower: np.ndarray | None = None
    at_upper: np.ndarray | None = None
    bound_width: np.ndarray | None = None

    @property
    def n_observed(self) -> np.ndarray:
        """Scores per cell, ``(K, T, P)``, including those at a bound (``n`` counts only the others for beta)."""
        return self.n if self.at_lower is None else self.n + self.at_lower + self.at_upper

    def take(self, index) -> "CellStats":
        """The statistics of the order parameters ``index`` (an index into the first axis of every array)."""
        return CellStats(**{f.name: (None if (v := getattr(self, f.name)) is None else np.asarray(v)[index])
                            for f in fields(self)})


def half_resolution(x: np.ndarray) -> float:
    """Half the smallest gap between distinct finite values of ``x`` (unit scale), in [1e-6, 0.25].

    A score recorded exactly at a bound of a rounded scale stands for the interval from the bound to half
    a rounding step inside it (a 0–100 integer score of 100 stands for 99.5–100): the width of that interval.
    """
    v = np.unique(np.round(x[np.isfinite(x)], 9))
    gap = np.diff(v)
    gap = gap[gap > 0]
    return float(np.clip(gap.min() / 2 if gap.size else 0.25, 1e-6, 0.25))


_LINKS = {  # name: (mean -> linear predictor (numpy), linear predictor -> mean (numpy), inverse on PyTensor)
    "identity": (lambda m: m, lambda x: x, lambda x, pt: x),
    "logit": (special.logit, special.expit, lambda x, pt: pt.sigmoid(x)),
    "log": (np.log, np.exp, lambda x, pt: pt.exp(x)),
}


def require_counts(name: str, y: np.ndarray) -> np.ndarray:
    """Check that the finite values of ``y`` are non-negative integers (count families)."""
    v = y[np.isfinite(y)]
    if np.any(v < 0) or np.any(v != np.round(v)):
        raise ModelSpecError(
            f"likelihood '{name}' needs non-negative integer counts (e.g. response length in tokens); "
            "use 'beta' for bounded scores or 'normal' for continuous ones."
        )
    return y


def integer_scale(name: str, y: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Integer scores on the bounded integer scale ``(lower, upper)`` as offsets ``0 .. upper − lower``."""
    lo, hi = scale
    v = y[np.isfinite(y)]
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo != np.round(lo) or hi != np.round(hi):
        raise ModelSpecError(
            f"likelihood '{name}' needs an integer bounded scale such as (1, 5); declare it in "
            "from_dataframe(scales={'name': (1, 5)})."
        )
    if np.any(v != np.round(v)) or np.any(v < lo) or np.any(v > hi):
        raise ModelSpecError(f"likelihood '{name}' needs integer scores between {lo:g} and {hi:g}; use 'beta' "
                             "for continuous bounded scores.")
    return y - lo


class Family(ABC):
    """One likelihood family. Subclasses set the attributes and override the methods they need.

    Attributes: ``name`` (the public identifier: ``likelihood="..."``, configs, saved attrs);
    ``link`` (``"logit"``, ``"log"`` or ``"identity"``: mean ↔ linear predictor); ``nuisance`` (the
    name of its one nuisance parameter per order parameter, used for the posterior variable and the
    simulator's keyword, or None); ``unit_mean`` (the mean is a probability, clipped into (EPS, 1 − EPS));
    ``bounded_integer`` (:meth:`statistics` needs the number of values of the integer scale);
    ``default_levels`` (the simulator's (before, after) expected score); ``sim_defaults`` (the
    simulator's family options, e.g. the nuisance value); ``has_cut_points`` (the levels are latent
    positions against per-order-parameter cut points, not means: the model builds such a family with
    its own graph, pins the population level before the transition at 0 and has no link-scale run
    shift); ``judge_error_model`` (the judge measurement model of ``measurement.py`` applies: bounded
    continuous judge scores); ``binary`` (scores are 0/1, so the mean of y² is the mean of y).
    """

    name: str = ""
    link: str = "identity"
    nuisance: str | None = None
    unit_mean: bool = False
    bounded_integer: bool = False
    default_levels: tuple[float, float] = (0.0, 1.0)
    sim_defaults: dict[str, float] = {}
    has_cut_points: bool = False
    judge_error_model: bool = False
    binary: bool = False

    def __repr__(self) -> str:
        return f"<likelihood family {self.name!r}>"

    # -- link ----------------------------------------------------------------
    def link_fn(self, mean):
        """Mean (natural scale) -> linear predictor, numpy."""
        return _LINKS[self.link][0](mean)

    def inv_link(self, x, pt=None):
        """Linear predictor -> mean; numpy, or PyTensor when the module ``pt`` is given."""
        return _LINKS[self.link][1](x) if pt is None else _LINKS[self.link][2](x, pt)

    def clip(self, mu, pt=None):
        """Keep a probability mean inside (EPS, 1 − EPS); other means unchanged."""
        if not self.unit_mean:
            return mu
        return np.clip(mu, EPS, 1 - EPS) if pt is None else pt.clip(mu, EPS, 1 - EPS)

    def mean_square(self, mean: np.ndarray, mean_of_squares: np.ndarray) -> np.ndarray:
        """E[y²] of the data from the pooled mean and mean of squares (0/1 families: E[y²] = E[y])."""
        return mean if self.binary else mean_of_squares

    # -- data ----------------------------------------------------------------
    def prepare(self, y: np.ndarray, scale: tuple[float, float], *, threshold: float | None = None,
                below: bool = True) -> np.ndarray:
        """Raw scores (any shape, NaN = missing) -> observation scale; :class:`ModelSpecError` if impossible."""
        return y

    @abstractmethod
    def statistics(self, obs: np.ndarray, categories: np.ndarray | None = None) -> CellStats:
        """Per-cell sums of ``obs`` with shape ``(K, T, P, N)`` (observation scale, NaN = missing)."""

    def from_sums(self, n: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> CellStats:
        """Cell statistics from aggregated judgements: answers ``n``, Σ y ``s1``, Σ y² ``s2``, each ``(K, T, P)``."""
        raise ModelSpecError(f"likelihood '{self.name}' needs per-answer scores, not per-cell counts or summaries.")

    @abstractmethod
    def loglik(self, stats: CellStats, mu, nuisance, m=NUMPY_MATH):
        """Summed log-likelihood of each cell given its mean ``mu`` (broadcast against ``stats.n``).

        ``nuisance`` has one value per order parameter broadcast as ``(K, 1, 1)`` (or with leading draw
        dims); ``m`` is the math namespace (numpy or PyTensor).
        """

    def shared_loglik(self, stats: CellStats, nuisance, m=NUMPY_MATH):
        """Log-likelihood terms that depend only on the nuisance, summed per order parameter (default 0)."""
        return 0.0

    def cell_shared_loglik(self, obs: np.ndarray, nuisance: np.ndarray):
        """The same terms per cell for pointwise checks: ``obs`` (K, T, P, N), ``nuisance`` (D, K) (default 0)."""
        return 0.0

    # -- priors --------------------------------------------------------------
    def level_prior(self, priors: dict, data_mean: float, data_sd: float) -> tuple[float, float]:
        """(mean, sd) of the Normal prior of a population level on the link scale."""
        return 0.0, priors["level_sd_link"]

    def prompt_level_scale(self, priors: dict, data_sd: float) -> float:
        """HalfNormal scale of the prompt deviations of the levels (link scale)."""
        return priors["prompt_level_sd_link"]

    def run_level_scale(self, priors: dict, data_sd: float) -> float:
        """HalfNormal scale of the run-to-run deviations of the levels (link scale; multi-run model)."""
        return priors["run_level_sd_link"]

    def nuisance_prior(self, pm, priors: dict, data_sd: np.ndarray, dims: str):
        """The PyMC random variable of the nuisance parameter (one per order parameter along ``dims``)."""
        return None

    # -- scale and draws -----------------------------------------------------
    def to_score(self, mean, lo: float, hi: float, n: int):
        """Mean on the observation scale -> score units (``n``: observations of the order parameter)."""
        return mean

    def score_unit(self, options: dict) -> float:
        """Simulator: score units per unit of the natural mean (100 for 0–100 beta scores)."""
        return 1.0

    def sim_scale(self, options: dict) -> tuple[float, float]:
        """Simulator: the (lower, upper) scale of the simulated scores (NaN: unbounded)."""
        return (np.nan, np.nan)

    def draw(self, rng: np.random.Generator, mu: np.ndarray, nuisance, trials=None) -> np.ndarray:
        """Random observations (observation scale) with means ``mu`` (any shape) and the nuisance value(s).

        ``trials``: the largest value of a bounded count family (broadcast against ``mu``); ignored otherwise.
        Families without a per-answer draw (ordinal: simulated from its cut points in ``simulate.py``) say so.
        """
        raise ModelSpecError(f"likelihood '{self.name}' has no per-answer draw; simulate it with "
                             f"phasebayes.simulate_run(likelihood='{self.name}').")

    def sim_scores(self, x: np.ndarray, options: dict, integer_scores: bool = True) -> np.ndarray:
        """Simulator: observations from :meth:`draw` -> scores in score units."""
        return x
