"""Bayesian model of the left/right score histograms: posterior draws of D per order parameter and joint.

At one boundary, each prompt ``p`` has counts ``n_L[p, c]`` and ``n_R[p, c]`` of its left- and
right-window samples over the joint cells ``c`` of the coarsened order parameters
(:mod:`.score_bins`). The model (``docs/decomposition.md`` gives the reasoning):

- **Histograms.** Around the prompt's centre ``m_p`` (its pooled left+right histogram, smoothed
  towards the run's pooled histogram with one pseudo-count), either the two windows have their own
  histograms, ``π_L^p, π_R^p ~ Dirichlet(β_p · m_p)`` independently (*changed*), or they share one,
  ``π_L^p = π_R^p ~ Dirichlet(β_p · m_p)`` (*unchanged*: the no-change limit of the first as β → ∞).
  Comparing the two at the same β is the classical Bayesian two-sample test of multinomials: the
  separate histograms pay for their extra freedom, so a prompt whose windows agree is unchanged.
- **Shared across prompts.** ``β_p`` is uniform on a log grid (0.5 … 512); each prompt is changed
  with probability ``θ``, common to all prompts, ``θ ~ Uniform(0, 1)``: prompts that move together
  make θ ≈ 1 and share strength, prompts that move apart (some unchanged) give an intermediate θ.
  The posterior is sampled exactly: θ from its grid posterior (the likelihood is a polynomial in θ),
  then each prompt's changed/unchanged state and β, then the conjugate Dirichlet posteriors of π.
- **No change in the population.** For the joint and for each order parameter's own histogram, a
  population hypothesis H0 "no prompt changes at this boundary" (θ = 0) against the model above,
  prior probability ``P_NO_CHANGE`` = ½, compared by their marginal likelihoods (closed-form
  Dirichlet-multinomial, θ integrated on a grid). A draw takes D = 0 for an order parameter with the
  posterior probability of its H0 (coupled so that a joint without change forces every order
  parameter to D = 0).

From each posterior draw of (π_L, π_R) over the joint cells, D_joint is the divergence of the two
histograms and D_k that of their marginals, so **0 ≤ D_k ≤ D_joint holds in every draw**
(data-processing inequality for f-divergences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, logsumexp, xlogy

from .divergence import discrete_divergence

__all__ = ["HistogramDraws", "histogram_posterior", "BETA_GRID", "P_NO_CHANGE"]

BETA_GRID = np.geomspace(0.5, 512.0, 11)
"""Concentrations β of the mixture components (each appears changed and unchanged)."""
P_NO_CHANGE = 0.5
"""Prior probability of the population no-change hypothesis, per order parameter and for the joint."""


@dataclass
class HistogramDraws:
    """Posterior draws of the histogram model at a set of boundaries.

    Attributes
    ----------
    d
        ``(n_draws, n_boundaries, K + 1, n_prompts)``: D of each order parameter's marginal and (last)
        the joint, per prompt; NaN where a prompt has no sample on one side.
    p_no_change
        ``(n_boundaries, K + 1)``: posterior probability of the population no-change hypothesis.
    """

    d: np.ndarray
    p_no_change: np.ndarray


def _log_dirmult(n: np.ndarray, a: np.ndarray) -> np.ndarray:
    """log Dirichlet-multinomial probability of an ordered sequence with counts ``n`` (last axis)."""
    return gammaln(a.sum(-1)) - gammaln(a.sum(-1) + n.sum(-1)) + (gammaln(a + n) - gammaln(a)).sum(-1)


def _centres(n_left: np.ndarray, n_right: np.ndarray) -> np.ndarray:
    """Prompt centres m_p: pooled histogram + one pseudo-count spread as the run-wide pooled histogram."""
    pooled = n_left + n_right  # (n_b, P, C)
    base = pooled.sum(1, keepdims=True) + 1.0 / pooled.shape[-1]
    base = base / base.sum(-1, keepdims=True)
    m = pooled + base
    return m / m.sum(-1, keepdims=True)


def _component_loglik(n_left: np.ndarray, n_right: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """log p(n_L, n_R | component) per boundary and prompt: ``(n_b, P, 2J)``; components ``0..J-1`` are
    (β_j, changed), ``J..2J-1`` (β_j, unchanged)."""
    a = BETA_GRID[:, None, None, None] * centre[None]  # (J, n_b, P, C)
    changed = _log_dirmult(n_left[None], a) + _log_dirmult(n_right[None], a)
    same = _log_dirmult((n_left + n_right)[None], a)
    return np.concatenate([np.moveaxis(changed, 0, -1), np.moveaxis(same, 0, -1)], axis=-1)


_THETA = (np.arange(200) + 0.5) / 200  # midpoint grid of θ on (0, 1)


def _prompt_loglik(loglik: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p(data_p | changed) and log p(data_p | unchanged), β averaged over its grid: ``(n_b, P)`` each."""
    J = len(BETA_GRID)
    return (logsumexp(loglik[..., :J], axis=-1) - np.log(J), logsumexp(loglik[..., J:], axis=-1) - np.log(J))


def _theta_loglik(l_chg: np.ndarray, l_same: np.ndarray) -> np.ndarray:
    """log Π_p (θ p_chg + (1 − θ) p_same) on the θ grid: ``(n_b, n_theta)``."""
    return np.logaddexp(np.log(_THETA)[None, None, :] + l_chg[..., None],
                        np.log1p(-_THETA)[None, None, :] + l_same[..., None]).sum(1)


def _p_no_change(loglik: np.ndarray) -> np.ndarray:
    """Posterior probability of H0 (θ = 0: every prompt unchanged) per boundary; ``loglik`` ``(n_b, P, 2J)``."""
    l_chg, l_same = _prompt_loglik(loglik)
    log_h1 = logsumexp(_theta_loglik(l_chg, l_same), axis=-1) - np.log(len(_THETA))
    log_h0 = l_same.sum(-1)
    prior = np.log(P_NO_CHANGE) - np.log1p(-P_NO_CHANGE)
    return 1.0 / (1.0 + np.exp(-np.clip(log_h0 - log_h1 + prior, -700, 700)))


def _draw_components(loglik: np.ndarray, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Exact posterior draws of every prompt's component: ``(n_draws, n_b, P)`` int (``< J`` = changed)."""
    J = len(BETA_GRID)
    l_chg, l_same = _prompt_loglik(loglik)
    lt = _theta_loglik(l_chg, l_same)  # (n_b, n_theta)
    pt = np.exp(lt - logsumexp(lt, axis=-1, keepdims=True))
    n_b, P = l_chg.shape
    theta = np.empty((n_draws, n_b))
    for b in range(n_b):
        theta[:, b] = rng.choice(_THETA, size=n_draws, p=pt[b] / pt[b].sum())
    logit_chg = np.log(theta)[..., None] + l_chg[None] - (np.log1p(-theta)[..., None] + l_same[None])
    changed = rng.random((n_draws, n_b, P)) < 1.0 / (1.0 + np.exp(-np.clip(logit_chg, -700, 700)))
    # β given the state: categorical over the grid, by the Gumbel-max trick
    g = rng.gumbel(size=(n_draws, n_b, P, J))
    j_chg = np.argmax(loglik[None, ..., :J] + g, axis=-1)
    j_same = np.argmax(loglik[None, ..., J:] + g, axis=-1)
    return np.where(changed, j_chg, J + j_same)


def _dirichlet(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_gamma(alpha)
    return g / g.sum(-1, keepdims=True)


def histogram_posterior(
    n_left: np.ndarray,
    n_right: np.ndarray,
    marginals: Sequence[np.ndarray],
    measure: str = "linear",
    *,
    n_draws: int = 400,
    rng: np.random.Generator | None = None,
) -> HistogramDraws:
    """Posterior draws of D per order parameter and joint at every boundary given.

    Parameters
    ----------
    n_left, n_right
        ``(n_boundaries, n_prompts, n_joint_cells)`` pooled counts of the left and right windows.
    marginals
        K matrices ``(n_joint_cells, n_bins_k)`` mapping joint cells to each order parameter's bins.
    measure
        ``"linear"``, ``"tv"`` or ``"js"``.
    n_draws
        Posterior draws.
    rng
        Random generator.
    """
    rng = np.random.default_rng(rng)
    n_left = np.asarray(n_left, dtype=float)
    n_right = np.asarray(n_right, dtype=float)
    n_b, P, C = n_left.shape
    K = len(marginals)
    has = (n_left.sum(-1) > 0) & (n_right.sum(-1) > 0)  # (n_b, P)
    centre = _centres(n_left, n_right)
    loglik = np.where(has[..., None], _component_loglik(n_left, n_right, centre), 0.0)

    p0 = np.empty((n_b, K + 1))
    p0[:, K] = _p_no_change(loglik)
    for k, M in enumerate(marginals):
        ml, mr, mc = n_left @ M, n_right @ M, centre @ M
        p0[:, k] = _p_no_change(np.where(has[..., None], _component_loglik(ml, mr, mc), 0.0))

    comp = _draw_components(loglik, n_draws, rng)  # (n_draws, n_b, P)
    J = len(BETA_GRID)
    beta = BETA_GRID[comp % J]
    d = np.zeros((n_draws, n_b, K + 1, P))
    for b in range(n_b):
        changed = comp[:, b] < J  # (n_draws, P)
        a = beta[:, b][..., None] * centre[b][None]  # (n_draws, P, C)
        pl = _dirichlet(a + n_left[b][None], rng)
        pr = _dirichlet(a + n_right[b][None], rng)
        pr = np.where(changed[..., None], pr, pl)  # unchanged: the two windows share one histogram
        d[:, b, K] = discrete_divergence(pl, pr, measure)
        for k, M in enumerate(marginals):
            d[:, b, k] = discrete_divergence(pl @ M, pr @ M, measure)
    # population no-change switches, coupled through one uniform per draw: a joint without change
    # forces every order parameter to D = 0, and each order parameter is 0 with its own probability
    u = rng.random((n_draws, n_b, 1))
    zero = u < np.maximum(p0, p0[:, K:])[None]  # (n_draws, n_b, K + 1)
    d = np.where(zero[..., None], 0.0, d)
    d = np.where(has[None, :, None, :], d, np.nan)
    return HistogramDraws(d, p0)
