"""Held-out classifier lower bound of the total change, for runs without ``logp``.

When no log-probabilities are available but sentence embeddings of the responses are
(``ds["embedding"]``, dims ``(step, prompt, sample, embedding_dim)``, see :mod:`phasebayes.embeddings`),
a ridge logistic regression on PCA-reduced embeddings (+ a prompt intercept) separates left from right
samples; its predictions ``r̂`` are made only on held-out folds (K-fold cross-fitting), and they enter a
*proper* scoring form of each measure, whose expectation is ≤ the true D for any ``r̂`` independent of
the scored sample:

- linear: ``1 − 4·Brier`` = ½E_L[2u − u²] + ½E_R[−2u − u²], ``u = 2r̂ − 1``
  (the plain plug-in ½E_L[g(r̂)] + ½E_R[g(1−r̂)] is *not* a lower bound of D_lin: it can reach D_TV);
- tv: ``1 − 2·(error rate)`` of the hard classifier ``r̂ > ½``;
- js: ½E_L[log2 2r̂] + ½E_R[log2 2(1−r̂)] (log score; ``r̂`` clipped to [1e-6, 1 − 1e-6]).

The PCA basis is fitted on the embeddings alone (no window labels), so it does not break the bound.
"""

from __future__ import annotations

import numpy as np

from ..errors import RunDataError
from .divergence import check_measure, window_slots

__all__ = ["classifier_terms"]


def _logistic_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, max_iter: int = 50) -> np.ndarray:
    """Weighted L2 logistic regression by Newton's method; X includes an intercept column (unpenalised, last).

    Hand-written: a weighted ridge fit with an unpenalised intercept on <= ~30 standardised features,
    repeated per boundary and fold; Newton converges in a handful of iterations and scikit-learn is not
    a dependency of the statistics layer.
    """
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
    measure = check_measure(measure)
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
