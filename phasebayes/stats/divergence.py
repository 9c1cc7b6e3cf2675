"""g-dissimilarities between discrete distributions and from log-odds; window layout of boundaries.

For the boundary between neighbouring checkpoints ``t_i`` and ``t_{i+1}`` the left window is
σ_L = {t_{i-L+1} .. t_i} and the right window σ_R = {t_{i+1} .. t_{i+L}}, truncated at the grid edges.
With ``r(x) = P_L(x) / (P_L(x) + P_R(x))``:

    D_g = ½ E_{x~P_L}[g(r(x))] + ½ E_{x~P_R}[g(1 - r(x))],   g(½) = 0

``g(x) = 2x − 1`` (``"linear"``, default), ``|2x − 1|`` (``"tv"``) or ``log2(2x)`` (``"js"``, bits).
All three are f-divergences bounded by 1, so the data-processing inequality holds for every one of
them: D of any function of the response is at most D of the response. See ``docs/decomposition.md``.
"""

from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from ..errors import ModelSpecError

__all__ = ["MEASURES", "check_measure", "g_logodds", "discrete_divergence", "window_slots", "side_sums"]

MEASURES = ("linear", "tv", "js")
_LN2 = float(np.log(2.0))


def check_measure(measure: str) -> str:
    """Return ``measure`` if it is one of :data:`MEASURES`, else raise :class:`ModelSpecError`."""
    if measure not in MEASURES:
        raise ModelSpecError(f"unknown measure {measure!r}; use one of {MEASURES} ('linear' is the default).")
    return measure


def g_logodds(z: np.ndarray, measure: str = "linear") -> np.ndarray:
    """``g(r)`` for ``r = sigmoid(z)``, computed stably from the log-odds ``z = log P_L − log P_R``.

    linear: ``2r − 1 = tanh(z/2)``; tv: ``|tanh(z/2)|``; js: ``log2(2r) = 1 − log2(1 + e^{−z})`` (bits).
    ``g(1 − r)`` is ``g_logodds(−z)``. Shape-preserving; ``z = ±inf`` is allowed.
    """
    z = np.asarray(z, dtype=float)
    check_measure(measure)
    if measure == "linear":
        return np.tanh(0.5 * z)
    if measure == "tv":
        return np.abs(np.tanh(0.5 * z))
    return 1.0 - np.logaddexp(0.0, -z) / _LN2


def discrete_divergence(p: np.ndarray, q: np.ndarray, measure: str = "linear") -> np.ndarray:
    """Closed-form g-dissimilarity between discrete distributions along the last axis.

    ``linear``: ½ Σ (p−q)²/(p+q); ``tv``: ½ Σ |p−q|; ``js``: Jensen–Shannon divergence in **bits**
    (in [0, 1]). ``p`` and ``q`` broadcast; each must sum to 1 along the last axis (not checked).
    Returns an array with the last axis removed.
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    check_measure(measure)
    s = p + q
    if measure == "linear":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(s > 0, (p - q) ** 2 / np.where(s > 0, s, 1.0), 0.0)
        return 0.5 * terms.sum(-1)
    if measure == "tv":
        return 0.5 * np.abs(p - q).sum(-1)
    m = np.where(s > 0, 0.5 * s, 1.0)
    # xlogy: 0·log(0) = 0 without masking (scipy.special)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = xlogy(p, p) - xlogy(p, m) + xlogy(q, q) - xlogy(q, m)
    return np.maximum(0.5 * kl.sum(-1) / _LN2, 0.0)


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


def side_sums(x: np.ndarray, window: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``x`` over the left and right windows of every boundary along ``axis`` (the step axis).

    Returns two arrays with ``axis`` of length ``n_steps - 1`` (cumulative sums: O(n) in the grid).
    """
    x = np.moveaxis(np.asarray(x), axis, 0)
    n = x.shape[0]
    cs = np.concatenate([np.zeros((1,) + x.shape[1:], dtype=x.dtype), np.cumsum(x, axis=0)], axis=0)
    i = np.arange(n - 1)
    left = cs[i + 1] - cs[np.maximum(0, i - window + 1)]
    right = cs[np.minimum(n, i + window + 1)] - cs[i + 1]
    return np.moveaxis(left, 0, axis), np.moveaxis(right, 0, axis)
