"""Bayesian model of the left/right score histograms: posterior draws of D per order parameter and joint.

At one boundary, each prompt ``p`` has counts ``n_L[p, c]`` and ``n_R[p, c]`` of its left- and
right-window samples over the joint cells ``c`` of the coarsened order parameters
(:mod:`.score_bins`); a real run has 4–8 samples per prompt and side, far too few for a histogram
per prompt. The model (``docs/decomposition.md`` gives the reasoning and the checks):

- **A histogram is a tree of binary splits**: a Pólya tree over an order parameter's ordered bins
  (lower half against upper half, recursively); for the joint, split by the first order parameter,
  then within each part by the next, and so on. Each split is modelled across prompts by
  :mod:`.split_model` (prompt centres, the three states *unchanged* / *on its own* / *with the
  population*, shared hyper-parameters), so a histogram of many cells is never shrunk as one block
  and every prior is proper. A prompt's two window histograms are the products of the split shares
  along each cell's path.
- **No change in the population**: for each histogram, H0 "every prompt unchanged at every split"
  against the model, prior probability ``P_NO_CHANGE`` = ½, by the product of the splits' Bayes
  factors. A draw takes D = 0 with the posterior probability of H0.
- **One model per histogram, combined under the data-processing inequality.** The model is fitted to
  the joint cells and, separately, to each order parameter's own bins; an order parameter whose bins
  are exactly the joint cells shares the joint's draws. The constraint ``D̄_k ≤ D̄_joint`` on the
  population values (prompt means) is conditioned on: a joint draw is weighted by the probability that
  each order parameter's draws lie below it, and each order parameter's draw (all prompts together) is
  drawn among those that do. (Per prompt the constraint is not imposed: the separate posteriors of one
  prompt come from the same few samples and are strongly dependent, so conditioning them as if
  independent would bias every D_k down.) The no-change switches are coupled through one uniform per
  draw, so a joint without change forces every order parameter to D = 0. So **0 ≤ D̄_k ≤ D̄_joint
  holds in every draw** of the population values.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit, softmax

from .divergence import discrete_divergence
from .split_model import split_draws, split_log_bf

__all__ = ["HistogramDraws", "histogram_posterior", "P_NO_CHANGE"]

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


def _split_tree(keys: np.ndarray) -> list[np.ndarray]:
    """Binary splits of the cells with bin tuples ``keys`` ``(C, K)``: one ``(C, 2)`` membership matrix per node.

    Cells are split by the first order parameter's bins (the lower half of its bins against the upper
    half, recursively: a Pólya tree), then within each part by the next order parameter, and so on.
    """
    C = keys.shape[0]
    nodes: list[np.ndarray] = []

    def split(idx: np.ndarray, k: int) -> None:
        if len(idx) <= 1 or k >= keys.shape[1]:
            return
        vals = np.unique(keys[idx, k])
        if len(vals) == 1:
            split(idx, k + 1)
            return
        low = np.isin(keys[idx, k], vals[: len(vals) // 2])
        M = np.zeros((C, 2))
        M[idx[low], 0] = 1.0
        M[idx[~low], 1] = 1.0
        nodes.append(M)
        split(idx[low], k)
        split(idx[~low], k)

    split(np.arange(C), 0)
    return nodes


def _tree_draws(nl: np.ndarray, nr: np.ndarray, run_counts: np.ndarray, nodes: list[np.ndarray], n_draws: int,
                rng) -> tuple[np.ndarray, np.ndarray, float]:
    """Draws of (π_L, π_R) ``(n_draws, P, C)`` from the split model at every node of a tree, and the log
    Bayes factor of "nothing changes" (:func:`_combine_bayes_factors` of the splits' factors)."""
    P, C = nl.shape
    log_l = np.zeros((n_draws, P, C))
    log_r = np.zeros((n_draws, P, C))
    node_bf = []
    for M in nodes:
        kl, kr = nl @ M[:, 0], nr @ M[:, 0]
        n_l, n_r = kl + nl @ M[:, 1], kr + nr @ M[:, 1]
        run = run_counts @ M
        share = (run[0] + 0.5) / (run.sum() + 1.0)
        node_bf.append(split_log_bf(kl, n_l, kr, n_r, share, rng))
        pl, pr = split_draws(kl, n_l, kr, n_r, share, n_draws, rng)  # (n, P): share of the first part
        first, second = M[:, 0] > 0, M[:, 1] > 0
        with np.errstate(divide="ignore"):  # every cell below the split takes its part's share
            log_l[..., first] += np.log(pl)[..., None]
            log_l[..., second] += np.log1p(-pl)[..., None]
            log_r[..., first] += np.log(pr)[..., None]
            log_r[..., second] += np.log1p(-pr)[..., None]
    return np.exp(log_l), np.exp(log_r), _combine_bayes_factors(np.array(node_bf))


def _combine_bayes_factors(log_bf01: np.ndarray) -> float:
    """log Bayes factor of "no split changes" against "each split changes with probability q", q ~ U(0, 1).

    With ``B_n = 1 / BF01_n`` per split, H1's evidence relative to H0 is ∫ Π_n (q B_n + 1 − q) dq
    (a grid in q): one clearly changed split is enough to reject H0, and many unchanged ones do not
    pile up evidence against a change that happened in one place.
    """
    if not len(log_bf01):
        return 0.0
    q = (np.arange(400) + 0.5) / 400
    terms = np.logaddexp(np.log(q)[:, None] - log_bf01[None, :], np.log1p(-q)[:, None]).sum(-1)
    return float(-(np.logaddexp.reduce(terms) - np.log(len(q))))


def histogram_posterior(
    n_left: np.ndarray,
    n_right: np.ndarray,
    marginals: Sequence[np.ndarray],
    measure: str = "linear",
    *,
    run_counts: np.ndarray | None = None,
    n_draws: int = 400,
    rng: np.random.Generator | int | None = None,
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
    run_counts
        ``(n_joint_cells,)`` counts of the whole run (the prior base measure); default: the boundaries' own.
    n_draws
        Posterior draws.
    rng
        Random generator or seed.
    """
    rng = np.random.default_rng(rng)
    n_left = np.asarray(n_left, dtype=float)
    n_right = np.asarray(n_right, dtype=float)
    n_b, P, C = n_left.shape
    K = len(marginals)
    run_counts = (n_left + n_right).sum((0, 1)) if run_counts is None else np.asarray(run_counts, dtype=float)
    has = (n_left.sum(-1) > 0) & (n_right.sum(-1) > 0)  # (n_b, P)
    keys = np.stack([M.argmax(1) for M in marginals], axis=-1)  # (C, K): bins of every joint cell
    trees = [(np.eye(C), run_counts, _split_tree(keys))]
    for M in marginals:
        trees.append((M, run_counts @ M, _split_tree(np.arange(M.shape[1])[:, None])))
    # an order parameter whose bins are exactly the joint cells carries the joint: same histogram, same draws
    same_as_joint = [M.shape[1] == C and bool((M.sum(0) == 1).all()) for M in marginals]
    prior = np.log(P_NO_CHANGE) - np.log1p(-P_NO_CHANGE)
    p0 = np.empty((n_b, K + 1))
    d = np.zeros((n_draws, n_b, K + 1, P))
    for b in range(n_b):
        h1 = []
        for i, (M, counts, nodes) in enumerate(trees):
            if i and same_as_joint[i - 1]:
                h1.append(None)
                continue
            pl, pr, log_bf = _tree_draws(n_left[b] @ M, n_right[b] @ M, counts, nodes, n_draws, rng)
            p0[b, (i - 1) % (K + 1)] = expit(log_bf + prior)
            h1.append(discrete_divergence(pl, pr, measure))  # (n_draws, P) under H1
        for k, same in enumerate(same_as_joint):
            if same:
                p0[b, k] = p0[b, K]
        d[:, b] = _condition_on_dpi(h1[0], h1[1:], p0[b], rng)
    d = np.where(has[None, :, None, :], d, np.nan)
    return HistogramDraws(d, p0)


def _condition_on_dpi(d_joint: np.ndarray, d_ops: list[np.ndarray | None], p0: np.ndarray, rng) -> np.ndarray:
    """Combine H1 draws ``(n, P)`` of the joint and of each order parameter under ``D̄_k ≤ D̄_joint``.

    The constraint is imposed on the population values (prompt means): a joint draw is weighted by
    the probability that each order parameter's draw lies below it, and each order parameter's draw
    (all prompts together) is drawn among those that do. Returns ``(n, K + 1, P)`` (joint last).
    Population no-change switches (``p0``: K order parameters, then the joint) are coupled through one
    uniform per draw, so a joint without change forces every order parameter to D = 0.
    """
    n, P = d_joint.shape
    K = len(d_ops)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pj = np.nanmean(d_joint, axis=1)  # (n,)
        pops = [None if x is None else np.nanmean(x, axis=1) for x in d_ops]
    order = [None if x is None else np.argsort(x) for x in pops]
    below = [None if x is None else np.searchsorted(x[o], pj, side="right") for x, o in zip(pops, order)]  # (n,) each
    with np.errstate(divide="ignore"):
        log_w = sum(np.log(b / n) for b in below if b is not None) if any(b is not None for b in below) else np.zeros(n)
    log_w = np.where(np.isfinite(pj), log_w, -np.inf)
    if np.isfinite(log_w).any():
        pick = rng.choice(n, size=n, p=softmax(log_w))
    else:  # no joint draw can hold the order parameters' draws: keep the joint (reported as a conflict)
        pick = np.arange(n)
    out = np.empty((n, K + 1, P))
    out[:, K] = d_joint[pick]
    for k in range(K):
        if d_ops[k] is None:  # the joint itself
            out[:, k] = d_joint[pick]
            continue
        c = np.maximum(below[k][pick], 1)  # draws of D̄_k at or below the joint draw
        t = order[k][np.minimum((rng.random(n) * c).astype(int), n - 1)]
        out[:, k] = d_ops[k][t]
    u = rng.random((n, 1, 1))
    zero = u < np.maximum(p0, p0[K])[None, :, None]  # a joint without change forces every D_k = 0
    return np.where(zero, 0.0, out)
