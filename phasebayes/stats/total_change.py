"""The total change of the output distribution, from exact log-likelihoods (``logp``).

``log P_L(x) = logsumexp_{t∈σ_L} log P(x|t) − log|σ_L|`` (log space throughout),
``r = sigmoid(log P_L − log P_R)``; the average of ``g(r)`` over the samples generated in σ_L
(stratified: mean per checkpoint, then mean over the checkpoints of the window, i.e. an equal-weight
sample of the uniform mixture) is unbiased for D_g. Computed per prompt; the population value is the
mean over prompts (the divergence of the joint (prompt, response) distribution for uniformly drawn
prompts). The Monte-Carlo standard error comes from the within-checkpoint variances, and a Bayesian
bootstrap over samples gives joint draws of the whole curve (for the location of its peak).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from ..errors import ModelSpecError, RunDataError
from .divergence import check_measure, g_logodds, window_slots

__all__ = ["likelihood_terms", "stratified_mean", "stratified_se", "bootstrap_total"]


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
    layout of :func:`~phasebayes.stats.divergence.window_slots`), and whether each term is usable.
    """
    measure = check_measure(measure)
    if on_missing not in ("raise", "drop"):
        raise ModelSpecError(f"on_missing must be 'raise' or 'drop', got {on_missing!r}.")
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
    if partial.any() and on_missing == "raise":
        raise RunDataError(
            f"{int(partial.sum())} sample-window combinations lack 'logp' under some checkpoint of their "
            f"window (window={window}). Compute log-probs of every response under every checkpoint within "
            f"{2 * window - 1} grid points of its own, use a smaller window, or pass on_missing='drop'."
        )
    ok = present & ~partial
    lp = np.where(ref_valid & ~np.isnan(lp), lp, -np.inf)
    n_left = valid[:, :L].sum(1).astype(float)
    n_right = valid[:, L:].sum(1).astype(float)
    with np.errstate(divide="ignore"):
        log_pl = logsumexp(lp[:, :, :L], axis=2) - np.log(n_left)[:, None, None, None]
        log_pr = logsumexp(lp[:, :, L:], axis=2) - np.log(n_right)[:, None, None, None]
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
    return np.where(ok, terms, np.nan), ok


def _side_means(per_slot: np.ndarray, has: np.ndarray, window: int) -> np.ndarray:
    """½(mean over left slots + mean over right slots) of ``per_slot`` (``(..., 2L, P)``) where ``has``."""
    L = int(window)
    out = 0.0
    for sl in (slice(0, L), slice(L, 2 * L)):
        cnt = has[..., sl, :].sum(-2)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = out + 0.5 * np.where(has[..., sl, :], per_slot[..., sl, :], 0.0).sum(-2) / np.where(cnt > 0, cnt, np.nan)
    return out


def stratified_mean(terms: np.ndarray, ok: np.ndarray, window: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Stratified window average ``½ mean_{left slots}(mean_s term) + ½ mean_{right slots}(...)``.

    ``terms``/``ok`` (and optional non-negative ``weights``, e.g. Bayesian-bootstrap weights) have
    shape ``(..., 2 * window, n_prompts, n_samples)``; returns ``(..., n_prompts)``. A slot (checkpoint)
    without usable samples is left out of its side; a side without any gives NaN.
    """
    w = ok.astype(float) if weights is None else np.where(ok, weights, 0.0)
    n = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * np.where(ok, terms, 0.0)).sum(-1) / n
    return _side_means(mean, n > 0, window)


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


def bootstrap_total(terms: np.ndarray, ok: np.ndarray, idx: np.ndarray, valid: np.ndarray, window: int,
                    n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """Bayesian-bootstrap draws of the per-prompt total curve, shape ``(n_draws, n_boundaries, n_prompts)``.

    One Gamma(1) weight per generated sample and draw (a Dirichlet(1, …, 1) over the samples of each
    checkpoint), shared by every boundary whose windows contain that checkpoint, so the draws of
    neighbouring boundaries are correlated as the estimates are.
    """
    n_b, _, P, S = terms.shape
    n_steps = idx.max() + 1
    W = rng.standard_gamma(1.0, size=(n_steps, P, n_draws, S))  # (step, prompt, draw, sample)
    out = np.empty((n_draws, n_b, P))
    for b in range(n_b):
        okb = ok[b] & valid[b][:, None, None]
        t = np.where(okb, terms[b], 0.0)
        wb = W[idx[b]]  # (2L, P, B, S)
        num = (wb @ t[..., None])[..., 0]
        den = (wb @ okb[..., None].astype(float))[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_slot = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)  # (2L, P, B)
        out[:, b] = _side_means(np.moveaxis(per_slot, -1, 0), np.moveaxis(den > 0, -1, 0), window)
    return out
