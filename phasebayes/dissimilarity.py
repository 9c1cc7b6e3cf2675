"""Distributional dissimilarity curves over the checkpoint grid (DESIGN.md §2.1, method notes §3).

For the boundary between neighbouring checkpoints ``t_i`` and ``t_{i+1}`` take the left window
σ_L = {t_{i-L+1} .. t_i} and the right window σ_R = {t_{i+1} .. t_{i+L}} (truncated at the grid edges),
their uniform mixtures P_L, P_R and the Bayes-optimal classifier ``r(x) = P_L(x) / (P_L(x) + P_R(x))``:

    D_g = ½ E_{x~P_L}[g(r(x))] + ½ E_{x~P_R}[g(1 - r(x))],   g(½) = 0

with ``g(x) = 2x − 1`` (``"linear"``, default), ``|2x − 1|`` (``"tv"``) or ``log2(2x)`` (``"js"``, in
bits, in [0, 1]). One value per boundary, indexed by the midpoint step ``(t_i + t_{i+1}) / 2``.

Estimators (the result's ``attrs`` say which one was used):

**Total change, exact likelihoods** (``total_estimator="exact_likelihood"``), from ``logp``:
``log P_L(x) = logsumexp_{t∈σ_L} log P(x|t) − log|σ_L|`` in log space throughout,
``r = sigmoid(log P_L − log P_R)``; the average of ``g(r)`` over the samples generated in σ_L
(stratified: mean per checkpoint, then mean over the checkpoints of the window, i.e. an equal-weight
sample of the uniform mixture) is unbiased. Per prompt, then averaged over prompts (equal to the
divergence of the joint (prompt, response) distribution for a fixed prompt distribution).

**Total change, classifier lower bound** (``total_estimator="classifier_lower_bound"``), when no
``logp`` is available but sentence embeddings of the responses are (``ds["embedding"]`` with dims
``(step, prompt, sample, embedding_dim)``, see :mod:`phasebayes.embeddings`). A ridge logistic
regression on PCA-reduced embeddings (+ a prompt intercept) separates left from right samples; its
predictions ``r̂`` are made only on held-out folds (K-fold cross-fitting), and they enter a *proper*
scoring form of each measure, whose expectation is ≤ the true D for any ``r̂`` independent of the
scored sample:

- linear: ``1 − 4·Brier`` = ½E_L[2u − u²] + ½E_R[−2u − u²], ``u = 2r̂ − 1``
  (the plain plug-in ½E_L[g(r̂)] + ½E_R[g(1−r̂)] is *not* a lower bound of D_lin: it can reach D_TV);
- tv: ``1 − 2·(error rate)`` of the hard classifier ``r̂ > ½``;
- js: ½E_L[log2 2r̂] + ½E_R[log2 2(1−r̂)] (log score; ``r̂`` clipped to [1e-6, 1 − 1e-6]).

The PCA basis is fitted on the embeddings alone (no window labels), so it does not break the bound.

**Per order parameter** (``order_parameter_estimator``): the same formula on the distribution of the
judged scores of the *same* samples, by plug-in on binned scores. Default bins (a documented choice,
``bins=None``): 10 equal-width bins over the declared scale of a bounded order parameter (e.g. width
10 on 0–100, the resolution at which judges are reproducible), 10 quantile bins of all its scores in
the run for an unbounded one. Plug-in estimates are biased upwards (> 0 in expectation when nothing
changes). Corrections (the subtracted bias estimate is stored as ``d_op_bias_prompt``; corrected
values can be slightly negative and are not clipped):

- ``"permutation"``: subtract the mean plug-in value under the permutation null — the left/right
  labels of the pooled window samples shuffled, drawn exactly as multivariate hypergeometric counts of
  the pooled histogram. Mean ≈ 0 under no change for every measure. Under a change the true bias is
  smaller than the null bias, so it over-corrects: slightly for ``linear``/``js`` (smooth in the
  histogram), badly for ``tv`` with few samples per bin (|p̂ − q̂| is biased only where p ≈ q).
- ``"bootstrap"``: subtract the Bayesian-bootstrap bias estimate ``mean(D*) − D̂`` (Dirichlet(counts)
  draws of every checkpoint's histogram). Adapts to the size of the change; under no change it removes
  the bias of smooth measures but only part of the ``tv`` bias.
- ``"auto"`` (default): ``"permutation"`` for ``linear`` and ``js``, ``"bootstrap"`` for ``tv``
  (measured on the known-truth simulator: with 40 samples per checkpoint and 10 bins, the 90 %
  interval of a bijective order parameter's ρ_tv covered the truth in 2 % of runs with the permutation
  correction and in 85 % with the bootstrap one).
- ``"none"``: the raw plug-in. ``joint`` is the same estimator on the vector of all
order parameters (product bins; samples with every score present).

**Soft channel**: when the dataset has ``score_prob`` with dims ``(order_parameter, step, prompt,
sample, score_value)`` (a judge's probability distribution over score values per response; rows sum to
1, NaN = none), single order parameters use ``P_L^O(o) = mean_x p(o|x)`` on the same bins (a valid
stochastic channel, so the data-processing inequality still holds) with a sample-level permutation
null; ``joint`` still uses the hard scores.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from .dataset import order_parameter_scale, validate
from .defaults import CI_PROB
from .errors import ModelSpecError, RunDataError

__all__ = [
    "MEASURES",
    "DEFAULT_N_BINS",
    "dissimilarity",
    "DissimilarityResult",
    "g_logodds",
    "discrete_divergence",
    "window_slots",
    "likelihood_terms",
    "stratified_mean",
    "stratified_se",
    "plugin_dissimilarity",
    "permutation_null",
    "classifier_terms",
    "default_bins",
]

MEASURES = ("linear", "tv", "js")
DEFAULT_N_BINS = 10
"""Default number of score bins per order parameter (equal width on a declared scale, else quantiles)."""
CORRECTIONS = ("auto", "permutation", "bootstrap", "none")
DEFAULT_N_PERMUTATIONS = 200
"""Default number of permutation-null draws for the plug-in bias correction."""
_LN2 = float(np.log(2.0))


# ----------------------------------------------------------------------------------------------------
# numpy core
# ----------------------------------------------------------------------------------------------------


def _check_measure(measure: str) -> str:
    if measure not in MEASURES:
        raise ModelSpecError(f"unknown measure {measure!r}; use one of {MEASURES} ('linear' is the default).")
    return measure


def g_logodds(z: np.ndarray, measure: str = "linear") -> np.ndarray:
    """``g(r)`` for ``r = sigmoid(z)``, computed stably from the log-odds ``z = log P_L − log P_R``.

    linear: ``2r − 1 = tanh(z/2)``; tv: ``|tanh(z/2)|``; js: ``log2(2r) = 1 − log2(1 + e^{−z})`` (bits).
    ``g(1 − r)`` is ``g_logodds(−z)``. Shape-preserving; ``z = ±inf`` is allowed.
    """
    z = np.asarray(z, dtype=float)
    if measure == "linear":
        return np.tanh(0.5 * z)
    if measure == "tv":
        return np.abs(np.tanh(0.5 * z))
    if measure == "js":
        return 1.0 - np.logaddexp(0.0, -z) / _LN2
    raise ModelSpecError(f"unknown measure {measure!r}; use one of {MEASURES}.")


def discrete_divergence(p: np.ndarray, q: np.ndarray, measure: str = "linear") -> np.ndarray:
    """Closed-form g-dissimilarity between discrete distributions along the last axis.

    ``linear``: ½ Σ (p−q)²/(p+q); ``tv``: ½ Σ |p−q|; ``js``: Jensen–Shannon divergence in **bits**
    (in [0, 1]). ``p`` and ``q`` broadcast; each must sum to 1 along the last axis (not checked).
    Returns an array with the last axis removed.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    s = p + q
    if measure == "linear":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(s > 0, (p - q) ** 2 / np.where(s > 0, s, 1.0), 0.0)
        return 0.5 * terms.sum(-1)
    if measure == "tv":
        return 0.5 * np.abs(p - q).sum(-1)
    if measure == "js":
        with np.errstate(divide="ignore", invalid="ignore"):
            tp = np.where(p > 0, p * np.log2(np.where(p > 0, 2 * p / np.where(s > 0, s, 1.0), 1.0)), 0.0)
            tq = np.where(q > 0, q * np.log2(np.where(q > 0, 2 * q / np.where(s > 0, s, 1.0), 1.0)), 0.0)
        return 0.5 * (tp + tq).sum(-1)
    raise ModelSpecError(f"unknown measure {measure!r}; use 'linear', 'tv' or 'js'.")


def window_slots(n_steps: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices of the left and right windows of every boundary, truncated at the edges.

    Returns ``(idx, valid)``, both of shape ``(n_steps - 1, 2 * window)``: slots ``0..window-1`` are the
    left window ``i-window+1 .. i`` and slots ``window..2*window-1`` the right window ``i+1 .. i+window``
    of boundary ``i``; ``valid`` is False for slots outside the grid (their ``idx`` is clipped to the grid).
    """
    if not isinstance(window, (int, np.integer)) or isinstance(window, bool) or window < 1:
        raise ModelSpecError(f"window must be a positive integer (checkpoints per side), got {window!r}.")
    if window > n_steps - 1:
        raise ModelSpecError(
            f"window={window} is larger than the grid allows: with {n_steps} checkpoints a side can hold at "
            f"most {n_steps - 1}. Use window <= {n_steps - 1}."
        )
    i = np.arange(n_steps - 1)[:, None]
    a = np.arange(window)[None, :]
    idx = np.concatenate([i - window + 1 + a, i + 1 + a], axis=1)
    valid = (idx >= 0) & (idx < n_steps)
    return np.clip(idx, 0, n_steps - 1), valid


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def likelihood_terms(
    logp: np.ndarray, window: int, measure: str = "linear", *, on_missing: str = "raise"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample terms of the exact-likelihood estimator for every boundary.

    Parameters
    ----------
    logp
        ``log P(x | t_k)`` with shape ``(n_steps, n_prompts, n_samples, n_steps)``: generating step,
        prompt, sample, reference step (the reference axis is the same checkpoint grid). NaN = not
        computed. Any finite value is allowed (log-densities, or ``-5000`` for long responses).
    window
        Half-length L (checkpoints per side).
    measure
        ``"linear"``, ``"tv"`` or ``"js"``.
    on_missing
        A sample in a window whose ``logp`` is missing under some checkpoint of that window:
        ``"raise"`` a :class:`RunDataError`, or ``"drop"`` the sample from that boundary.
        Samples with no finite ``logp`` at all in the window are treated as absent.

    Returns
    -------
    ``(terms, ok)`` of shape ``(n_steps - 1, 2 * window, n_prompts, n_samples)``: ``g(r(x))`` for
    samples generated in the left window and ``g(1 − r(x))`` for those in the right window (slot
    layout of :func:`window_slots`), and whether each term is usable.
    """
    measure = _check_measure(measure)
    logp = np.asarray(logp, dtype=float)
    n_steps = logp.shape[0]
    idx, valid = window_slots(n_steps, window)
    L = int(window)
    lp = logp[idx[:, :, None], :, :, idx[:, None, :]]  # (n_b, 2L_gen, 2L_ref, P, S)
    if np.isposinf(lp).any():
        raise RunDataError("'logp' contains +inf; log-probabilities must be finite (or -inf for impossible).")
    ref_valid = valid[:, None, :, None, None]
    nan = np.isnan(lp) & ref_valid
    present = (~nan & ref_valid).any(axis=2) & valid[:, :, None, None]
    partial = present & nan.any(axis=2)
    if partial.any():
        if on_missing == "raise":
            raise RunDataError(
                f"{int(partial.sum())} sample-window combinations lack 'logp' under some checkpoint of their "
                f"window (window={window}). Compute log-probs of every response under every checkpoint within "
                f"{2 * window - 1} grid points of its own, use a smaller window, or pass on_missing='drop'."
            )
        if on_missing != "drop":
            raise ModelSpecError(f"on_missing must be 'raise' or 'drop', got {on_missing!r}.")
    ok = present & ~partial
    lp = np.where(ref_valid & ~np.isnan(lp), lp, -np.inf)
    n_left = valid[:, :L].sum(1).astype(float)
    n_right = valid[:, L:].sum(1).astype(float)
    log_pl = _logsumexp(lp[:, :, :L], axis=2) - np.log(n_left)[:, None, None, None]
    log_pr = _logsumexp(lp[:, :, L:], axis=2) - np.log(n_right)[:, None, None, None]
    impossible = ok & np.isneginf(log_pl) & np.isneginf(log_pr)
    if impossible.any():
        raise RunDataError(
            f"{int(impossible.sum())} sample(s) have log-probability -inf under every checkpoint of both windows; "
            "a generated response must have positive probability under the checkpoint that generated it."
        )
    with np.errstate(invalid="ignore"):
        z = log_pl - log_pr
    is_left = (np.arange(2 * L) < L)[None, :, None, None]
    terms = np.where(is_left, g_logodds(z, measure), g_logodds(-z, measure))
    terms = np.where(ok, terms, np.nan)
    return terms, ok


def _slot_means(terms: np.ndarray, ok: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    w = ok.astype(float) if weights is None else np.where(ok, weights, 0.0)
    t = np.where(ok, terms, 0.0)
    n = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * t).sum(-1) / n
    return mean, n > 0


def stratified_mean(terms: np.ndarray, ok: np.ndarray, window: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Stratified window average ``½ mean_{left slots}(mean_s term) + ½ mean_{right slots}(...)``.

    ``terms``/``ok`` (and optional non-negative ``weights``, e.g. Bayesian-bootstrap weights) have
    shape ``(..., 2 * window, n_prompts, n_samples)``; returns ``(..., n_prompts)``. A slot (checkpoint)
    without usable samples is left out of its side; a side without any gives NaN.
    """
    mean, has = _slot_means(terms, ok, weights)
    L = int(window)
    out = []
    for sl in (slice(0, L), slice(L, 2 * L)):
        m, h = mean[..., sl, :], has[..., sl, :]
        cnt = h.sum(-2)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(h, m, 0.0).sum(-2) / np.where(cnt > 0, cnt, np.nan))
    return 0.5 * (out[0] + out[1])


def stratified_se(terms: np.ndarray, ok: np.ndarray, window: int) -> np.ndarray:
    """Monte-Carlo standard error of :func:`stratified_mean` (same shapes), from within-slot variances."""
    L = int(window)
    t = np.where(ok, terms, 0.0)
    n = ok.sum(-1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = t.sum(-1) / n
        var = np.where(ok, (t - mean[..., None]) ** 2, 0.0).sum(-1) / np.maximum(n - 1, 1)
        vm = np.where(n > 0, var / n, 0.0)
    has = n > 0
    out = 0.0
    for sl in (slice(0, L), slice(L, 2 * L)):
        cnt = has[..., sl, :].sum(-2)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = out + vm[..., sl, :].sum(-2) / np.where(cnt > 0, cnt, np.nan) ** 2
    return 0.5 * np.sqrt(out)


def default_bins(values: np.ndarray, scale: tuple[float, float], n_bins: int = DEFAULT_N_BINS) -> np.ndarray:
    """Bin edges for one order parameter: ``n_bins`` equal-width bins over a bounded declared scale,
    else ``n_bins`` quantile bins of the finite values (duplicate edges merged)."""
    lo, hi = scale
    if np.isfinite(lo) and np.isfinite(hi):
        return np.linspace(lo, hi, n_bins + 1)
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def _bin_codes(values: np.ndarray, edges: np.ndarray, name: str) -> np.ndarray:
    edges = np.asarray(edges, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ModelSpecError(f"bins for '{name}' must be strictly increasing edges (at least 2), got {edges!r}.")
    finite = np.isfinite(values)
    outside = finite & ((values < edges[0]) | (values > edges[-1]))
    if outside.any():
        raise ModelSpecError(
            f"{int(outside.sum())} score(s) of '{name}' lie outside its bins [{edges[0]:g}, {edges[-1]:g}]; "
            "widen the bin edges."
        )
    codes = np.searchsorted(edges, np.where(finite, values, edges[0]), side="right") - 1
    codes = np.clip(codes, 0, len(edges) - 2)
    return np.where(finite, codes, -1)


def _counts(codes: np.ndarray, n_cells: int) -> np.ndarray:
    """Histogram per (step, prompt): codes (n_steps, P, S) with -1 = missing → (n_steps, P, n_cells)."""
    n_steps, P, _ = codes.shape
    ok = codes >= 0
    flat = (np.arange(n_steps)[:, None, None] * P + np.arange(P)[None, :, None]) * n_cells + np.where(ok, codes, 0)
    return np.bincount(flat[ok], minlength=n_steps * P * n_cells).reshape(n_steps, P, n_cells).astype(float)


def _window_histograms(counts: np.ndarray, idx: np.ndarray, valid: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified mixture histograms P̂_L, P̂_R per boundary: (n_b, P, C) each."""
    c = counts[idx]  # (n_b, 2L, P, C)
    n = c.sum(-1)
    has = valid[:, :, None] & (n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(has[..., None], c / np.where(n > 0, n, 1.0)[..., None], 0.0)
    L = int(window)
    out = []
    for sl in (slice(0, L), slice(L, 2 * L)):
        cnt = has[:, sl].sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(frac[:, sl].sum(1) / np.where(cnt > 0, cnt, np.nan)[..., None])
    return out[0], out[1]


def plugin_dissimilarity(counts: np.ndarray, window: int, measure: str = "linear") -> np.ndarray:
    """Plug-in D per boundary and prompt from per-checkpoint histograms.

    ``counts`` has shape ``(n_steps, n_prompts, n_cells)`` (hard counts or soft sums of channel
    probabilities); returns ``(n_steps - 1, n_prompts)``. Biased upwards; see :func:`permutation_null`.
    """
    idx, valid = window_slots(counts.shape[0], window)
    pl, pr = _window_histograms(counts, idx, valid, window)
    return discrete_divergence(pl, pr, measure)


def permutation_null(
    counts: np.ndarray, window: int, measure: str = "linear", *, n_permutations: int = DEFAULT_N_PERMUTATIONS, rng=None
) -> np.ndarray:
    """Mean plug-in D under the permutation null, per boundary and prompt: ``(n_steps - 1, n_prompts)``.

    The pooled window histogram (integer counts) is split into a left part of the observed left size
    by drawing multivariate hypergeometric counts (exactly what shuffling the left/right labels of the
    pooled samples does), ``n_permutations`` times; the plug-in D of each split is averaged.
    """
    rng = np.random.default_rng(rng)
    idx, valid = window_slots(counts.shape[0], window)
    L = int(window)
    c = np.rint(counts[idx] * valid[:, :, None, None]).astype(np.int64)  # (n_b, 2L, P, C)
    kl = c[:, :L].sum(1)
    kr = c[:, L:].sum(1)
    k = kl + kr  # (n_b, P, C)
    keep = k.reshape(-1, k.shape[-1]).sum(0) > 0
    k = k[..., keep]
    n_l = kl.sum(-1)
    n_r = kr.sum(-1)
    shape = (n_permutations,) + n_l.shape
    remaining_total = np.broadcast_to(k.sum(-1), shape).copy()
    remaining_draw = np.broadcast_to(n_l, shape).copy()
    x = np.empty(shape + (k.shape[-1],), dtype=np.int64)
    for j in range(k.shape[-1]):
        good = np.broadcast_to(k[..., j], shape)
        x[..., j] = rng.hypergeometric(good, remaining_total - good, remaining_draw)
        remaining_total -= good
        remaining_draw -= x[..., j]
    with np.errstate(invalid="ignore", divide="ignore"):
        pl = x / n_l[..., None]
        pr = (k - x) / n_r[..., None]
    return discrete_divergence(pl, pr, measure).mean(0)


def _soft_null(probs: np.ndarray, ok: np.ndarray, window: int, measure: str, n_permutations: int, rng) -> np.ndarray:
    """Permutation null of the soft-channel plug-in: probs (n_steps, P, S, C), ok (n_steps, P, S)."""
    n_steps, P, S, C = probs.shape
    idx, valid = window_slots(n_steps, window)
    L = int(window)
    out = np.empty((n_steps - 1, P))
    for b in range(n_steps - 1):
        sl = idx[b][valid[b]]
        nl = valid[b, :L].sum()
        pool = probs[sl].transpose(1, 0, 2, 3).reshape(P, -1, C)  # (P, n_pool, C)
        pok = ok[sl].transpose(1, 0, 2).reshape(P, -1)
        side = np.repeat(np.arange(len(sl)) < nl, S)
        n_l = (pok & side).sum(-1)
        keys = rng.random((n_permutations, P, pool.shape[1]))
        keys = np.where(pok, keys, np.inf)
        rank = np.argsort(np.argsort(keys, axis=-1), axis=-1)
        left = (rank < n_l[:, None]) & pok
        right = (rank >= n_l[:, None]) & pok
        with np.errstate(invalid="ignore", divide="ignore"):
            pl = np.einsum("kps,psc->kpc", left.astype(float), pool) / left.sum(-1)[..., None]
            pr = np.einsum("kps,psc->kpc", right.astype(float), pool) / right.sum(-1)[..., None]
        out[b] = discrete_divergence(pl, pr, measure).mean(0)
    return out


def _logistic_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, max_iter: int = 50) -> np.ndarray:
    """Weighted L2 logistic regression by Newton's method; X includes an intercept column (unpenalised, last)."""
    d = X.shape[1]
    beta = np.zeros(d)
    pen = np.full(d, ridge)
    pen[-1] = 1e-8
    for _ in range(max_iter):
        eta = X @ beta
        p = 0.5 * (1.0 + np.tanh(0.5 * eta))
        grad = X.T @ (w * (y - p)) - pen * beta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + np.diag(pen)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def classifier_terms(
    embedding: np.ndarray,
    window: int,
    measure: str = "linear",
    *,
    n_folds: int = 5,
    n_components: int = 16,
    ridge: float = 1.0,
    rng=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out per-sample terms of the classifier lower bound (see module docstring).

    Parameters
    ----------
    embedding
        ``(n_steps, n_prompts, n_samples, dim)`` embeddings; rows with a NaN are absent samples.
    window, measure
        As in :func:`likelihood_terms`.
    n_folds
        Cross-fitting folds (each sample is scored by a classifier that never saw it).
    n_components
        Principal components kept (fitted on all embeddings, without labels), then standardised.
    ridge
        L2 penalty of the logistic regression (on standardised components).

    Returns
    -------
    ``(terms, ok)`` with the layout of :func:`likelihood_terms`; :func:`stratified_mean` of the terms is
    a lower bound (in expectation) of the true D per prompt.
    """
    measure = _check_measure(measure)
    rng = np.random.default_rng(rng)
    emb = np.asarray(embedding, dtype=float)
    if emb.ndim != 4:
        raise RunDataError(f"embeddings must be 4-d (step, prompt, sample, dim), got shape {emb.shape}.")
    n_steps, P, S, dim = emb.shape
    present = np.isfinite(emb).all(-1)
    if not present.any():
        raise RunDataError("no finite embedding; embed the responses first (phasebayes.embeddings).")
    X = emb[present]
    center = X.mean(0)
    sub = X if len(X) <= 5000 else X[rng.choice(len(X), 5000, replace=False)]
    _, sv, vt = np.linalg.svd(sub - center, full_matrices=False)
    k = int(min(n_components, vt.shape[0], dim))
    comps = vt[:k]
    Z = np.zeros((n_steps, P, S, k))
    Z[present] = (X - center) @ comps.T
    sd = Z[present].std(0)
    Z = Z / np.where(sd > 0, sd, 1.0)
    fold = np.argsort(rng.random((n_steps, P, S)), axis=-1) % n_folds
    idx, valid = window_slots(n_steps, window)
    L = int(window)
    terms = np.full((n_steps - 1, 2 * L, P, S), np.nan)
    ok_all = np.zeros((n_steps - 1, 2 * L, P, S), dtype=bool)
    prompt_onehot = np.broadcast_to(np.eye(P)[None, :, None, :], (2 * L, P, S, P))
    for b in range(n_steps - 1):
        ok = present[idx[b]] & valid[b][:, None, None]  # (2L, P, S)
        left = np.broadcast_to((np.arange(2 * L) < L)[:, None, None], ok.shape)
        # each side total weight ½, each checkpoint of a side equal weight (the uniform mixture)
        n_slot = ok.sum((1, 2)).astype(float)
        n_slots_side = np.array([(n_slot[:L] > 0).sum(), (n_slot[L:] > 0).sum()], dtype=float)
        side_cnt = np.where(np.arange(2 * L) < L, n_slots_side[0], n_slots_side[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            wslot = np.where(n_slot > 0, 1.0 / (n_slot * side_cnt), 0.0)
        wts = np.broadcast_to(wslot[:, None, None], ok.shape)
        feats = np.concatenate([Z[idx[b]], prompt_onehot[..., 1:] if P > 1 else prompt_onehot[..., :0],
                                np.ones((2 * L, P, S, 1))], axis=-1)
        f = fold[idx[b]]
        r_hat = np.full(ok.shape, np.nan)
        for kf in range(n_folds):
            train = ok & (f != kf)
            test = ok & (f == kf)
            if not test.any() or not (train & left).any() or not (train & ~left).any():
                continue
            ww = wts[train] * train.sum() / wts[train].sum()
            beta = _logistic_ridge(feats[train], left[train].astype(float), ww, ridge)
            r_hat[test] = 0.5 * (1.0 + np.tanh(0.5 * (feats[test] @ beta)))
        okb = ok & np.isfinite(r_hat)
        u = 2.0 * r_hat - 1.0
        if measure == "linear":
            t = np.where(left, 2 * u - u**2, -2 * u - u**2)
        elif measure == "tv":
            h = np.sign(u)
            t = np.where(left, h, -h)
        else:
            rc = np.clip(r_hat, 1e-6, 1 - 1e-6)
            t = np.where(left, np.log2(2 * rc), np.log2(2 * (1 - rc)))
        terms[b] = np.where(okb, t, np.nan)
        ok_all[b] = okb
    return terms, ok_all


# ----------------------------------------------------------------------------------------------------
# preparation shared with decomposition
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """Arrays shared by :func:`dissimilarity` and :mod:`phasebayes.decomposition`."""

    steps: np.ndarray
    prompts: np.ndarray
    window: int
    measure: str
    total_estimator: str
    total_terms: np.ndarray | None  # (n_b, 2L, P, S)
    total_ok: np.ndarray | None
    op_names: list[str]
    op_codes: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_steps, P, S) int, -1 missing
    op_ncells: dict[str, int] = field(default_factory=dict)
    op_soft: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n_steps, P, S, C)
    op_edges: dict[str, list[float]] = field(default_factory=dict)
    idx: np.ndarray | None = None
    valid: np.ndarray | None = None

    @property
    def mid_steps(self) -> np.ndarray:
        return 0.5 * (self.steps[:-1] + self.steps[1:])

    def counts(self, name: str) -> np.ndarray:
        if name in self.op_soft:
            p = self.op_soft[name]
            return np.where(np.isfinite(p), p, 0.0).sum(2)
        return _counts(self.op_codes[name], self.op_ncells[name])


def _resolve_edges(bins, name: str, values: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    spec = bins.get(name) if isinstance(bins, Mapping) else bins
    if spec is None:
        return default_bins(values, scale)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 1:
            raise ModelSpecError(f"bins for '{name}' must be >= 1, got {spec}.")
        return default_bins(values, scale, int(spec))
    return np.asarray(spec, dtype=float)


def _prepare(
    ds: xr.Dataset,
    window: int,
    measure: str,
    *,
    order_parameters: Sequence[str] | None,
    bins,
    total: str,
    embeddings,
    on_missing: str,
    classifier_options: Mapping | None,
    rng,
) -> _Prepared:
    measure = _check_measure(measure)
    if not isinstance(ds, xr.Dataset):
        raise RunDataError(f"expected a run dataset (xarray.Dataset), got {type(ds).__name__}.")
    validate(ds, require_scores=False)
    steps = ds["step"].values.astype(np.int64)
    idx, valid = window_slots(len(steps), window)
    if "prompt" not in ds.dims:
        raise RunDataError("the run dataset has no 'prompt' dimension.")
    prompts = ds["prompt"].values
    if total not in ("auto", "likelihood", "classifier", "none"):
        raise ModelSpecError(f"total must be 'auto', 'likelihood', 'classifier' or 'none', got {total!r}.")
    emb = None
    if embeddings is not None:
        emb = embeddings
    elif "embedding" in ds:
        emb = ds["embedding"]
    has_logp = "logp" in ds
    if total == "auto":
        total = "likelihood" if has_logp else ("classifier" if emb is not None else "none")
    terms = ok = None
    if total == "likelihood":
        if not has_logp:
            raise RunDataError(
                "total='likelihood' needs 'logp' (step, prompt, sample, ref_step) in the run dataset; score the "
                "responses under every checkpoint, or use total='classifier' with sentence embeddings."
            )
        lp = ds["logp"]
        if set(lp.dims) != {"step", "prompt", "sample", "ref_step"}:
            raise RunDataError(f"'logp' must have dims (step, prompt, sample, ref_step), has {lp.dims}.")
        ref = lp["ref_step"].values
        unknown = np.setdiff1d(ref, steps)
        if len(unknown):
            raise RunDataError(f"'logp' has ref_step values {list(unknown[:5])} that are not checkpoint steps.")
        lp = lp.reindex(ref_step=steps).transpose("step", "prompt", "sample", "ref_step").values
        terms, ok = likelihood_terms(lp, window, measure, on_missing=on_missing)
        estimator = "exact_likelihood"
    elif total == "classifier":
        if emb is None:
            raise RunDataError(
                "total='classifier' needs sentence embeddings: add ds['embedding'] with "
                "phasebayes.embeddings.add_embeddings(ds) or pass embeddings=."
            )
        if isinstance(emb, xr.DataArray):
            other = [d for d in emb.dims if d not in ("step", "prompt", "sample")]
            if len(other) != 1 or not {"step", "prompt", "sample"} <= set(emb.dims):
                raise RunDataError(f"embeddings must have dims (step, prompt, sample, <dim>), has {emb.dims}.")
            emb = emb.transpose("step", "prompt", "sample", other[0]).values
        emb = np.asarray(emb, dtype=float)
        expect = (len(steps), len(prompts), ds.sizes.get("sample", -1))
        if emb.ndim != 4 or emb.shape[:3] != expect:
            raise RunDataError(f"embeddings must have shape {expect} + (dim,), got {emb.shape}.")
        terms, ok = classifier_terms(emb, window, measure, rng=rng, **dict(classifier_options or {}))
        estimator = "classifier_lower_bound"
    else:
        estimator = "none"

    prep = _Prepared(steps, prompts, int(window), measure, estimator, terms, ok, [], idx=idx, valid=valid)
    if "score" not in ds:
        if order_parameters:
            raise RunDataError("order parameters were requested but the run dataset has no 'score'.")
        return prep
    all_ops = [str(o) for o in ds["order_parameter"].values]
    names = all_ops if order_parameters is None else [str(o) for o in order_parameters]
    unknown = [o for o in names if o not in all_ops]
    if unknown:
        raise RunDataError(f"unknown order parameter(s) {unknown}; the run has {all_ops}.")
    if isinstance(bins, Mapping):
        extra = set(bins) - set(names)
        if extra:
            raise ModelSpecError(f"bins names order parameter(s) {sorted(extra)} that are not analysed ({names}).")
    prep.op_names = list(names)
    score = ds["score"].transpose("order_parameter", "step", "prompt", "sample")
    soft = ds["score_prob"] if "score_prob" in ds else None
    if soft is not None:
        need = {"order_parameter", "step", "prompt", "sample", "score_value"}
        if set(soft.dims) != need or "score_value" not in soft.coords:
            raise RunDataError(
                f"'score_prob' must have dims {sorted(need)} with a numeric 'score_value' coordinate, has {soft.dims}."
            )
        sp_all = soft.values
        if np.any(sp_all < 0) or np.any(np.abs(np.nansum(sp_all, axis=-1)[np.isfinite(sp_all).all(-1)] - 1) > 1e-6):
            raise RunDataError("'score_prob' rows must be probability distributions (non-negative, summing to 1).")
    for name in names:
        vals = score.sel(order_parameter=name).values.astype(float)
        scale = order_parameter_scale(ds, name)
        edges = _resolve_edges(bins, name, vals, scale)
        codes = _bin_codes(vals, edges, name)
        prep.op_codes[name] = codes
        prep.op_ncells[name] = len(edges) - 1
        prep.op_edges[name] = [float(e) for e in edges]
        if soft is not None and np.isfinite(soft.sel(order_parameter=name).values).any():
            sp = soft.sel(order_parameter=name).transpose("step", "prompt", "sample", "score_value")
            sv = sp["score_value"].values.astype(float)
            vcode = _bin_codes(sv, edges, name)
            onehot = (vcode[:, None] == np.arange(len(edges) - 1)[None, :]).astype(float)
            prep.op_soft[name] = sp.values @ onehot  # NaN rows stay NaN
    if len(names) > 1:
        stack = np.stack([prep.op_codes[n] for n in names])
        okj = (stack >= 0).all(0)
        sizes = [prep.op_ncells[n] for n in names]
        flat = np.ravel_multi_index(tuple(np.where(okj, stack[i], 0) for i in range(len(names))), sizes)
        uniq, inv = np.unique(flat[okj], return_inverse=True)
        joint = np.full(okj.shape, -1, dtype=np.int64)
        joint[okj] = inv
        prep.op_codes["joint"] = joint
        prep.op_ncells["joint"] = len(uniq)
    return prep


def _resolve_correction(correction: str, measure: str) -> str:
    if correction not in CORRECTIONS:
        raise ModelSpecError(f"correction must be one of {CORRECTIONS}, got {correction!r}.")
    if correction == "auto":
        return "bootstrap" if measure == "tv" else "permutation"
    return correction


def _op_curves(prep: _Prepared, name: str, correction: str, n_permutations: int, n_boot: int, rng):
    counts = prep.counts(name)
    raw = plugin_dissimilarity(counts, prep.window, prep.measure)
    if correction in ("none", "bootstrap"):
        null = np.zeros_like(raw)
    elif name in prep.op_soft:
        p = prep.op_soft[name]
        null = _soft_null(np.where(np.isfinite(p), p, 0.0), np.isfinite(p).all(-1), prep.window, prep.measure,
                          max(20, n_permutations // 4), rng)
    else:
        null = permutation_null(counts, prep.window, prep.measure, n_permutations=n_permutations, rng=rng)
    # Bayesian bootstrap of the histograms (Dirichlet(counts) per checkpoint) for the standard error
    # (for a soft channel the Gamma shapes are the summed probabilities: an approximation)
    draws = np.empty((n_boot,) + raw.shape)
    for i in range(n_boot):
        g = rng.gamma(np.where(counts > 0, counts, 1.0)) * (counts > 0)
        draws[i] = plugin_dissimilarity(g, prep.window, prep.measure)
    se = draws.std(0)
    if correction == "bootstrap":
        null = draws.mean(0) - raw
    return raw - null, raw, null, se


# ----------------------------------------------------------------------------------------------------
# public entry point and result
# ----------------------------------------------------------------------------------------------------


def dissimilarity(
    ds: xr.Dataset,
    window: int = 3,
    measure: str = "linear",
    *,
    order_parameters: Sequence[str] | None = None,
    bins: int | Sequence[float] | Mapping[str, int | Sequence[float]] | None = None,
    correction: str = "auto",
    n_permutations: int = DEFAULT_N_PERMUTATIONS,
    total: str = "auto",
    embeddings: np.ndarray | xr.DataArray | None = None,
    on_missing: str = "raise",
    classifier_options: Mapping | None = None,
    n_boot: int = 100,
    random_seed: int | None = 0,
) -> DissimilarityResult:
    """Dissimilarity curves of the total output distribution and of every order parameter.

    Parameters
    ----------
    ds
        Run dataset (DESIGN.md §3). Uses ``logp`` for the total change if present, else an
        ``embedding`` variable (or ``embeddings=``) for the classifier lower bound; ``score`` (and
        optionally ``score_prob``) for the order parameters.
    window
        Window half-length L in checkpoints (truncated at the edges; L > n_steps − 1 is an error).
    measure
        ``"linear"`` (default), ``"tv"`` or ``"js"`` (bits).
    order_parameters
        Subset of order parameters to analyse (default all). With two or more, ``joint`` is added.
    bins
        ``None`` (default bins, module docstring), an int (number of default-style bins), a sequence of
        edges for all, or a mapping order parameter → int/edges.
    correction
        Bias correction of the plug-in estimates: ``"auto"`` (default: permutation for linear/js,
        bootstrap for tv), ``"permutation"``, ``"bootstrap"`` or ``"none"`` (module docstring).
    n_permutations
        Permutation-null draws.
    total
        ``"auto"`` (likelihood if ``logp``, else classifier if embeddings, else none), ``"likelihood"``,
        ``"classifier"`` or ``"none"``.
    embeddings
        ``(step, prompt, sample, dim)`` array/DataArray of response embeddings (overrides ``ds["embedding"]``).
    on_missing
        ``"raise"`` or ``"drop"``: samples whose ``logp`` is incomplete within a window.
    classifier_options
        Keyword arguments of :func:`classifier_terms` (``n_folds``, ``n_components``, ``ridge``).
    n_boot
        Bayesian-bootstrap draws for the standard errors of the order-parameter curves.
    random_seed
        Seed of the permutations, bootstrap and cross-fitting folds.

    Returns
    -------
    :class:`DissimilarityResult` with curves over ``mid_step`` (float, training-step units).
    """
    correction = _resolve_correction(correction, measure if measure in MEASURES else "linear")
    if not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ModelSpecError(f"n_permutations must be a positive integer, got {n_permutations!r}.")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 2:
        raise ModelSpecError(f"n_boot must be an integer >= 2, got {n_boot!r}.")
    rng = np.random.default_rng(random_seed)
    prep = _prepare(
        ds, window, measure, order_parameters=order_parameters, bins=bins, total=total, embeddings=embeddings,
        on_missing=on_missing, classifier_options=classifier_options, rng=rng,
    )
    return _build_result(prep, correction=correction, n_permutations=n_permutations, n_boot=n_boot, rng=rng,
                         random_seed=random_seed)


def _build_result(prep: _Prepared, *, correction: str, n_permutations: int, n_boot: int, rng, random_seed) -> DissimilarityResult:
    mid = prep.mid_steps
    steps = prep.steps
    L = prep.window
    coords = {
        "mid_step": mid,
        "left_step": ("mid_step", steps[:-1]),
        "right_step": ("mid_step", steps[1:]),
        "n_left": ("mid_step", prep.valid[:, :L].sum(1).astype(np.int64)),
        "n_right": ("mid_step", prep.valid[:, L:].sum(1).astype(np.int64)),
        "prompt": prep.prompts,
    }
    data = {}
    if prep.total_terms is not None:
        d_p = stratified_mean(prep.total_terms, prep.total_ok, L)
        se_p = stratified_se(prep.total_terms, prep.total_ok, L)
        data["d_total_prompt"] = (("mid_step", "prompt"), d_p)
        data["d_total_se_prompt"] = (("mid_step", "prompt"), se_p)
        data["d_total"] = (("mid_step",), np.nanmean(d_p, axis=1))
        n_p = np.isfinite(d_p).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            data["d_total_se"] = (("mid_step",), np.sqrt(np.nansum(se_p**2, axis=1)) / n_p)
    names = list(prep.op_codes) if prep.op_codes else []
    op_est = "none"
    if names:
        corr, raws, nulls, ses = [], [], [], []
        for name in names:
            c, r, nl, se = _op_curves(prep, name, correction, n_permutations, n_boot, rng)
            corr.append(c)
            raws.append(r)
            nulls.append(nl)
            ses.append(se)
        corr, raws, nulls, ses = map(np.stack, (corr, raws, nulls, ses))
        dims = ("order_parameter", "mid_step", "prompt")
        data["d_op_prompt"] = (dims, corr)
        data["d_op_raw_prompt"] = (dims, raws)
        data["d_op_bias_prompt"] = (dims, nulls)
        data["d_op_se_prompt"] = (dims, ses)
        data["d_op"] = (("order_parameter", "mid_step"), np.nanmean(corr, axis=2))
        n_p = np.isfinite(corr).sum(2)
        with np.errstate(invalid="ignore", divide="ignore"):
            data["d_op_se"] = (("order_parameter", "mid_step"), np.sqrt(np.nansum(ses**2, axis=2)) / n_p)
        coords["order_parameter"] = np.array(names, dtype=object)
        coords["n_bins"] = ("order_parameter", np.array([prep.op_ncells[n] for n in names], dtype=np.int64))
        kinds = ["soft_channel" if n in prep.op_soft else "binned_plugin" for n in names]
        op_est = "soft_channel" if any(k == "soft_channel" for k in kinds) else "binned_plugin"
    out = xr.Dataset(data, coords=coords)
    out.attrs = {
        "measure": prep.measure,
        "units": "bits" if prep.measure == "js" else "1",
        "window": int(L),
        "edge_windows": "truncated",
        "total_estimator": prep.total_estimator,
        "order_parameter_estimator": op_est,
        "joint_estimator": "binned_plugin on product bins of hard scores" if "joint" in names else "none",
        "bias_correction": correction if names else "none",
        "n_permutations": int(n_permutations),
        "bins": json.dumps(prep.op_edges),
        "random_seed": -1 if random_seed is None else int(random_seed),
    }
    if prep.total_estimator == "classifier_lower_bound":
        out.attrs["note"] = "total change is a held-out classifier lower bound, not an unbiased estimate"
    return DissimilarityResult(out)


class DissimilarityResult:
    """Dissimilarity curves (wraps an :class:`xarray.Dataset`, in ``.data``).

    Variables (``mid_step`` = midpoint step of each boundary, training-step units):
    ``d_total`` / ``d_total_prompt`` / ``d_total_se`` (total change, if estimated), ``d_op`` /
    ``d_op_prompt`` / ``d_op_se`` (per order parameter and ``joint``; bias-corrected),
    ``d_op_raw_prompt`` and ``d_op_bias_prompt`` (plug-in before correction and the subtracted bias
    estimate). ``attrs`` record ``measure``, ``window``, ``total_estimator`` (``exact_likelihood``,
    ``classifier_lower_bound`` or ``none``), ``order_parameter_estimator``, ``bias_correction``, ``bins``.
    """

    def __init__(self, data: xr.Dataset):
        self.data = data

    def __repr__(self) -> str:
        a = self.data.attrs
        ops = list(self.data["order_parameter"].values) if "order_parameter" in self.data.coords else []
        return (f"DissimilarityResult(measure={a.get('measure')!r}, window={a.get('window')}, "
                f"total_estimator={a.get('total_estimator')!r}, order_parameters={ops})")

    @property
    def measure(self) -> str:
        """The g-dissimilarity used."""
        return str(self.data.attrs["measure"])

    @property
    def total_estimator(self) -> str:
        """``exact_likelihood``, ``classifier_lower_bound`` or ``none``."""
        return str(self.data.attrs["total_estimator"])

    @property
    def total(self) -> xr.DataArray:
        """Prompt-averaged total change per boundary, dims ``(mid_step,)``."""
        if "d_total" not in self.data:
            raise ModelSpecError("this result has no total-change curve (no logp and no embeddings).")
        return self.data["d_total"]

    @property
    def order_parameters(self) -> xr.DataArray:
        """Prompt-averaged change per order parameter (and ``joint``), dims ``(order_parameter, mid_step)``."""
        if "d_op" not in self.data:
            raise ModelSpecError("this result has no order-parameter curves (no 'score' in the run).")
        return self.data["d_op"]

    def peak_step(self) -> float:
        """Midpoint step of the maximum of the prompt-averaged total curve (the transition)."""
        return float(self.data["mid_step"].values[int(np.nanargmax(self.total.values))])

    def to_dataframe(self) -> pd.DataFrame:
        """Long table: one row per (curve, mid_step) with columns ``curve``, ``mid_step``, ``value``, ``se``."""
        rows = []
        if "d_total" in self.data:
            rows.append(pd.DataFrame({"curve": "total", "mid_step": self.data["mid_step"].values,
                                      "value": self.data["d_total"].values, "se": self.data["d_total_se"].values}))
        if "d_op" in self.data:
            for op in self.data["order_parameter"].values:
                rows.append(pd.DataFrame({"curve": str(op), "mid_step": self.data["mid_step"].values,
                                          "value": self.data["d_op"].sel(order_parameter=op).values,
                                          "se": self.data["d_op_se"].sel(order_parameter=op).values}))
        df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["curve", "mid_step", "value", "se"])
        df.attrs.update({k: self.data.attrs[k] for k in ("measure", "window", "total_estimator")})
        return df

    def to_datatree(self, name: str = "dissimilarity") -> xr.DataTree:
        """The curves as an :class:`xarray.DataTree` node (attach it to the analysis tree, save with
        ``tree.to_netcdf(path, engine="netcdf4")``)."""
        ds = self.data.copy()
        ds.attrs = dict(ds.attrs, phasebayes_result="DissimilarityResult")
        return xr.DataTree(dataset=_netcdf_safe(ds), name=name)

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> DissimilarityResult:
        """Rebuild from :meth:`to_datatree` output, or from a tree with a ``dissimilarity`` child."""
        node = _find_node(tree, "DissimilarityResult", "dissimilarity")
        return cls(_restore(node.to_dataset()))

    def plot(self, *, band_prob: float = CI_PROB, ax=None):
        """Total and per-order-parameter curves with ±z·SE bands (normal approx., ``band_prob`` mass).

        Returns the matplotlib Figure (two panels unless ``ax`` is given: total, order parameters).
        """
        import matplotlib.pyplot as plt
        from scipy.stats import norm

        z = float(norm.ppf(0.5 + band_prob / 2))
        x = self.data["mid_step"].values
        if ax is None:
            fig, axes = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        else:
            fig, axes = ax.figure, [ax, ax]
        unit = " [bits]" if self.measure == "js" else ""
        if "d_total" in self.data:
            y, se = self.data["d_total"].values, self.data["d_total_se"].values
            axes[0].plot(x, y, color="k", label=f"total ({self.total_estimator})")
            axes[0].fill_between(x, y - z * se, y + z * se, color="k", alpha=0.2)
            axes[0].axvline(self.peak_step(), color="k", ls=":", lw=1)
        if "d_op" in self.data:
            for op in self.data["order_parameter"].values:
                y = self.data["d_op"].sel(order_parameter=op).values
                se = self.data["d_op_se"].sel(order_parameter=op).values
                (line,) = axes[1].plot(x, y, label=str(op))
                axes[1].fill_between(x, y - z * se, y + z * se, color=line.get_color(), alpha=0.2)
        for a, title in zip(axes[:2], ("total change", "order parameters")):
            a.set_ylabel(f"D_{self.measure}{unit}")
            a.set_title(title if ax is None else "")
            if a.get_legend_handles_labels()[0]:
                a.legend(fontsize=8)
        axes[-1].set_xlabel(f"training step (window L={self.data.attrs['window']}, band {band_prob:.0%})")
        fig.tight_layout()
        return fig

    def plot_transition(self, tau: pd.DataFrame, *, ax=None):
        """Peak of the total curve against posterior transition steps τ per order parameter.

        ``tau`` is a DataFrame indexed by order parameter with columns ``mean``, ``lower``, ``upper``
        (e.g. ``ChangePointResult.transition_steps()``). Returns the matplotlib Figure.
        """
        return plot_peak_vs_tau(self.peak_step(), tau, ax=ax)


def plot_peak_vs_tau(peak: float, tau: pd.DataFrame, *, peak_interval: tuple[float, float] | None = None, ax=None):
    """Horizontal interval plot of τ per order parameter with the peak of the total curve as a line.

    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    if not isinstance(tau, pd.DataFrame) or not {"mean", "lower", "upper"} <= set(tau.columns):
        raise ModelSpecError("tau must be a DataFrame indexed by order parameter with columns mean, lower, upper.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(tau)))
    else:
        fig = ax.figure
    y = np.arange(len(tau))
    m = tau["mean"].to_numpy(float)
    ax.errorbar(m, y, xerr=[m - tau["lower"].to_numpy(float), tau["upper"].to_numpy(float) - m], fmt="o", capsize=3,
                label="posterior τ")
    ax.axvline(peak, color="k", ls="--", label="peak of total D")
    if peak_interval is not None:
        ax.axvspan(*peak_interval, color="k", alpha=0.1)
    ax.set_yticks(y, [str(i) for i in tau.index])
    prob = tau.attrs.get("ci_prob")
    ax.set_xlabel("training step" + (f" (τ interval {prob:.0%} {tau.attrs.get('ci_kind', '')})" if prob else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------
# DataTree helpers (shared with decomposition)
# ----------------------------------------------------------------------------------------------------


def _netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    for name in list(ds.variables):
        v = ds[name]
        if v.dtype == bool:
            ds[name] = v.astype(np.int8)
            ds[name].attrs["phasebayes_bool"] = 1
    for k, v in list(ds.attrs.items()):
        if isinstance(v, bool) or v is None or isinstance(v, (dict, list, tuple)):
            ds.attrs[k] = json.dumps(v)
    return ds


def _restore(ds: xr.Dataset) -> xr.Dataset:
    """Undo :func:`_netcdf_safe`; drop dimensions inherited from a parent DataTree node but unused here."""
    unused = [d for d in ds.dims if not any(d in v.dims for v in ds.data_vars.values())]
    ds = ds.drop_dims(unused).copy()
    for name in list(ds.variables):
        if ds[name].attrs.get("phasebayes_bool") == 1:
            attrs = {k: v for k, v in ds[name].attrs.items() if k != "phasebayes_bool"}
            ds[name] = ds[name].astype(bool)
            ds[name].attrs = attrs
        if ds[name].dtype.kind in "US":
            ds[name] = ds[name].astype(object)
    for name in list(ds.coords):
        if ds[name].dtype.kind in "US":
            ds = ds.assign_coords({name: ds[name].astype(object)})
    return ds


def _find_node(tree: xr.DataTree, kind: str, child: str) -> xr.DataTree:
    if not isinstance(tree, xr.DataTree):
        raise ModelSpecError(f"expected an xarray.DataTree, got {type(tree).__name__}.")
    if tree.attrs.get("phasebayes_result") == kind:
        return tree
    if child in tree.children and tree[child].attrs.get("phasebayes_result") == kind:
        return tree[child]
    for node in tree.subtree:
        if node.attrs.get("phasebayes_result") == kind:
            return node
    raise ModelSpecError(f"no {kind} node in this DataTree (looked for attrs phasebayes_result={kind!r}).")
