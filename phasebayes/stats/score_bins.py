"""Coarsening of judged scores into a few bins per order parameter, and the joint cells of all of them.

The histogram model (:mod:`.histogram_posterior`) works on counts of samples per bin. Default bins
(``bins=None``), from the scores of the whole run:

- an order parameter with at most ``max_levels`` (10) distinct values (indicators, Likert ratings,
  coarse judge scales) gets one bin per value, so nothing is lost;
- any other (continuous judge scores, lengths) gets ``n_quantile_bins`` (3) bins at the quantiles of
  its scores in the run: low / middle / high at equal occupancy, which 4–8 samples per prompt can
  still populate.

``bins`` may override this per order parameter: an int (that many quantile bins), or explicit edges.
The **joint** is the vector of all order parameters: its cells are the combinations of bins that occur
in the run (samples with every score present). A reported fraction refers to these bins: a coarser
binning can only lower D (data-processing inequality).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ModelSpecError
from .divergence import side_sums

__all__ = ["ScoreBins", "coarsen_scores", "window_counts", "MAX_LEVELS", "N_QUANTILE_BINS"]

MAX_LEVELS = 10
"""An order parameter with at most this many distinct values gets one bin per value."""
N_QUANTILE_BINS = 3
"""Bins (at run quantiles) of an order parameter with more distinct values."""


@dataclass
class ScoreBins:
    """Bin codes of every sample, per order parameter and joint.

    Attributes
    ----------
    names
        Order parameters, length K.
    edges
        Name → bin edges (score units), length ``n_bins + 1``.
    codes
        ``(K, n_steps, n_prompts, n_samples)`` int: bin of each score, ``-1`` = missing.
    joint_codes
        ``(n_steps, n_prompts, n_samples)`` int: joint cell, ``-1`` unless every score is present.
    joint_bins
        ``(n_joint_cells, K)`` int: the bin of each order parameter in each joint cell.
    """

    names: list[str]
    edges: dict[str, list[float]]
    codes: np.ndarray
    joint_codes: np.ndarray
    joint_bins: np.ndarray

    @property
    def n_bins(self) -> list[int]:
        """Number of bins per order parameter."""
        return [len(self.edges[n]) - 1 for n in self.names]

    @property
    def n_joint(self) -> int:
        """Number of joint cells that occur in the run."""
        return int(self.joint_bins.shape[0])

    def marginal_matrix(self, k: int) -> np.ndarray:
        """``(n_joint_cells, n_bins_k)`` 0/1 matrix mapping joint cells to the bins of order parameter ``k``."""
        return (self.joint_bins[:, k][:, None] == np.arange(self.n_bins[k])[None, :]).astype(float)


def _default_edges(values: np.ndarray, n_bins: int, max_levels: int) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.array([-0.5, 0.5])
    levels = np.unique(finite)
    if len(levels) <= max_levels:
        mids = 0.5 * (levels[1:] + levels[:-1])
        return np.concatenate([[levels[0] - 0.5], mids, [levels[-1] + 0.5]])
    inner = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]))
    inner = inner[(inner > levels[0]) & (inner < levels[-1])]
    return np.concatenate([[levels[0]], inner, [levels[-1]]])


def _resolve_edges(spec, values: np.ndarray, name: str, n_bins: int, max_levels: int) -> np.ndarray:
    if spec is None:
        return _default_edges(values, n_bins, max_levels)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 1:
            raise ModelSpecError(f"bins for '{name}' must be >= 1, got {spec}.")
        return _default_edges(values, int(spec), max_levels=int(spec))
    edges = np.asarray(spec, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ModelSpecError(f"bins for '{name}' must be strictly increasing edges (at least 2), got {spec!r}.")
    return edges


def _codes(values: np.ndarray, edges: np.ndarray, name: str) -> np.ndarray:
    finite = np.isfinite(values)
    outside = finite & ((values < edges[0]) | (values > edges[-1]))
    if outside.any():
        raise ModelSpecError(
            f"{int(outside.sum())} score(s) of '{name}' lie outside its bins [{edges[0]:g}, {edges[-1]:g}]; "
            "widen the bin edges."
        )
    codes = np.clip(np.searchsorted(edges, np.where(finite, values, edges[0]), side="right") - 1, 0, len(edges) - 2)
    return np.where(finite, codes, -1)


def coarsen_scores(
    score: np.ndarray,
    names: Sequence[str],
    bins: int | Sequence[float] | Mapping[str, int | Sequence[float]] | None = None,
    *,
    n_quantile_bins: int = N_QUANTILE_BINS,
    max_levels: int = MAX_LEVELS,
) -> ScoreBins:
    """Bin every order parameter's scores and build the joint cells.

    ``score`` has shape ``(K, n_steps, n_prompts, n_samples)`` (NaN = no score); ``bins`` as in the
    module docstring (``None``, an int or edges for all, or a mapping name → int/edges).
    """
    score = np.asarray(score, dtype=float)
    names = [str(n) for n in names]
    if isinstance(bins, Mapping):
        extra = set(bins) - set(names)
        if extra:
            raise ModelSpecError(f"bins names order parameter(s) {sorted(extra)} that are not analysed ({names}).")
    edges, codes = {}, []
    for k, name in enumerate(names):
        spec = bins.get(name) if isinstance(bins, Mapping) else bins
        e = _resolve_edges(spec, score[k], name, n_quantile_bins, max_levels)
        edges[name] = [float(x) for x in e]
        codes.append(_codes(score[k], e, name))
    codes = np.stack(codes)
    complete = (codes >= 0).all(0)
    sizes = [len(edges[n]) - 1 for n in names]
    flat = np.ravel_multi_index(tuple(np.where(complete, codes[k], 0) for k in range(len(names))), sizes)
    uniq, inv = np.unique(flat[complete], return_inverse=True)
    joint = np.full(complete.shape, -1, dtype=np.int64)
    joint[complete] = inv
    joint_bins = np.stack(np.unravel_index(uniq, sizes), axis=-1) if len(uniq) else np.zeros((0, len(names)), int)
    return ScoreBins(names, edges, codes, joint, joint_bins.astype(np.int64))


def window_counts(codes: np.ndarray, n_cells: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pooled counts of the left and right windows of every boundary.

    ``codes`` ``(n_steps, n_prompts, n_samples)`` with ``-1`` = missing; returns ``(n_left, n_right)``,
    each ``(n_boundaries, n_prompts, n_cells)`` float.
    """
    n_steps, P, _ = codes.shape
    ok = codes >= 0
    flat = (np.arange(n_steps)[:, None, None] * P + np.arange(P)[None, :, None]) * n_cells + np.where(ok, codes, 0)
    counts = np.bincount(flat[ok], minlength=n_steps * P * n_cells).reshape(n_steps, P, n_cells).astype(float)
    return side_sums(counts, window, axis=0)
