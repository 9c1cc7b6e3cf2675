"""Choosing the sampler geometry of the prompt offsets of tau from the data (``parametrization="auto"``).

Non-centred tau offsets have no funnel when prompts share tau (the data cannot tell the prompt taus
apart), but when the prompt taus differ by much more than each is uncertain, the non-centred offsets
and sigma_tau form a banana that NUTS mixes slowly (R-hat 1.02-1.05 for sigma_tau); centred offsets are
then the better coordinates. Which case holds is read off the data before sampling: a per-prompt tau
estimate from each prompt's own cell means, its noise from two halves of each cell's scores, and the
spread of the estimates across prompts against that noise.
"""

from __future__ import annotations

import numpy as np

#: centre the tau offsets when the between-prompt sd of tau exceeds this many noise sds (all order parameters)
TAU_SEPARATION_CENTRED = 2.0


def _tau_estimates(means: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per-prompt transition location (run fraction) from cell means ``(T, P)``: the area between the late
    level and the normalised curve, which equals tau for any symmetric transition inside the run."""
    T = means.shape[0]
    edge = max(1, T // 10)
    early = np.nanmean(means[:edge], axis=0)
    late = np.nanmean(means[-edge:], axis=0)
    amp = np.where(np.abs(late - early) > 1e-12, late - early, np.nan)
    f = (late[None, :] - means) / amp[None, :]  # 1 before, 0 after
    f = np.where(np.isfinite(f), f, 0.5)
    area = np.sum(0.5 * (f[1:] + f[:-1]) * np.diff(u)[:, None], axis=0)
    return np.clip(area, -1.0, 2.0)


def tau_separation(obs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Between-prompt sd of tau in units of the noise sd of one prompt's tau estimate, per order parameter.

    ``obs`` holds the observations ``(K, T, P, N)`` (NaN = missing), ``u`` the checkpoint positions as run
    fractions ``(T,)``. Returns ``(K,)``; 0 where prompts look alike, NaN where it cannot be told (fewer
    than 2 scores per cell or fewer than 3 prompts).
    """
    K, T, P, N = obs.shape
    out = np.full(K, np.nan)
    if N < 2 or P < 3 or T < 4:
        return out
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for k in range(K):
                full = _tau_estimates(np.nanmean(obs[k], axis=-1), u)
                half_a = _tau_estimates(np.nanmean(obs[k, :, :, 0::2], axis=-1), u)
                half_b = _tau_estimates(np.nanmean(obs[k, :, :, 1::2], axis=-1), u)
                noise_var = np.nanmean((half_a - half_b) ** 2) / 4.0
                between = np.nanvar(full, ddof=1) - noise_var
                if not np.isfinite(noise_var) or noise_var <= 0:
                    continue
                out[k] = np.sqrt(max(between, 0.0) / noise_var)
    return out



def levels_from_end_values(start, end, tau_u, width_u, mask, pt):
    """Population levels ``(a, b)`` on the link scale from their blends at the first and last checkpoint.

    The free coordinates are ``start = (1 - s0) a + s0 b`` and ``end = (1 - s1) a + s1 b`` with
    ``s0, s1`` the population sigmoid at the first and last checkpoint (``tau_u``, ``width_u`` in run
    fractions): the link-scale levels of the curve at the two ends of the run, which the data pin even
    when the transition is not finished inside the run — where the asymptote ``b`` is extrapolated and
    forms a curved ridge with tau and width. Where ``mask`` is 0 (``(K,)``) the coordinates are the
    levels themselves. Returns ``(a, b, log_jacobian)``; add ``log_jacobian`` (``log |d(a, b)/d(start,
    end)|`` summed) to the log density to keep the priors on ``a`` and ``b``.
    """
    s0 = mask * pt.sigmoid(-tau_u / width_u)
    s1 = 1.0 - mask * (1.0 - pt.sigmoid((1.0 - tau_u) / width_u))
    det = s1 - s0  # > 0: the sigmoid rises; 1 where mask is 0
    a = (s1 * start - s0 * end) / det
    b = ((1.0 - s0) * end - (1.0 - s1) * start) / det
    return a, b, -pt.sum(pt.log(det))


def width_prior_median(priors: dict, u: np.ndarray, span: float) -> float:
    """Median of the LogNormal width prior on the unit step scale: ``priors["width_median_steps"]`` (training
    steps) when set (> 0), else the median spacing of the checkpoints in the data. An adaptive design sets
    it to the spacing of the checkpoints that exist, so the prior does not depend on which were asked."""
    w_steps = float(priors.get("width_median_steps", 0.0) or 0.0)
    return w_steps / span if w_steps > 0 else float(np.median(np.diff(u)))


def end_links(obs: np.ndarray, families: list, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start values of the step model's levels: the link-scale mean of the first and of the last two
    checkpoints per order parameter (``obs`` (K, T, P, N) on each family's observation scale), so that
    every chain starts in the mode where "before" is early and "after" late; ``fallback`` (K,) where the
    data cannot say (cut-point families, fewer than 4 checkpoints)."""
    start, end = np.array(fallback, dtype=float), np.array(fallback, dtype=float)
    for k, fam in enumerate(families):
        if fam.has_cut_points or obs.shape[1] < 4:
            continue
        for out, cells in ((start, obs[k, :2]), (end, obs[k, -2:])):
            if not np.isfinite(cells).any():
                continue
            mean = float(np.nanmean(cells))
            mean = float(np.clip(mean, 0.02, 0.98)) if fam.unit_mean else (max(mean, 0.05) if fam.link == "log" else mean)
            out[k] = float(fam.link_fn(mean))
    return start, end
