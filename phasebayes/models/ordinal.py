"""Ordinal judge scores (Likert 1-5, 1-10, ...): cumulative-logit likelihood with cut points.

A score with C categories (index c = 0..C-1, i.e. score - lower end of the scale) follows

    P(y <= c | eta) = logistic(kappa_c - eta),   kappa_0 < ... < kappa_{C-2}   (cut points)

with ``eta`` the latent level on the logit scale. The change-point model mixes the two level
distributions: at step t a cell's category probabilities are

    p(t) = (1 - s(t)) p(eta_before) + s(t) p(eta_after)

so the expected score is ``A + (B - A) s(t)`` with A, B the expected scores of the two levels —
tau is the step where the expected score is halfway, exactly as for the other families. The population
latent level before the transition is fixed at 0 (the cut points carry the location; an ordered-logit
model has no separate intercept); prompt offsets and the level after the transition are free.

Everything works from per-cell category counts (:func:`~phasebayes.models.families.sufficient_statistics`),
so the cost grows with cells x categories, not with samples.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from scipy import special

__all__ = ["category_probs", "ordinal_loglik", "cut_prior", "expected_category"]

_TINY = 1e-12


def category_probs(eta, cuts, m: SimpleNamespace | None = None):
    """Category probabilities, shape ``(..., C)``, from ``eta`` (...) and ``cuts`` (..., C - 1).

    ``m`` = None computes on numpy; pass ``pytensor.tensor`` (as ``m``) to build a PyTensor graph.
    """
    if m is None:
        cdf = special.expit(np.asarray(cuts) - np.asarray(eta)[..., None])
        ones = np.ones_like(cdf[..., :1])
        return np.diff(np.concatenate([0.0 * ones, cdf, ones], axis=-1), axis=-1)
    cdf = m.sigmoid(cuts - eta[..., None])
    ones = m.ones_like(cdf[..., :1])
    return m.concatenate([cdf[..., :1], cdf[..., 1:] - cdf[..., :-1], ones - cdf[..., -1:]], axis=-1)


def ordinal_loglik(counts, probs, m=None):
    """Summed log-likelihood of each cell, ``Σ_c counts_c log p_c`` over the last axis."""
    if m is None:
        return (counts * np.log(np.maximum(probs, _TINY))).sum(-1)
    return (counts * m.log(m.maximum(probs, _TINY))).sum(axis=-1)


def expected_category(eta, cuts) -> np.ndarray:
    """Expected category index ``Σ_c c p_c`` (numpy), shape of ``eta`` broadcast with ``cuts[..., 0]``."""
    p = category_probs(eta, cuts)
    return (p * np.arange(p.shape[-1])).sum(-1)


def cut_prior(counts: np.ndarray, n_cat: int, sd: float = 2.0) -> tuple[np.ndarray, float]:
    """Prior mean (strictly increasing, length C - 1) and sd of the cut points of one order parameter.

    Centred on the logits of the early checkpoints' cumulative category proportions (the first third
    of the steps, where the latent level is the before level, pinned at 0), smoothed by half a count
    per category so that unobserved categories still get ordered, finite cut points.
    ``counts`` is the order parameter's ``(T, P, C)`` category counts.
    """
    early = counts[: max(1, counts.shape[0] // 3), :, :n_cat].sum(axis=(0, 1)) + 0.5
    q = np.cumsum(early)[:-1] / early.sum()
    mu = special.logit(q)
    mu = np.maximum.accumulate(mu + 1e-3 * np.arange(mu.size))
    return mu, sd


def ordinal_graph(model, ix: np.ndarray, lb, la, s):
    """Log-likelihood (PyTensor scalar) of the ordinal order parameters ``ix`` of a ChangePointModel.

    Creates one ordered cut-point vector ``cutpoints_<k>`` per order parameter (k = its index in the
    model). ``lb``/``la`` are the (K, P) latent levels, ``s`` the (k, T, P) transition curve (sigmoid),
    or None for the step (``la`` given) and no-transition (``la`` None) models.
    """
    import pymc as pm
    import pytensor.tensor as pt

    st = model.stats["ordinal"]
    total = 0.0
    for j, k in enumerate(ix):
        c = int(model.n_cat[k])
        counts = st.counts[j, :, :, :c]  # (T, P, C)
        mu, sd = cut_prior(counts, c, model.config.priors["cut_sd"])
        cuts = pm.Normal(f"cutpoints_{k}", mu=mu, sigma=sd, shape=c - 1,
                         transform=pm.distributions.transforms.ordered, initval=mu)
        p_a = category_probs(lb[k], cuts, pt)  # (P, C)
        if la is None:
            total = total + pt.sum(ordinal_loglik(counts, p_a[None], pt))
            continue
        p_b = category_probs(la[k], cuts, pt)
        if s is not None:
            mix = (1.0 - s[j])[..., None] * p_a[None] + s[j][..., None] * p_b[None]  # (T, P, C)
            total = total + pt.sum(ordinal_loglik(counts, mix, pt))
        else:
            ll_pre = pt.sum(ordinal_loglik(counts, p_a[None], pt), axis=1)[None]  # (1, T)
            ll_post = pt.sum(ordinal_loglik(counts, p_b[None], pt), axis=1)[None]
            total = total + model.step_marginal(ll_pre, ll_post)
    return total


def ordinal_cell_probs(model, post: dict, k: int, lb: np.ndarray, la: np.ndarray | None, s: np.ndarray | None):
    """Numpy category probabilities per draw and cell, ``(D, T, P, C)`` (``s``: (D, T, P) or None = before)."""
    cuts = post[f"cutpoints_{k}"][:, None, :]  # (D, 1, C-1)
    p_a = category_probs(lb[:, k], cuts)[:, None]  # (D, 1, P, C)
    if la is None or s is None:
        return np.broadcast_to(p_a, (p_a.shape[0], len(model.steps), *p_a.shape[2:]))
    p_b = category_probs(la[:, k], cuts)[:, None]
    return (1.0 - s)[..., None] * p_a + s[..., None] * p_b
