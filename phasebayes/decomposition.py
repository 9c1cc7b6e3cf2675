"""Decomposition of the total distributional change into order parameters (DESIGN.md §2.1, notes §4).

The fraction captured by order parameter k at a boundary is ρ_k = D_g(O_k) / D_g(full), in [0, 1] by
the data-processing inequality (DPI); ``joint`` is the vector of all order parameters (ρ_joint ≥ every
single ρ_k in the population; single fractions need not sum to 1).

Uncertainty (:meth:`Decomposition.fit`):

1. **Finite samples — Bayesian bootstrap.** Every sample gets a Gamma(1) weight, normalised within its
   checkpoint (a Dirichlet(1, …, 1) over the samples of each checkpoint, i.e. a posterior draw of each
   checkpoint's output distribution supported on the observed samples). The *same* weights give a draw
   of the total change (weighted per-sample likelihood terms) and of every order parameter's change
   (weighted histograms of the same samples), so numerator and denominator share their noise. The
   bootstrap distribution of a plug-in numerator is biased upwards like the plug-in itself, so each
   numerator's draws are shifted to centre on its bias-corrected point estimate (the ``correction`` of
   :mod:`phasebayes.dissimilarity`: permutation null for linear/js, bootstrap for tv by default) before
   the ratio is taken. The ratio of the
   prompt-averaged draws gives the curve ``rho`` with intervals at every boundary.
2. **Heterogeneity across prompts — hierarchical model (PyMC).** At the transition (the peak of the
   prompt-averaged total curve) and at any step the user names, the per-prompt fractions ρ̂_kp (point
   estimate) with their bootstrap SDs s_kp (half the 16–84 % range, robust to heavy ratio tails) enter a
   random-effects model: ρ̂_kp ~ Normal(θ_kp, s_kp), θ_kp = μ_k + σ_k z_kp, z_kp ~ Normal(0, 1),
   μ_k ~ Normal(0.5, 1), σ_k ~ HalfNormal(0.25). ``fractions()`` reports μ_k: the fraction for a
   typical prompt of the population the prompts were drawn from. No bound is imposed at 1: a
   posterior of μ_k lying above 1 beyond its interval is a DPI violation (a bad estimator or bad data),
   flagged with a :class:`DPIViolationWarning` and the ``dpi_violation`` column, never clipped.

With one prompt (or ``method="bootstrap"``) the bootstrap ratio is reported instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from . import defaults
from .dissimilarity import (
    DEFAULT_N_PERMUTATIONS,
    MEASURES,
    _resolve_correction,
    DissimilarityResult,
    _build_result,
    _find_node,
    _netcdf_safe,
    _prepare,
    _Prepared,
    _restore,
    discrete_divergence,
    plot_peak_vs_tau,
)
from .intervals import interval_along as interval
from .errors import DiagnosticsWarning, ModelSpecError, RunDataError

__all__ = ["decompose", "Decomposition", "DecompositionResult", "DPIViolationWarning", "interval"]


class DPIViolationWarning(UserWarning):
    """A fraction ρ exceeds 1 beyond its credible interval: the estimators or the data are inconsistent."""


# ----------------------------------------------------------------------------------------------------
# numpy helpers
# ----------------------------------------------------------------------------------------------------


def _side_sums(x: np.ndarray, window: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``x`` over the left and right windows of every boundary along ``axis`` (steps), by cumsum."""
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    cs = np.concatenate([np.zeros((1,) + x.shape[1:], dtype=x.dtype), np.cumsum(x, axis=0)], axis=0)
    i = np.arange(n - 1)
    left = cs[i + 1] - cs[np.maximum(0, i - window + 1)]
    right = cs[np.minimum(n, i + window + 1)] - cs[i + 1]
    return np.moveaxis(left, 0, axis), np.moveaxis(right, 0, axis)


def _bootstrap_curves(prep: _Prepared, d_op_corr: np.ndarray, n_draws: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Bayesian-bootstrap draws of total and order-parameter D per boundary and prompt.

    One Gamma(1) weight per sample and draw, normalised within each checkpoint (and prompt), shared by
    the total and every order parameter. Returns ``(total, ops)`` with shapes ``(n_draws, n_b, P)`` and
    ``(n_ops, n_draws, n_b, P)``; the order-parameter draws are shifted to centre on ``d_op_corr``
    (``(n_ops, n_b, P)``), the bias-corrected point estimates.
    """
    n_steps, P = len(prep.steps), len(prep.prompts)
    S = prep.total_terms.shape[-1]
    L = prep.window
    n_b = n_steps - 1
    # weights laid out (step, prompt, draw, sample) so that every sum over samples is a batched matmul
    W = rng.standard_gamma(1.0, size=(n_steps, P, n_draws, S))
    names = list(prep.op_codes)
    tot = np.empty((n_draws, n_b, P))
    for b in range(n_b):
        wb = W[prep.idx[b]]  # (2L, P, B, S)
        ok = prep.total_ok[b] & prep.valid[b][:, None, None]  # (2L, P, S)
        t = np.where(ok, prep.total_terms[b], 0.0)
        num = (wb @ t[..., None])[..., 0]  # (2L, P, B)
        den = (wb @ ok[..., None].astype(float))[..., 0]
        has = den > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(has, num / np.where(has, den, 1.0), 0.0)
        sides = []
        for sl in (slice(0, L), slice(L, 2 * L)):
            cnt = has[sl].sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                sides.append(m[sl].sum(0) / np.where(cnt > 0, cnt, np.nan))
        tot[:, b] = (0.5 * (sides[0] + sides[1])).T
    ops = np.empty((len(names), n_draws, n_b, P))
    for k, name in enumerate(names):
        C = prep.op_ncells[name]
        if name in prep.op_soft:
            pr = prep.op_soft[name]
            okc = np.isfinite(pr).all(-1)  # (n_steps, P, S)
            chan = np.where(okc[..., None], pr, 0.0)
        else:
            codes = prep.op_codes[name]
            okc = codes >= 0
            chan = (codes[..., None] == np.arange(C)).astype(float)  # one-hot, zero rows where missing
        h = W @ chan  # (n_steps, P, B, C): weighted counts; rows of chan sum to 1 where valid
        tot_w = h.sum(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            h = np.where(tot_w > 0, h / np.where(tot_w > 0, tot_w, 1.0), 0.0)
        has = okc.any(-1).astype(float)  # (n_steps, P): checkpoint has data for this order parameter
        hl, hr = _side_sums(h * has[:, :, None, None], L, axis=0)  # (n_b, P, B, C)
        nl, nr = _side_sums(has, L, axis=0)  # (n_b, P)
        with np.errstate(invalid="ignore", divide="ignore"):
            hl = hl / np.where(nl > 0, nl, np.nan)[:, :, None, None]
            hr = hr / np.where(nr > 0, nr, np.nan)[:, :, None, None]
        ops[k] = discrete_divergence(hl, hr, prep.measure).transpose(2, 0, 1)
    # centre each numerator's draws on its bias-corrected point estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ops = ops - np.nanmean(ops, axis=1, keepdims=True) + d_op_corr[:, None]
    return tot, ops


def _robust_sd(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q16, q84 = np.nanquantile(x, [0.16, 0.84], axis=axis)
    return 0.5 * (q84 - q16)


# ----------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------


def decompose(
    ds: xr.Dataset,
    window: int = 3,
    measure: str = "linear",
    *,
    order_parameters: Sequence[str] | None = None,
    bins=None,
    correction: str = "auto",
    n_permutations: int = DEFAULT_N_PERMUTATIONS,
    total: str = "auto",
    embeddings=None,
    on_missing: str = "raise",
    classifier_options: Mapping | None = None,
) -> Decomposition:
    """Set up the decomposition of the total change into order parameters; call ``.fit()``.

    Arguments as in :func:`phasebayes.dissimilarity` (window half-length L, measure, bins, bias
    correction, estimator of the total change). Input errors are raised here, before any fitting.
    """
    return Decomposition(
        ds, window=window, measure=measure, order_parameters=order_parameters, bins=bins, correction=correction,
        n_permutations=n_permutations, total=total, embeddings=embeddings, on_missing=on_missing,
        classifier_options=classifier_options,
    )


class Decomposition:
    """A decomposition specification bound to a run dataset (see :func:`decompose`)."""

    def __init__(self, ds: xr.Dataset, **config):
        measure = config["measure"] if config["measure"] in MEASURES else "linear"  # a bad measure is reported below
        config["correction"] = _resolve_correction(config["correction"], measure)
        self.config = dict(config)
        self._prep = _prepare(
            ds, config["window"], config["measure"], order_parameters=config["order_parameters"], bins=config["bins"],
            total=config["total"], embeddings=config["embeddings"], on_missing=config["on_missing"],
            classifier_options=config["classifier_options"], rng=np.random.default_rng(0),
        )
        if self._prep.total_terms is None:
            raise RunDataError(
                "decompose needs the total change: 'logp' (log-probs of every response under the checkpoints of "
                "its windows) or sentence embeddings of the responses (phasebayes.embeddings.add_embeddings)."
            )
        if not self._prep.op_names:
            raise RunDataError("decompose needs judged scores ('score') of at least one order parameter.")

    def fit(
        self,
        *,
        at: float | Sequence[float] | Mapping[str, float] | pd.DataFrame | None = None,
        method: str = "hierarchical",
        n_draws: int = 400,
        ci_prob: float | None = None,
        ci_kind: str | None = None,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 2,
        cores: int = 2,
        nuts_sampler: str = "pymc",
        target_accept: float = 0.95,
        random_seed: int | None = 0,
        progressbar: bool = False,
    ) -> DecompositionResult:
        """Estimate the fractions with credible intervals.

        Parameters
        ----------
        at
            Extra step(s) (training-step units, e.g. a posterior τ) at which to report fractions besides
            the peak of the total curve: a number, a sequence, a mapping label → step, or a DataFrame
            indexed by order parameter with a ``mean`` column (``ChangePointResult.transition_steps()``;
            locations ``"tau <name>"``). Each is mapped to the boundary with the nearest midpoint.
        method
            ``"hierarchical"`` (bootstrap + PyMC pooling across prompts; default) or ``"bootstrap"``
            (bootstrap only: the ratio of prompt-averaged D's, no prompt-heterogeneity term).
        n_draws
            Bayesian-bootstrap draws.
        ci_prob, ci_kind
            Interval mass and kind (defaults :data:`phasebayes.defaults.CI_PROB` / ``CI_KIND``); stored
            with the result, can be changed in :meth:`DecompositionResult.fractions`.
        draws, tune, chains, cores, nuts_sampler, target_accept, progressbar
            Passed to :func:`pymc.sample` (``cores`` explicitly: PyMC's default uses half the CPUs).
        random_seed
            Seed of the bootstrap (and the sampler).
        """
        if method not in ("hierarchical", "bootstrap"):
            raise ModelSpecError(f"method must be 'hierarchical' or 'bootstrap', got {method!r}.")
        if not isinstance(n_draws, (int, np.integer)) or n_draws < 20:
            raise ModelSpecError(f"n_draws must be an integer >= 20, got {n_draws!r}.")
        ci_prob = defaults.CI_PROB if ci_prob is None else float(ci_prob)
        ci_kind = defaults.CI_KIND if ci_kind is None else ci_kind
        interval(np.zeros(2), ci_prob, ci_kind)  # validates both
        prep = self._prep
        rng = np.random.default_rng(random_seed)
        dres = _build_result(prep, correction=self.config["correction"], n_permutations=self.config["n_permutations"],
                             n_boot=50, rng=rng, random_seed=random_seed)
        d = dres.data
        if prep.total_estimator == "classifier_lower_bound":
            warnings.warn(
                "the total change is a classifier lower bound (no logp), so the fractions are upper bounds "
                "and can exceed 1 without any DPI violation.",
                UserWarning,
                stacklevel=2,
            )
        names = [str(n) for n in d["order_parameter"].values]
        mid = d["mid_step"].values
        d_tot_p = d["d_total_prompt"].values  # (n_b, P)
        d_op_p = d["d_op_prompt"].values  # (K, n_b, P)
        tot, ops = _bootstrap_curves(prep, d_op_p, int(n_draws), rng)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tot_mean = np.nanmean(tot, axis=-1)  # (B, n_b)
            ops_mean = np.nanmean(ops, axis=-1)  # (K, B, n_b)
            rho_draws = ops_mean / tot_mean  # (K, B, n_b)
            rho_point = d["d_op"].values / d["d_total"].values  # (K, n_b)
            rho_prompt_draws = ops / tot  # (K, B, n_b, P)
            rho_prompt_point = d_op_p / d_tot_p
        lo, hi = interval(rho_draws, ci_prob, ci_kind, axis=1)
        peak_b = int(np.nanargmax(d["d_total"].values))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            peak_draws = mid[np.nanargmax(np.where(np.isfinite(tot_mean), tot_mean, -np.inf), axis=1)]
        # locations
        loc_names, loc_b, loc_req = ["peak"], [peak_b], [float(mid[peak_b])]
        for label, s in _named_steps(at):
            b = int(np.argmin(np.abs(mid - s)))
            loc_names.append(label)
            loc_b.append(b)
            loc_req.append(float(s))
        loc_b = np.array(loc_b)
        m = rho_prompt_point[:, loc_b].transpose(1, 0, 2)  # (n_loc, K, P)
        s = _robust_sd(rho_prompt_draws[:, :, loc_b], axis=1).transpose(1, 0, 2)
        boot_loc = rho_draws[:, :, loc_b].transpose(2, 0, 1)  # (n_loc, K, B)

        out = xr.Dataset(
            {
                "rho": (("order_parameter", "mid_step"), rho_point),
                "rho_draws": (("order_parameter", "draw_boot", "mid_step"), rho_draws),
                "rho_prompt": (("location", "order_parameter", "prompt"), m),
                "rho_prompt_sd": (("location", "order_parameter", "prompt"), s),
                "rho_boot": (("location", "order_parameter", "draw_boot"), boot_loc),
                "peak_step_draws": (("draw_boot",), peak_draws.astype(float)),
            },
            coords={
                "order_parameter": np.array(names, dtype=object),
                "mid_step": mid,
                "prompt": d["prompt"].values,
                "location": np.array(loc_names, dtype=object),
                "location_step": ("location", mid[loc_b]),
                "requested_step": ("location", np.array(loc_req)),
            },
        )
        out["rho_lower"] = (("order_parameter", "mid_step"), lo)
        out["rho_upper"] = (("order_parameter", "mid_step"), hi)
        out["dpi_violation_curve"] = (("order_parameter", "mid_step"), np.nan_to_num(lo, nan=-np.inf) > 1.0)
        P = len(prep.prompts)
        used = "bootstrap" if (method == "bootstrap" or P < 2) else "hierarchical"
        posterior = None
        if used == "hierarchical":
            posterior = _fit_hierarchical(m, s, loc_names, names, [str(p) for p in prep.prompts], draws=draws, tune=tune,
                                          chains=chains, cores=cores, nuts_sampler=nuts_sampler,
                                          target_accept=target_accept, random_seed=random_seed, progressbar=progressbar)
        out.attrs = {
            "method": used,
            "ci_prob": ci_prob,
            "ci_kind": ci_kind,
            "n_draws": int(n_draws),
            "measure": prep.measure,
            "window": int(prep.window),
            "total_estimator": prep.total_estimator,
            "estimand": ("mu: mean fraction over the prompt population (hierarchical)" if used == "hierarchical"
                         else "ratio of prompt-averaged D(order parameter) to prompt-averaged D(full)"),
            "phasebayes_result": "DecompositionResult",
        }
        result = DecompositionResult(out, dres, posterior)
        for label in loc_names:
            table = result.fractions(label)
            if table["dpi_violation"].any():
                bad = list(table.index[table["dpi_violation"]])
                warnings.warn(
                    f"fraction(s) of {bad} exceed 1 beyond the {ci_prob:.0%} interval at {label} (step "
                    f"{table.attrs['step']:g}): the data-processing inequality is violated, so the order-parameter or "
                    "total estimator (or the data) is wrong. Values are reported unclipped.",
                    DPIViolationWarning,
                    stacklevel=2,
                )
        return result


def _named_steps(at) -> list[tuple[str, float]]:
    """Normalise ``at`` to ``[(label, step)]``: a number, a sequence of numbers, a mapping label → step,
    or a DataFrame indexed by order parameter with a ``mean`` column (e.g. ``transition_steps()``)."""
    if at is None:
        return []
    if isinstance(at, pd.DataFrame):
        if "mean" not in at.columns:
            raise ModelSpecError("a DataFrame passed as 'at' needs a 'mean' column (posterior mean step per row).")
        items = [(f"tau {idx}", v) for idx, v in zip(at.index, at["mean"])]
    elif isinstance(at, Mapping):
        items = [(str(k), v) for k, v in at.items()]
    else:
        items = [(None, v) for v in np.atleast_1d(np.asarray(at, dtype=float))]
    out = []
    for label, v in items:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ModelSpecError(f"'at' steps must be numbers (training steps), got {v!r}.") from None
        if not np.isfinite(v):
            raise ModelSpecError(f"'at' steps must be finite numbers, got {v!r}.")
        out.append((f"step {v:g}" if label is None else label, v))
    labels = [lab for lab, _ in out]
    if "peak" in labels or len(set(labels)) != len(labels):
        raise ModelSpecError(f"location labels must be unique and not 'peak', got {labels}.")
    return out


def _fit_hierarchical(m, s, loc_names, names, prompts, *, draws, tune, chains, cores, nuts_sampler, target_accept,
                      random_seed, progressbar) -> xr.Dataset:
    """Random-effects pooling of per-prompt fractions; returns the posterior as an xarray Dataset."""
    import pymc as pm

    obs_ok = np.isfinite(m) & np.isfinite(s)
    if not obs_ok.any():
        raise RunDataError("no prompt has a finite fraction at the requested steps (total change is zero everywhere?).")
    # A bootstrap that sees no variation (e.g. every score of a prompt in one bin) says nothing about the
    # uncertainty: floor each SD at a quarter of the median SD of the other prompts (same location and
    # order parameter), so that one such prompt cannot pin the population mean.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        floor = 0.25 * np.nanmedian(np.where(obs_ok & (s > 0), s, np.nan), axis=-1, keepdims=True)
    # ... and never below 0.02 (two percentage points of the fraction): a smaller bootstrap SD comes
    # from too few samples to vary, not from certainty, and would pin the model to one prompt.
    floor = np.maximum(np.where(np.isfinite(floor) & (floor > 0), floor, 0.02), 0.02)
    m_f = np.where(obs_ok, m, 0.0)
    s_f = np.where(obs_ok, np.maximum(s, floor), 1e3)  # missing prompts carry no information
    coords = {"location": loc_names, "order_parameter": names, "prompt": prompts}
    dims3 = ("location", "order_parameter", "prompt")
    # The per-prompt fractions theta are integrated out analytically (random-effects meta-analysis:
    # rho_hat ~ Normal(mu, sqrt(sigma² + s²))), so NUTS samples only (mu, sigma). Sampling theta
    # explicitly made a ridge as narrow as the smallest bootstrap SD, on which the chains froze.
    import pytensor.tensor as pt

    with pm.Model(coords=coords):
        mu = pm.Normal("mu", 0.5, 1.0, dims=dims3[:2])
        sigma = pm.HalfNormal("sigma", 0.25, dims=dims3[:2])
        pm.Normal("rho_hat", mu[..., None], pt.sqrt(sigma[..., None] ** 2 + s_f**2), observed=m_f, dims=dims3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            idata = pm.sample(draws=draws, tune=tune, chains=chains, cores=min(cores, chains), nuts_sampler=nuts_sampler,
                              target_accept=target_accept, random_seed=random_seed, progressbar=progressbar,
                              compute_convergence_checks=False)
    post = idata["posterior"].to_dataset()[["mu", "sigma"]]
    # theta | mu, sigma, data is normal (conjugate): draw it once per posterior draw
    rng = np.random.default_rng(random_seed)
    mu_d = post["mu"].values[..., None]
    sig_d = np.maximum(post["sigma"].values[..., None], 1e-12)
    prec = 1.0 / s_f**2 + 1.0 / sig_d**2
    mean = (m_f / s_f**2 + mu_d / sig_d**2) / prec
    theta = mean + rng.standard_normal(mean.shape) / np.sqrt(prec)
    post["theta"] = (("chain", "draw", *dims3), theta)
    stats = idata["sample_stats"].to_dataset()
    n_div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    rhat = _rhat(post["mu"].values)
    post.attrs = {"divergences": n_div, "max_rhat_mu": float(np.nanmax(rhat)), "nuts_sampler": nuts_sampler}
    from .defaults import RHAT_MAX

    if n_div > 0 or np.nanmax(rhat) > RHAT_MAX:
        warnings.warn(
            f"hierarchical fraction model: {n_div} divergence(s), max R-hat {np.nanmax(rhat):.3f}; increase tune/"
            "target_accept or use method='bootstrap'.",
            DiagnosticsWarning,
            stacklevel=3,
        )
    return post


def _rhat(x: np.ndarray) -> np.ndarray:
    """Split-R-hat over (chain, draw, ...) arrays (Gelman et al. 2013, no rank normalisation)."""
    c, n = x.shape[:2]
    h = n // 2
    sp = np.concatenate([x[:, :h], x[:, h : 2 * h]], axis=0)
    w = sp.var(axis=1, ddof=1).mean(0)
    b = h * sp.mean(1).var(axis=0, ddof=1)
    var = (h - 1) / h * w + b / h
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(var / w)


class DecompositionResult:
    """Fractions ρ_k with credible intervals, as a curve and at named locations.

    ``data`` holds the bootstrap curve (``rho``, ``rho_lower``, ``rho_upper``, ``rho_draws``), the
    per-prompt inputs of the hierarchical model and the bootstrap at each location; ``posterior`` (or
    None for ``method="bootstrap"``) the hierarchical posterior (``mu``, ``sigma``, ``theta``);
    ``dissimilarity`` the underlying :class:`~phasebayes.dissimilarity.DissimilarityResult`.
    """

    def __init__(self, data: xr.Dataset, dissimilarity: DissimilarityResult, posterior: xr.Dataset | None):
        self.data = data
        self.dissimilarity = dissimilarity
        self.posterior = posterior

    def __repr__(self) -> str:
        return (f"DecompositionResult(method={self.data.attrs['method']!r}, measure={self.data.attrs['measure']!r}, "
                f"locations={list(self.data['location'].values)})")

    @property
    def peak_step(self) -> float:
        """Midpoint step of the peak of the total curve (the transition)."""
        return float(self.data["location_step"].sel(location="peak"))

    def fractions(self, location: str | float = "peak", *, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Table of fractions at one location, indexed by order parameter (and ``joint``).

        Parameters
        ----------
        location
            ``"peak"`` (default), a location label (``"step 150"``), or a step given to ``fit(at=...)``.
        ci_prob, ci_kind
            Override the interval of the fit.

        Returns
        -------
        DataFrame with columns ``mean``, ``median``, ``lower``, ``upper`` (hierarchical μ, or the bootstrap
        ratio), ``estimate`` (ratio of prompt-averaged point estimates), ``sd_prompt`` (posterior mean of
        the between-prompt SD; NaN for the bootstrap), ``p_above_1`` and ``dpi_violation`` (lower > 1).
        ``attrs``: ``ci_prob``, ``ci_kind``, ``step`` (midpoint step used), ``requested_step``,
        ``method``, ``measure``, ``window``, ``total_estimator``, ``estimand``.
        """
        a = self.data.attrs
        ci_prob = float(a["ci_prob"]) if ci_prob is None else float(ci_prob)
        ci_kind = str(a["ci_kind"]) if ci_kind is None else ci_kind
        labels = [str(x) for x in self.data["location"].values]
        if isinstance(location, str):
            if location not in labels:
                raise ModelSpecError(f"unknown location {location!r}; available: {labels}.")
            li = labels.index(location)
        else:
            req = self.data["requested_step"].values
            hits = np.flatnonzero(np.isclose(req, float(location)))
            if not len(hits):
                raise ModelSpecError(f"no fit location at step {location}; pass it to fit(at=...). Available: {labels}.")
            li = int(hits[-1])
        names = [str(n) for n in self.data["order_parameter"].values]
        b = int(np.argmin(np.abs(self.data["mid_step"].values - float(self.data["location_step"].values[li]))))
        if self.posterior is not None:
            mu = self.posterior["mu"].values[:, :, li]  # (chain, draw, K)
            draws = mu.reshape(-1, mu.shape[-1]).T  # (K, n)
            sd_prompt = self.posterior["sigma"].values[:, :, li].reshape(-1, len(names)).mean(0)
        else:
            draws = self.data["rho_boot"].values[li]
            sd_prompt = np.full(len(names), np.nan)
        lo, hi = interval(draws, ci_prob, ci_kind, axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            df = pd.DataFrame(
                {
                    "mean": np.nanmean(draws, -1),
                    "median": np.nanmedian(draws, -1),
                    "lower": lo,
                    "upper": hi,
                    "estimate": self.data["rho"].values[:, b],
                    "sd_prompt": sd_prompt,
                    "p_above_1": np.nanmean(draws > 1.0, -1),
                    "dpi_violation": np.nan_to_num(lo, nan=-np.inf) > 1.0,
                },
                index=pd.Index(names, name="order_parameter"),
            )
        df.attrs.update(
            {
                "ci_prob": ci_prob,
                "ci_kind": ci_kind,
                "location": labels[li],
                "step": float(self.data["location_step"].values[li]),
                "requested_step": float(self.data["requested_step"].values[li]),
                "method": a["method"],
                "measure": a["measure"],
                "window": int(a["window"]),
                "total_estimator": a["total_estimator"],
                "estimand": a["estimand"],
            }
        )
        return df

    def curve(self) -> pd.DataFrame:
        """The fraction curve (bootstrap ratio of prompt-averaged D's) as a long table: ``order_parameter``,
        ``mid_step``, ``estimate``, ``lower``, ``upper``, ``dpi_violation``; interval attrs as in ``fractions``."""
        d = self.data
        df = (
            xr.Dataset({"estimate": d["rho"], "lower": d["rho_lower"], "upper": d["rho_upper"],
                        "dpi_violation": d["dpi_violation_curve"]})
            .to_dataframe()
            .reset_index()[["order_parameter", "mid_step", "estimate", "lower", "upper", "dpi_violation"]]
        )
        df.attrs.update({"ci_prob": float(d.attrs["ci_prob"]), "ci_kind": str(d.attrs["ci_kind"])})
        return df

    def peak_interval(self, ci_prob: float | None = None, ci_kind: str | None = None) -> tuple[float, float]:
        """Interval of the peak location of the total curve over the bootstrap draws (training steps)."""
        lo, hi = interval(self.data["peak_step_draws"].values, float(self.data.attrs["ci_prob"]) if ci_prob is None else ci_prob,
                          "eti" if ci_kind is None else ci_kind)
        return float(lo), float(hi)

    # ------------------------------------------------------------------ storage
    def to_datatree(self, name: str = "decomposition") -> xr.DataTree:
        """As an :class:`xarray.DataTree`: this node holds the fraction data, children
        ``dissimilarity`` (the curves) and ``posterior`` (hierarchical draws, if any). Attach it to the
        analysis tree and save with ``tree.to_netcdf(path, engine="netcdf4")``."""
        children = {"dissimilarity": self.dissimilarity.to_datatree("dissimilarity")}
        if self.posterior is not None:
            children["posterior"] = xr.DataTree(dataset=_netcdf_safe(self.posterior), name="posterior")
        node = xr.DataTree(dataset=_netcdf_safe(self.data), name=name, children=children)
        return node

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> DecompositionResult:
        """Rebuild from :meth:`to_datatree` output (or a tree containing it, e.g. read with
        :func:`xarray.open_datatree`)."""
        node = _find_node(tree, "DecompositionResult", "decomposition")
        data = _restore(node.to_dataset())
        dres = DissimilarityResult.from_datatree(node["dissimilarity"])
        post = _restore(node["posterior"].to_dataset()) if "posterior" in node.children else None
        return cls(data, dres, post)

    # ------------------------------------------------------------------ plots
    def plot_fractions(self, location: str | float = "peak", *, ax=None, percent: bool = True):
        """Bar chart of the fractions at ``location`` with their credible intervals; returns the Figure."""
        import matplotlib.pyplot as plt

        df = self.fractions(location)
        if ax is None:
            fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(df), 3.5))
        else:
            fig = ax.figure
        f = 100.0 if percent else 1.0
        x = np.arange(len(df))
        mean = df["mean"].to_numpy() * f
        err = np.vstack([mean - df["lower"].to_numpy() * f, df["upper"].to_numpy() * f - mean])
        ax.bar(x, mean, color=["tab:red" if v else "tab:blue" for v in df["dpi_violation"]])
        ax.errorbar(x, mean, yerr=np.clip(err, 0, None), fmt="none", color="k", capsize=4)
        ax.axhline(f, color="grey", ls=":", lw=1)
        ax.set_xticks(x, list(df.index), rotation=30, ha="right")
        ax.set_ylabel("share of total change" + (" [%]" if percent else ""))
        ax.set_title(f"{df.attrs['location']} (step {df.attrs['step']:g}); {df.attrs['ci_prob']:.0%} {df.attrs['ci_kind']}",
                     fontsize=9)
        fig.tight_layout()
        return fig

    def plot_curve(self, *, ax=None):
        """Fraction curves ρ_k(step) with bootstrap bands and the peak of the total curve; returns the Figure."""
        import matplotlib.pyplot as plt

        d = self.data
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 3.5))
        else:
            fig = ax.figure
        x = d["mid_step"].values
        for op in d["order_parameter"].values:
            (line,) = ax.plot(x, d["rho"].sel(order_parameter=op).values, label=str(op))
            ax.fill_between(x, d["rho_lower"].sel(order_parameter=op).values, d["rho_upper"].sel(order_parameter=op).values,
                            color=line.get_color(), alpha=0.15)
        ax.axvline(self.peak_step, color="k", ls="--", lw=1)
        ax.axhline(1.0, color="grey", ls=":", lw=1)
        ax.set_xlabel("training step")
        ax.set_ylabel("fraction ρ")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def plot_transition(self, tau: pd.DataFrame, *, ax=None):
        """Peak of the total curve (with its bootstrap interval) against posterior τ per order parameter
        (DataFrame indexed by order parameter with ``mean``, ``lower``, ``upper``); returns the Figure."""
        return plot_peak_vs_tau(self.peak_step, tau, peak_interval=self.peak_interval(), ax=ax)

    def plot_dissimilarity(self, **kwargs):
        """Total and per-order-parameter dissimilarity curves with bands (see DissimilarityResult.plot)."""
        return self.dissimilarity.plot(**kwargs)


