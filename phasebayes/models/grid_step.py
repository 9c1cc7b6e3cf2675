"""Exact grid posterior of one order parameter's sigmoid transition, for fast fits inside loops.

Model (per order parameter): the mean score of checkpoint ``t`` is
``a + (b − a) · expit((t − τ) / w)``; the answers of checkpoint ``t`` are independent with variance
``σ_t²`` (the checkpoint's own sample variance shrunk towards the pooled one, so the larger spread of
bounded scores near the middle of the scale is respected). The levels ``(a, b)`` have a wide
Normal prior and enter linearly, so for every grid point ``(τ, w)`` they are integrated out in closed
form (Bayesian linear regression with design ``x_t = (1 − s_t, s_t)``); ``τ`` is uniform over the
checkpoint range and ``w`` log-uniform. The result is the exact posterior of ``(τ, w)`` on the grid,
given ``σ_t`` — no MCMC, milliseconds per fit. Only per-checkpoint sums enter
(:func:`regression_sums`: answers ``n_t``, Σ y, Σ y²), so the cost does not grow with the answers.

It ignores prompt-to-prompt differences (they are part of ``σ_t``); it is the working model of
adaptive evaluation (``phasebayes/adaptive.py``, ``docs/adaptive.md``), whose final answer comes from
the full hierarchical model. ``tests/test_adaptive.py`` checks the closed form against numerical
integration of the levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

SHRINK_ANSWERS = 10.0
"""Prior weight (in answers) of the pooled variance in each checkpoint's variance."""


@dataclass(frozen=True)
class Grid:
    """The (τ, w) grid: ``tau`` (G_τ,) and ``width`` (G_w,), both in training steps."""

    tau: np.ndarray
    width: np.ndarray

    @classmethod
    def over(cls, steps: np.ndarray, n_tau: int | None = None, n_width: int = 10) -> Grid:
        """τ evenly over [first, last step] (default: 4 points per checkpoint interval, 161–801 points);
        w log-evenly from 1/200 to 1/4 of the span."""
        lo, hi = float(np.min(steps)), float(np.max(steps))
        if n_tau is None:
            n_tau = int(np.clip(4 * (len(np.unique(steps)) - 1) + 1, 161, 801))
        span = max(hi - lo, 1.0)
        return cls(np.linspace(lo, hi, n_tau), np.geomspace(span / 200, span / 4, n_width))

    def curves(self, t: np.ndarray) -> np.ndarray:
        """The sigmoid ``s`` at steps ``t`` for every grid point, ``(G_τ, G_w, len(t))``."""
        z = (np.asarray(t, float)[None, None, :] - self.tau[:, None, None]) / self.width[None, :, None]
        return special.expit(z)


@dataclass
class Sums:
    """Per-checkpoint sums of one order parameter: ``steps``, answers ``n``, Σ y ``s1``, Σ y² ``s2``, variance ``var``."""

    steps: np.ndarray
    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    var: np.ndarray
    pooled_var: float


def regression_sums(steps: np.ndarray, scores: np.ndarray) -> Sums:
    """Sums of the scores ``(T, N)`` (NaN = missing; all prompts' answers of a checkpoint on one row).

    Checkpoints without answers are dropped. ``var``: each checkpoint's variance shrunk towards the
    pooled within-checkpoint variance with weight :data:`SHRINK_ANSWERS`.
    """
    y = np.asarray(scores, float)
    ok = np.isfinite(y)
    n = ok.sum(-1).astype(float)
    keep = n > 0
    y, ok, n, steps = y[keep], ok[keep], n[keep], np.asarray(steps, float)[keep]
    s1 = np.where(ok, y, 0.0).sum(-1)
    s2 = np.where(ok, y * y, 0.0).sum(-1)
    ss = s2 - s1**2 / np.maximum(n, 1)  # within-checkpoint sum of squares
    dof = max(float((n - 1).clip(min=0).sum()), 1.0)
    finite = y[ok]
    pooled = float(ss.sum() / dof) if dof > 1 else float(np.var(finite)) if finite.size > 1 else 1.0
    pooled = max(pooled, 1e-6 * max(float(np.var(finite)) if finite.size > 1 else 1.0, 1e-12))
    var = (SHRINK_ANSWERS * pooled + np.maximum(ss, 0.0)) / (SHRINK_ANSWERS + np.maximum(n - 1, 0))
    return Sums(steps, n, s1, s2, np.maximum(var, 1e-9), pooled)


def _marginal(grid: Grid, sums: Sums, prior_sd: float | None):
    """Per grid point: log p(y | τ, w) up to constants shared with the no-change model, and the levels."""
    s = grid.curves(sums.steps)  # (Gt, Gw, T)
    wgt = sums.n / sums.var
    x0, x1 = 1.0 - s, s
    mean_y = float(sums.s1.sum() / max(sums.n.sum(), 1.0))
    if prior_sd is None:
        prior_sd = 10.0 * max(np.sqrt(sums.pooled_var), 1e-3)
    p = 1.0 / prior_sd**2
    a00 = (wgt * x0 * x0).sum(-1) + p
    a01 = (wgt * x0 * x1).sum(-1)
    a11 = (wgt * x1 * x1).sum(-1) + p
    rhs = sums.s1 / sums.var
    b0 = (rhs * x0).sum(-1) + p * mean_y
    b1 = (rhs * x1).sum(-1) + p * mean_y
    det = a00 * a11 - a01**2
    m0 = (a11 * b0 - a01 * b1) / det
    m1 = (a00 * b1 - a01 * b0) / det
    # Gaussian integral over (a, b): −½ log|Λ| + ½ mᵀΛm − ½ log|Σ0| − ½ μ0ᵀΣ0⁻¹μ0 (−½ Σ y²/σ² shared)
    logml = -0.5 * np.log(det) + 0.5 * (m0 * b0 + m1 * b1) + np.log(p) - p * mean_y**2
    null_prec = wgt.sum() + p
    null_b = rhs.sum() + p * mean_y
    null = -0.5 * np.log(null_prec) + 0.5 * null_b**2 / null_prec + 0.5 * np.log(p) - 0.5 * p * mean_y**2
    return logml, np.stack([m0, m1], axis=-1), float(null)


def sums_by_step(scores: Mapping[float, Sequence[float]]) -> Sums:
    """:func:`regression_sums` of scores given per checkpoint (step → that checkpoint's scores, any number)."""
    steps = sorted(scores)
    y = np.full((len(steps), max([1, *(len(scores[s]) for s in steps)])), np.nan)
    for i, s in enumerate(steps):
        y[i, :len(scores[s])] = np.asarray(scores[s], float)
    return regression_sums(np.asarray(steps, float), y)


def log_posterior(grid: Grid, sums: Sums, prior_sd: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised log posterior of (τ, w), ``(G_τ, G_w)``, and the posterior mean levels ``(G_τ, G_w, 2)``.

    The levels' prior is Normal(mean of the scores, ``prior_sd``²) each (default: 10 × the score sd).
    """
    logml, levels, _ = _marginal(grid, sums, prior_sd)
    return logml - special.logsumexp(logml), levels


def log_bayes_factor(grid: Grid, sums: Sums, prior_sd: float | None = None) -> float:
    """log p(y | a transition) − log p(y | one constant level), same priors and noise (τ, w uniform on the grid)."""
    logml, _, null = _marginal(grid, sums, prior_sd)
    return float(special.logsumexp(logml) - np.log(logml.size) - null)


def tau_marginal(grid: Grid, logp: np.ndarray) -> np.ndarray:
    """Posterior probabilities of the τ grid points, ``(G_τ,)`` (sum 1)."""
    return np.exp(special.logsumexp(logp, axis=1))


def tau_draws(grid: Grid, logp: np.ndarray, n: int = 4000, seed: int = 0) -> np.ndarray:
    """``n`` draws of τ (training steps): grid points by probability, spread uniformly within their cell."""
    rng = np.random.default_rng(seed)
    prob = tau_marginal(grid, logp)
    idx = rng.choice(len(grid.tau), size=n, p=prob / prob.sum())
    half = (grid.tau[1] - grid.tau[0]) / 2 if len(grid.tau) > 1 else 0.0
    return np.clip(grid.tau[idx] + rng.uniform(-half, half, n), grid.tau[0], grid.tau[-1])


def sd(grid: Grid, prob_tau: np.ndarray) -> np.ndarray:
    """Posterior sd of τ from τ-grid probabilities ``(..., G_τ)``."""
    mean = (prob_tau * grid.tau).sum(-1)
    return np.sqrt(np.maximum((prob_tau * grid.tau**2).sum(-1) - mean**2, 0.0))


def expected_sd_after(grid: Grid, sums: Sums, logp: np.ndarray, levels: np.ndarray, candidates: np.ndarray,
                      n_new: float, n_outcomes: int = 48, seed: int = 0) -> np.ndarray:
    """Expected posterior sd of τ after ``n_new`` more answers at each candidate step, ``(C,)``.

    Preposterior Monte Carlo with common random numbers: draw ``(τ, w)`` from the posterior and the
    mean of the new answers from its predictive, update the grid weights with that mean's likelihood
    (levels held at their per-grid-point posterior mean) and average the sd of τ.
    """
    rng = np.random.default_rng(seed)
    flat = np.exp(logp).ravel()
    flat = flat / flat.sum()
    g_draw = rng.choice(flat.size, size=n_outcomes, p=flat)  # (J,)
    z = rng.standard_normal(n_outcomes)
    keep = np.flatnonzero(flat > 1e-10 * flat.max())  # grid points with posterior mass (exact up to 1e-10)
    g = np.searchsorted(keep, g_draw)
    w = flat[keep] / flat[keep].sum()
    tau = np.repeat(grid.tau, len(grid.width))[keep]
    lv = levels.reshape(flat.size, 2)[keep]
    noise = np.sqrt(sums.pooled_var / n_new)
    out = np.empty(len(candidates))
    for c0 in range(0, len(candidates), 16):  # chunks bound the (J, G, C) array's memory
        cand = np.asarray(candidates[c0:c0 + 16], float)
        s = grid.curves(cand).reshape(flat.size, -1)[keep]  # (G, C)
        mu = lv[:, :1] + (lv[:, 1:] - lv[:, :1]) * s  # predicted mean at each candidate
        ybar = mu[g] + noise * z[:, None]  # (J, C)
        post = np.log(w)[None, :, None] - 0.5 * ((ybar[:, None, :] - mu[None]) / noise) ** 2  # (J, G, C)
        post = np.exp(post - post.max(axis=1, keepdims=True))
        post = post / post.sum(axis=1, keepdims=True)
        mean = np.einsum("jgc,g->jc", post, tau)
        var = np.einsum("jgc,g->jc", post, tau**2) - mean**2
        out[c0:c0 + 16] = np.sqrt(np.maximum(var, 0.0)).mean(axis=0)
    return out
