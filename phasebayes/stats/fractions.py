"""Fractions ρ_k = D_k / D_full in [0, 1], from histogram draws and the total-change estimate.

The histogram model (:mod:`.histogram_posterior`) gives draws of D_k and D_joint; the total change
D_full comes from a different estimator (exact likelihoods, or a classifier lower bound) with an
estimate ``D̂`` and Monte-Carlo standard error ``se``. The data-processing inequality says
``D_joint ≤ D_full``: it is a constraint to condition on, not a value to report. Write
``D_full = D_joint + Δ`` with ``Δ ≥ 0`` and the prior

    Δ = 0 with probability ``P_COMPLETE`` (the order parameters together capture all of the change),
    Δ ~ Uniform(0, 1 − D_joint) otherwise,

and the likelihood ``D̂ ~ Normal(D_full, se)`` (the estimator is a mean over many samples). Each
histogram draw is weighted by the marginal likelihood of ``D̂`` given its D_joint (importance
resampling: draws with a joint change the total cannot hold are discounted), then Δ is drawn from its
conditional posterior (the point mass, or a truncated normal). Every draw then satisfies

    0 ≤ ρ_k = D_k / D_full ≤ ρ_joint = D_joint / D_full ≤ 1,

with point masses at 0 (no change of the order parameter) and 1 (nothing else changes), so equal-tailed
intervals can reach both ends. When D_full = 0 in a draw (nothing changes at all) ρ is undefined (NaN).
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, logsumexp
from scipy.stats import norm, truncnorm

__all__ = ["FractionDraws", "fraction_draws", "P_COMPLETE", "se_floor"]

P_COMPLETE = 0.5
"""Prior probability that the order parameters together capture all of the total change (Δ = 0)."""


def se_floor(n_terms: np.ndarray) -> np.ndarray:
    """Smallest standard error trusted for a mean of ``n_terms`` bounded terms: ``0.25 / sqrt(n)``.

    A sample SD of 0 from a handful of terms says the terms happened to agree, not that the mean is
    known exactly; terms lie in [−1, 1], so 0.25/√n is a quarter of the largest possible SE.
    """
    with np.errstate(divide="ignore"):
        return 0.25 / np.sqrt(np.maximum(n_terms, 1.0))


class FractionDraws:
    """Posterior draws of fractions and of the total change (see module docstring).

    Attributes
    ----------
    rho
        ``(n_draws, K + 1, ...)`` fractions of each order parameter and (last) the joint.
    d_full
        ``(n_draws, ...)`` total change consistent with the order parameters (``D_joint + Δ``).
    p_complete
        ``(...)`` posterior probability that Δ = 0.
    ess
        ``(...)`` effective number of histogram draws after importance weighting (small values mean
        the histogram model's joint change and the total-change estimate disagree).
    """

    def __init__(self, rho: np.ndarray, d_full: np.ndarray, p_complete: np.ndarray, ess: np.ndarray):
        self.rho, self.d_full, self.p_complete, self.ess = rho, d_full, p_complete, ess


def _log_diff_ndtr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Φ(a) − Φ(b)) for a ≥ b, stable in the tails (by symmetry, the upper tail uses −b, −a)."""
    upper = a > 0
    hi = np.where(upper, -b, a)
    lo = np.where(upper, -a, b)
    la, lb = log_ndtr(hi), log_ndtr(lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        return la + np.log1p(-np.exp(np.minimum(lb - la, 0.0)))


def fraction_draws(
    d: np.ndarray,
    d_full_hat: np.ndarray,
    d_full_se: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    p_complete: float = P_COMPLETE,
) -> FractionDraws:
    """Combine histogram draws with the total change into fraction draws.

    Parameters
    ----------
    d
        ``(n_draws, K + 1, ...)`` draws of D per order parameter and (last along axis 1) the joint, on
        the same scale as the total (e.g. prompt means).
    d_full_hat, d_full_se
        ``(...)`` estimate of the total change and its standard error.
    rng
        Random generator.
    p_complete
        Prior probability of Δ = 0.
    """
    rng = np.random.default_rng(rng)
    d = np.asarray(d, dtype=float)
    n = d.shape[0]
    dj = np.clip(d[:, -1], 0.0, 1.0)  # (n, ...)
    hat = np.broadcast_to(np.asarray(d_full_hat, dtype=float), dj.shape[1:])
    se = np.maximum(np.broadcast_to(np.asarray(d_full_se, dtype=float), dj.shape[1:]), 1e-9)
    # marginal likelihood of D̂ under the two branches, per draw (log space)
    log_zero = np.log(p_complete) + norm.logpdf(hat, dj, se)
    width = np.maximum(1.0 - dj, 1e-12)
    log_pos = np.log1p(-p_complete) + _log_diff_ndtr((hat - dj) / se, (hat - 1.0) / se) - np.log(width)
    log_w = np.logaddexp(log_zero, log_pos)  # (n, ...)
    finite = np.isfinite(dj)
    log_w = np.where(finite, log_w, -np.inf)
    norm_w = log_w - logsumexp(log_w, axis=0, keepdims=True)
    w = np.exp(norm_w)
    ess = 1.0 / np.sum(w**2, axis=0)
    # importance resampling, independently for every trailing index
    flat_w = w.reshape(n, -1)
    T = flat_w.shape[1]
    cdf = np.cumsum(flat_w, axis=0) + np.arange(T)[None, :]  # column t lives in [t, t + 1]: one sorted array
    u = (rng.random((n, T)) + np.arange(n)[:, None]) / n + np.arange(T)[None, :]  # stratified resampling
    pick = np.searchsorted(cdf.T.reshape(-1), u.T.reshape(-1)).reshape(T, n).T - np.arange(T)[None, :] * n
    pick = np.clip(pick, 0, n - 1)  # (n, T)
    cols = np.arange(flat_w.shape[1])[None, :]
    d_flat = d.reshape(n, d.shape[1], -1)
    d_res = d_flat[pick, :, cols].transpose(0, 2, 1)  # (n, K+1, T)
    dj_r = np.clip(d_res[:, -1], 0.0, 1.0)
    lz = log_zero.reshape(n, -1)[pick, cols]
    lw = log_w.reshape(n, -1)[pick, cols]
    take_zero = rng.random(dj_r.shape) < np.exp(lz - lw)
    hat_f = np.broadcast_to(hat.reshape(-1), dj_r.shape)
    se_f = np.broadcast_to(se.reshape(-1), dj_r.shape)
    mu = hat_f - dj_r
    lo, hi = (0.0 - mu) / se_f, (1.0 - dj_r - mu) / se_f
    hi = np.maximum(hi, lo + 1e-9)
    delta = truncnorm.rvs(lo, hi, loc=mu, scale=se_f, random_state=rng)
    delta = np.where(take_zero, 0.0, np.clip(delta, 0.0, 1.0 - dj_r))
    d_full = dj_r + delta
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(d_full[:, None] > 0, np.clip(d_res, 0.0, None) / d_full[:, None], np.nan)
    rho = np.minimum(rho, 1.0)  # guards rounding only: D_k ≤ D_joint ≤ D_full already holds per draw
    shape = dj.shape[1:]
    p_zero_post = np.exp(logsumexp(norm_w + (log_zero - log_w), axis=0))
    return FractionDraws(
        rho.reshape((n, d.shape[1]) + shape),
        d_full.reshape((n,) + shape),
        p_zero_post,
        ess.reshape(shape),
    )
