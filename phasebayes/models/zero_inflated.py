"""Zero-inflated binomial scores: k successes out of n trials, or a structural zero.

A score k ∈ {0, …, n} (an integer scale ``(lower, lower + n)``, k = score − lower) is a structural
zero with probability π, else Binomial(n, μ):

    log p(k) = log(π + (1 − π)(1 − μ)^n)                               if k = 0
             = log(1 − π) + log C(n, k) + k log μ + (n − k) log(1 − μ)  if k > 0

Summed over a cell, the log-likelihood depends on the data only through the number of zeros n₀,
the number of answers n, Σk and Σ_{k>0} log C(n, k) (a constant), so the model's cost grows with
cells, not answers. The change-point curve moves μ (logit link); π is one nuisance parameter per
order parameter with a Beta(1, 1) prior. Observations are the fractions k/n; levels are reported as
n·μ + lower, the expected score of an answer that is not a structural zero.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ..errors import ModelSpecError
from .family_base import NUMPY_MATH, CellStats, Family, integer_scale


class ZeroInflatedBinomial(Family):
    """Binomial(n, μ) counts with an extra probability π of a structural zero (nuisance ``zero_inflation``)."""

    name, link, nuisance, unit_mean, bounded_integer = "zero_inflated_binomial", "logit", "zero_inflation", True, True
    default_levels = (8.0, 3.0)  # expected successes of 10 trials (answers that are not structural zeros)
    sim_defaults = {"zero_inflation": 0.2, "n_trials": 10}

    def prepare(self, y, scale, *, threshold=None, below=True):
        """Integer scores on ``[lower, upper]`` -> fractions of successes k/n (n = upper − lower trials)."""
        if scale[1] - scale[0] < 1:
            raise ModelSpecError(f"likelihood '{self.name}' needs at least one trial: a scale (0, n) with n >= 1.")
        return integer_scale(self.name, y, scale) / (scale[1] - scale[0])

    def statistics(self, obs, categories=None):
        """``obs``: fractions k/n; ``categories``: n + 1 per order parameter ``(K,)`` (needed: the number of trials).

        ``s1`` = Σk, ``s2`` = number of zeros, ``const`` = Σ_{k>0} log C(n, k); ``n_categories`` = n + 1.
        """
        if categories is None:
            raise ModelSpecError(f"likelihood '{self.name}' needs the number of trials: a bounded scale (0, n).")
        finite = np.isfinite(obs)
        values = np.asarray(categories, dtype=int)
        trials = (values - 1.0).reshape(-1, *[1] * (obs.ndim - 1))
        k = np.round(np.where(finite, obs, 0.0) * trials)
        log_choose = special.gammaln(trials + 1) - special.gammaln(k + 1) - special.gammaln(trials - k + 1)
        const = np.where(finite & (k > 0), log_choose, 0.0).sum(-1)
        zeros = (finite & (k == 0)).sum(-1).astype(float)
        return CellStats(finite.sum(-1).astype(float), k.sum(-1), zeros, const, n_categories=values)

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        pi, n0 = nuisance, stats.s2
        trials = (stats.n_categories - 1.0)[:, None, None]
        positive = stats.n - n0
        zero = m.log(pi + (1.0 - pi) * m.exp(trials * m.log1p(-mu)))
        return (stats.const + n0 * zero + positive * m.log1p(-pi) + stats.s1 * m.log(mu)
                + (positive * trials - stats.s1) * m.log1p(-mu))

    def nuisance_prior(self, pm, priors, data_sd, dims):
        return pm.Beta(self.nuisance, alpha=1.0, beta=1.0, dims=dims)

    def to_score(self, mean, lo, hi, n):
        return lo + (hi - lo) * mean

    def score_unit(self, options):
        return float(options["n_trials"])

    def sim_scale(self, options):
        return (0.0, float(options["n_trials"]))

    def draw(self, rng, mu, nuisance, trials=None):
        n = np.asarray(trials).astype(int)
        k = rng.binomial(n, mu) / np.maximum(n, 1)
        return np.where(rng.random(np.shape(mu)) < nuisance, 0.0, k)

    def sim_scores(self, x, options, integer_scores=True):
        return np.round(x * options["n_trials"])
