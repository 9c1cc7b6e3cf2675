"""Hierarchical Bayesian change-point model for judged scores (DESIGN.md §2.2).

For order parameter k, prompt p and checkpoint step t the expected score is

    mu_kp(t) = A_kp + (B_kp − A_kp) · s((t − tau_kp) / w_k)

with ``s`` the logistic function (``transition="sigmoid"``) or the unit step (``"step"``).
The interpolation is on the score scale, so ``tau`` is exactly the step where the expected score is
halfway between the two levels — the midpoint a reader sees on a plot, for every likelihood.

Hierarchy (``pooling="partial"``): ``tau_kp = tau_k + sigma_tau_k · z_kp`` and the levels
``A_kp = g⁻¹(a_k + sigma_a_k · u_kp)``, ``B_kp = g⁻¹(b_k + sigma_b_k · v_kp)`` on the link scale g
(logit / log / identity), with zero-sum prompt offsets (z, u, v sum to zero over prompts) so that
tau_k and the population levels are the prompt averages and are not confounded with the offsets.
``pooling="complete"`` shares tau and levels across prompts.

Priors, in data units (``priors`` overrides any of them):

- ``tau_k`` ~ Uniform(first step, last step);
- ``w_k`` (steps) ~ LogNormal(log(median checkpoint spacing), 1);
- ``sigma_tau_k`` (steps) ~ HalfNormal(5 % of the run);
- population levels on the link scale: logit-level ~ Normal(0, 1.5) for ``beta`` (0–100 scores:
  94 % prior mass between ≈ 5 and 95) and ``binomial``; log-level ~ Normal(log(mean), 1.5) for
  counts; level ~ Normal(mean, 2.5 sd) for ``normal`` (mean and sd of the order parameter's scores);
- prompt deviations of levels: HalfNormal(0.5) on logit/log scale, HalfNormal(sd) for ``normal``;
- nuisance: beta concentration φ ~ LogNormal(log 5, 1.5); normal σ ~ HalfNormal(2 sd);
  negative-binomial α ~ LogNormal(log 5, 2) (variance μ + μ²/α).

The step transition puts ``tau_k`` on the checkpoint grid (the first checkpoint after the change,
prior probability ∝ the gap before it, i.e. uniform in steps) and marginalises it exactly with
log-sum-exp; its posterior over grid steps is recovered per draw (Rao–Blackwellised). In the step
model tau is shared by the prompts of an order parameter (levels are still pooled).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import defaults
from ..dataset import _encodable, order_parameter_scale, validate
from ..errors import DiagnosticsWarning, ModelSpecError, RunDataError
from ..runstore import numeric_part
from ..intervals import resolve_ci, summarize_draws
from ..storage import save_netcdf
from .aggregated import aggregated_cells, aggregated_form  # aggregated judgements (from_counts / from_summaries)
from .families import (
    FAMILIES,
    NUMPY_MATH,
    CellStats,
    cell_loglik,
    nb_cell_shared_loglik,
    nb_shared_loglik,
    prepare_scores,
    pytensor_math,
    sufficient_statistics,
)

__all__ = ["ChangePointModel", "ChangePointResult", "ModelConfig", "load_result"]

TRANSITIONS = ("sigmoid", "step")
_EPS = 1e-9


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`ChangePointModel` from its run dataset."""

    likelihood: dict[str, str]
    transition: str = "sigmoid"
    pooling: str = "partial"
    threshold: float | None = None
    below: bool = True
    priors: dict[str, float] = field(default_factory=dict)
    order_parameters: list[str] = field(default_factory=list)
    parametrization: str = "auto"
    measurement: dict | None = None  # JudgeMeasurement.to_dict() (human ratings + calibration link)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls(**json.loads(text))


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _inv_link(family: str, x, pt=None):
    if family in ("beta", "binomial"):
        return (pt.sigmoid(x) if pt is not None else _logistic(x))
    if family in ("poisson", "negative_binomial"):
        return (pt.exp(x) if pt is not None else np.exp(x))
    return x


class ChangePointModel:
    """All order parameters of a run in one hierarchical change-point model.

    Parameters
    ----------
    ds
        Run dataset (:func:`phasebayes.from_dataframe`, :func:`phasebayes.simulate_run`, ...).
    likelihood
        ``"auto"`` (``beta`` for bounded scales, ``binomial`` for 0/1 scales, ``negative_binomial``
        for unbounded integer scores, else ``normal``), one family for all, or a dict per order
        parameter. Families: ``beta``, ``binomial``, ``normal``, ``poisson``, ``negative_binomial``.
    transition
        ``"sigmoid"`` (continuous tau and width) or ``"step"`` (tau on the grid, marginalised).
    pooling
        ``"partial"`` (prompt-level deviations of tau and levels, default) or ``"complete"``.
    order_parameters
        Subset to model (default: all).
    threshold, below
        For ``binomial`` on non-binary scores: model the indicator ``score < threshold``
        (``below=True``) or ``score > threshold``.
    priors
        Overrides of prior scales (keys in :attr:`DEFAULT_PRIORS`).
    parametrization
        Prompt-level effects ``"centered"`` (best when every prompt has many scores),
        ``"noncentered"`` (zero-sum offsets; best for sparse data) or ``"auto"`` (centred when cells hold
        ≥ 40 scores on average; measured: at 100 steps × 8 prompts × 50 samples the non-centred form
        needs 55 leapfrog steps per draw and the centred one 15; at 12 samples per cell the centred
        form diverges). Same model, different sampler geometry.
    measurement
        Optional :class:`~phasebayes.models.measurement.JudgeMeasurement` (human ratings of a subset):
        the curve, tau and levels are then on the human scale and the judge scores are a calibrated,
        noisy measurement of it (see :mod:`phasebayes.models.measurement`).
    """

    DEFAULT_PRIORS: dict[str, float] = {
        "width_log_sd": 1.0,  # sd of log width
        "sigma_tau_frac": 0.05,  # HalfNormal scale of prompt tau deviations, fraction of the run
        "level_sd_link": 1.5,  # sd of logit/log population levels
        "level_sd_normal": 2.5,  # sd of normal population levels, in data sds
        "prompt_level_sd_link": 0.5,  # HalfNormal scale of prompt level deviations (logit/log)
        "beta_phi_log_mean": float(np.log(5.0)),
        "beta_phi_log_sd": 1.5,
        "nb_alpha_log_mean": float(np.log(5.0)),
        "nb_alpha_log_sd": 2.0,
    }

    def __init__(
        self,
        ds: xr.Dataset,
        *,
        likelihood: str | dict[str, str] = "auto",
        transition: str = "sigmoid",
        pooling: str | bool = "partial",
        order_parameters: list[str] | None = None,
        threshold: float | None = None,
        below: bool = True,
        priors: dict[str, float] | None = None,
        parametrization: str = "auto",
        measurement=None,
    ):
        validate(ds)
        if parametrization not in ("auto", "centered", "noncentered"):
            raise ModelSpecError(f"parametrization must be 'auto', 'centered' or 'noncentered', got {parametrization!r}.")
        if transition not in TRANSITIONS + ("none",):
            raise ModelSpecError(f"transition must be one of {TRANSITIONS}, got {transition!r}.")
        if pooling is True:
            pooling = "partial"
        if pooling is False:
            pooling = "complete"
        if pooling not in ("partial", "complete"):
            raise ModelSpecError(f"pooling must be 'partial' or 'complete' (or True/False), got {pooling!r}.")
        all_ops = [str(o) for o in ds["order_parameter"].values]
        ops = list(order_parameters) if order_parameters is not None else all_ops
        unknown = [o for o in ops if o not in all_ops]
        if unknown:
            raise ModelSpecError(f"order parameter(s) {unknown} not in the run; it has {all_ops}.")
        if not ops:
            raise ModelSpecError("no order parameter to model.")
        bad_priors = set(priors or {}) - set(self.DEFAULT_PRIORS)
        if bad_priors:
            raise ModelSpecError(f"unknown prior key(s) {sorted(bad_priors)}; known: {sorted(self.DEFAULT_PRIORS)}.")

        # aggregated judgements (from_counts / from_summaries): cell statistics straight from the dataset
        agg = aggregated_cells(ds, ops, likelihood, threshold) if aggregated_form(ds) else None
        fams = agg.likelihood if agg else self._resolve_likelihood(ds, ops, likelihood, threshold)
        self.config = ModelConfig(
            likelihood=fams,
            transition=transition,
            pooling=pooling,
            threshold=threshold,
            below=below,
            priors={**self.DEFAULT_PRIORS, **(priors or {})},
            order_parameters=ops,
            parametrization=parametrization,
        )
        self.ds = ds
        self.order_parameters = ops
        self.steps = ds["step"].values.astype(float)
        self.prompts = [str(p) for p in ds["prompt"].values]
        self.t0 = float(self.steps[0])
        self.span = float(self.steps[-1] - self.steps[0])
        self.u = (self.steps - self.t0) / self.span

        # observations on each family's scale, (K, T, P, N)
        self.obs = agg.obs if agg else np.stack(
            [
                prepare_scores(
                    fams[op],
                    ds["score"].sel(order_parameter=op).values,
                    order_parameter_scale(ds, op),
                    threshold=threshold if fams[op] == "binomial" else None,
                    below=below,
                )
                for op in ops
            ]
        )
        self.n_finite = np.isfinite(self.obs).sum(axis=(1, 2, 3))
        empty_cells = (np.isfinite(self.obs).sum(-1) == 0)
        if empty_cells.all(axis=(1, 2)).any():
            raise RunDataError("an order parameter has no finite score after preparation.")
        self.groups: dict[str, np.ndarray] = {}
        for k, op in enumerate(ops):
            self.groups.setdefault(fams[op], []).append(k)
        self.groups = {f: np.array(ix) for f, ix in self.groups.items()}
        self.stats: dict[str, CellStats] = {f: sufficient_statistics(f, self.obs[ix]) for f, ix in self.groups.items()}
        # Prompt-level effects: centred when each prompt's curve is well identified by its own data
        # (many scores per prompt), non-centred (zero-sum offsets) when the data are sparse.
        per_cell = float(np.isfinite(self.obs).sum(-1).mean())
        # data summaries used by priors (per order parameter)
        self.data_mean = np.array([np.nanmean(self.obs[k]) for k in range(len(ops))])
        self.data_sd = np.array([max(np.nanstd(self.obs[k]), 1e-6) for k in range(len(ops))])
        if agg:
            self.stats, self.n_finite, per_cell, self.data_mean, self.data_sd = (
                agg.stats, agg.n_total, agg.per_cell, agg.data_mean, agg.data_sd)
        self.centered = parametrization == "centered" or (parametrization == "auto" and per_cell >= 40)
        self.measurement = None
        if measurement is not None:  # judge error model: see phasebayes/models/measurement.py
            from .measurement import JudgeMeasurement

            spec = measurement if isinstance(measurement, JudgeMeasurement) else JudgeMeasurement.from_dict(measurement)
            self.measurement = spec.bind(self)
            self.config.measurement = spec.to_dict()

    def _judge_mean(self, mu, fam: str, ix, post=None):
        """Mean of the observed (judge) scores given the curve ``mu``: the identity unless a measurement model is set."""
        if self.measurement is None or fam != "beta":
            return mu
        return self.measurement.judge_mean_pymc(mu, ix) if post is None else self.measurement.judge_mean(post, mu, ix)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _resolve_likelihood(ds, ops, likelihood, threshold) -> dict[str, str]:
        if isinstance(likelihood, dict):
            missing = [o for o in ops if o not in likelihood]
            if missing:
                raise ModelSpecError(f"likelihood dict lacks order parameter(s) {missing}.")
            fams = {o: likelihood[o] for o in ops}
        elif likelihood == "auto":
            fams = {}
            for op in ops:
                lo, hi = order_parameter_scale(ds, op)
                y = ds["score"].sel(order_parameter=op).values
                y = y[np.isfinite(y)]
                if np.isfinite(lo) and np.isfinite(hi):
                    fams[op] = "binomial" if (lo, hi) == (0.0, 1.0) and np.all(np.isin(y, [0.0, 1.0])) else "beta"
                elif np.all(y >= 0) and np.all(y == np.round(y)):
                    fams[op] = "negative_binomial"
                else:
                    fams[op] = "normal"
        else:
            fams = {o: likelihood for o in ops}
        for op, f in fams.items():
            if f not in FAMILIES:
                raise ModelSpecError(f"unknown likelihood {f!r} for '{op}'; choose one of {FAMILIES}.")
        return fams

    @property
    def transition(self) -> str:
        return self.config.transition

    def _link_level_prior(self, k: int) -> tuple[float, float]:
        f = self.config.likelihood[self.order_parameters[k]]
        p = self.config.priors
        if f in ("beta", "binomial"):
            return 0.0, p["level_sd_link"]
        if f in ("poisson", "negative_binomial"):
            return float(np.log(self.data_mean[k] + 0.5)), p["level_sd_link"]
        return float(self.data_mean[k]), p["level_sd_normal"] * float(self.data_sd[k])

    def _prompt_level_scale(self, k: int) -> float:
        f = self.config.likelihood[self.order_parameters[k]]
        return float(self.data_sd[k]) if f == "normal" else self.config.priors["prompt_level_sd_link"]

    def step_log_prior(self) -> np.ndarray:
        """Log prior of the step model over candidate grid positions j = 1..T−1 (∝ gap before t_j)."""
        gaps = np.diff(self.steps)
        return np.log(gaps / gaps.sum())

    # ------------------------------------------------------------------ model
    def build(self):
        """Build and return the PyMC model (all order parameters in one model)."""
        import pymc as pm
        import pytensor.tensor as pt

        K, P = len(self.order_parameters), len(self.prompts)
        cfg = self.config
        partial = cfg.pooling == "partial" and P > 1
        coords = {"order_parameter": self.order_parameters, "prompt": self.prompts, "step": self.steps.astype(int)}
        m = pytensor_math()
        with pm.Model(coords=coords) as model:
            mu_lvl = np.array([self._link_level_prior(k) for k in range(K)])
            level_before = pm.Normal("level_before_link", mu=mu_lvl[:, 0], sigma=mu_lvl[:, 1], dims="order_parameter")
            has_transition = cfg.transition != "none"
            if has_transition:
                level_after = pm.Normal("level_after_link", mu=mu_lvl[:, 0], sigma=mu_lvl[:, 1], dims="order_parameter")
            centered = self.centered
            if partial:
                scale = np.array([self._prompt_level_scale(k) for k in range(K)])
                sd_b = pm.HalfNormal("sigma_before_link", sigma=scale, dims="order_parameter")
                if centered:
                    lb = pm.Normal("before_prompt_link", mu=level_before[:, None], sigma=sd_b[:, None],
                                   dims=("order_parameter", "prompt"))
                else:
                    z_b = pm.ZeroSumNormal("z_before", dims=("order_parameter", "prompt"))
                    lb = level_before[:, None] + sd_b[:, None] * z_b
                if has_transition:
                    sd_a = pm.HalfNormal("sigma_after_link", sigma=scale, dims="order_parameter")
                    if centered:
                        la = pm.Normal("after_prompt_link", mu=level_after[:, None], sigma=sd_a[:, None],
                                       dims=("order_parameter", "prompt"))
                    else:
                        z_a = pm.ZeroSumNormal("z_after", dims=("order_parameter", "prompt"))
                        la = level_after[:, None] + sd_a[:, None] * z_a
            else:
                lb = pt.repeat(level_before[:, None], P, axis=1)
                if has_transition:
                    la = pt.repeat(level_after[:, None], P, axis=1)

            if cfg.transition == "sigmoid":
                tau_u = pm.Uniform("tau_unit", 0.0, 1.0, dims="order_parameter")
                w0 = float(np.median(np.diff(self.u)))
                width_u = pm.LogNormal("width_unit", mu=np.log(w0), sigma=cfg.priors["width_log_sd"], dims="order_parameter")
                if partial:
                    s_tau = pm.HalfNormal("sigma_tau_unit", sigma=cfg.priors["sigma_tau_frac"], dims="order_parameter")
                    if centered:
                        tau_kp = pm.Normal("tau_prompt_unit", mu=tau_u[:, None], sigma=s_tau[:, None],
                                           dims=("order_parameter", "prompt"))
                    else:
                        z_tau = pm.ZeroSumNormal("z_tau", dims=("order_parameter", "prompt"))
                        tau_kp = tau_u[:, None] + s_tau[:, None] * z_tau
                else:
                    tau_kp = pt.repeat(tau_u[:, None], P, axis=1)
                s = pt.sigmoid((self.u[None, :, None] - tau_kp[:, None, :]) / width_u[:, None, None])  # (K,T,P)

            total = 0.0
            for fam, ix in self.groups.items():
                st = self.stats[fam]
                nuis = self._nuisance_rv(pm, fam, ix)
                A = _inv_link(fam, lb[ix], pt)[:, None, :]  # (k,1,P)
                if fam in ("beta", "binomial"):
                    A = pt.clip(A, _EPS, 1 - _EPS)
                if cfg.transition == "none":
                    total = total + pt.sum(cell_loglik(fam, st, self._judge_mean(A, fam, ix), nuis, m))
                    continue
                B = _inv_link(fam, la[ix], pt)[:, None, :]
                if fam in ("beta", "binomial"):
                    B = pt.clip(B, _EPS, 1 - _EPS)
                if cfg.transition == "sigmoid":
                    mu = A + (B - A) * s[ix]
                    if fam in ("beta", "binomial"):
                        mu = pt.clip(mu, _EPS, 1 - _EPS)
                    total = total + pt.sum(cell_loglik(fam, st, self._judge_mean(mu, fam, ix), nuis, m))
                else:  # step: exact marginalisation over the first post-transition grid index j
                    ll_pre = pt.sum(cell_loglik(fam, st, A, nuis, m), axis=2)  # (k,T)
                    ll_post = pt.sum(cell_loglik(fam, st, B, nuis, m), axis=2)
                    cum_pre = pt.cumsum(ll_pre, axis=1)[:, :-1]  # Σ_{t<j}, j = 1..T−1
                    rev = pt.cumsum(ll_post[:, ::-1], axis=1)[:, ::-1]
                    suffix = rev[:, 1:]  # Σ_{t≥j}
                    lp = self.step_log_prior()[None, :] + cum_pre + suffix
                    total = total + pt.sum(pm.math.logsumexp(lp, axis=1))
                if fam == "negative_binomial":
                    total = total + pt.sum(nb_shared_loglik(st, nuis[:, 0, 0], m))
            pm.Potential("loglik", total)
        return model

    def _nuisance_rv(self, pm, fam: str, ix: np.ndarray):
        p = self.config.priors
        name = {"beta": "concentration", "normal": "noise_sd", "negative_binomial": "dispersion"}.get(fam)
        if name is None:
            return None
        ops = [self.order_parameters[k] for k in ix]
        dim = f"{name}_op"
        pm.modelcontext(None).add_coord(dim, ops)
        if fam == "beta":
            rv = pm.LogNormal(name, mu=p["beta_phi_log_mean"], sigma=p["beta_phi_log_sd"], dims=dim)
        elif fam == "normal":
            rv = pm.HalfNormal(name, sigma=2.0 * self.data_sd[ix], dims=dim)
        else:
            rv = pm.LogNormal(name, mu=p["nb_alpha_log_mean"], sigma=p["nb_alpha_log_sd"], dims=dim)
        return rv[:, None, None]

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        *,
        draws: int = 1000,
        tune: int = 1000,
        chains: int = 4,
        cores: int | None = None,
        random_seed: int | None = None,
        sampler: str = "auto",
        target_accept: float = 0.95,
        progressbar: bool = True,
        compare_null: bool = False,
        warn: bool = True,
    ) -> "ChangePointResult":
        """Sample the posterior with NUTS and return a :class:`ChangePointResult`.

        ``sampler="auto"`` uses nutpie when installed, else PyMC's NUTS with ``cores`` processes
        (default: min(chains, CPU count)). ``random_seed`` makes the fit reproducible.
        ``compare_null=True`` also fits the no-transition model and stores the LOO comparison
        (see :meth:`ChangePointResult.transition_evidence`). Bad diagnostics raise a
        :class:`~phasebayes.errors.DiagnosticsWarning` unless ``warn=False``.
        """
        posterior, sample_stats = _sample(
            self.build(), draws=draws, tune=tune, chains=chains, cores=cores, random_seed=random_seed,
            sampler=sampler, target_accept=target_accept, progressbar=progressbar,
        )
        result = ChangePointResult._from_samples(self, posterior, sample_stats, random_seed=random_seed)
        if compare_null:
            result.fit_null(draws=draws, tune=tune, chains=chains, cores=cores, random_seed=random_seed,
                            sampler=sampler, progressbar=progressbar)
        if warn:
            result.check_diagnostics(warn=True)
        return result

    # ------------------------------------------------------------------ numpy mirror
    def mean_curves(self, post: dict[str, np.ndarray], steps: np.ndarray | None = None, tau_index: np.ndarray | None = None):
        """Expected score on the observation scale for each draw: ``(D, K, T, P)``.

        ``post`` holds flattened draws of the model's variables; ``steps`` defaults to the grid.
        For the step model ``tau_index`` (D, K) gives the first post-transition grid index.
        """
        K, P = len(self.order_parameters), len(self.prompts)
        t = self.steps if steps is None else np.asarray(steps, dtype=float)
        u = (t - self.t0) / self.span
        lb, la = self._link_levels(post)
        D = lb.shape[0]
        out = np.empty((D, K, len(t), P))
        for fam, ix in self.groups.items():
            A = _inv_link(fam, lb[:, ix])[:, :, None, :]
            if self.config.transition == "none":
                out[:, ix] = np.broadcast_to(A, (D, len(ix), len(t), P))
                continue
            B = _inv_link(fam, la[:, ix])[:, :, None, :]
            if self.config.transition == "sigmoid":
                tau = self._tau_prompt_unit(post)[:, ix]
                w = post["width_unit"][:, ix]
                s = _logistic((u[None, None, :, None] - tau[:, :, None, :]) / w[:, :, None, None])
            else:
                tau_step = self.steps[tau_index[:, ix]]  # (D,k)
                s = (t[None, None, :, None] >= tau_step[:, :, None, None]).astype(float)
            out[:, ix] = A + (B - A) * s
        return out

    def _link_levels(self, post):
        K, P = len(self.order_parameters), len(self.prompts)
        partial = self.config.pooling == "partial" and P > 1
        if partial and "before_prompt_link" in post:  # centred parametrisation
            lb = post["before_prompt_link"]
        else:
            lb = post["level_before_link"][:, :, None] + (
                post["sigma_before_link"][:, :, None] * post["z_before"] if partial else 0.0
            )
        lb = np.broadcast_to(lb, (lb.shape[0], K, P))
        if self.config.transition == "none":
            return lb, None
        if partial and "after_prompt_link" in post:
            la = post["after_prompt_link"]
        else:
            la = post["level_after_link"][:, :, None] + (
                post["sigma_after_link"][:, :, None] * post["z_after"] if partial else 0.0
            )
        return lb, np.broadcast_to(la, lb.shape)

    def _tau_prompt_unit(self, post):
        P = len(self.prompts)
        if self.config.pooling == "partial" and P > 1:
            if "tau_prompt_unit" in post:
                return post["tau_prompt_unit"]
            return post["tau_unit"][:, :, None] + post["sigma_tau_unit"][:, :, None] * post["z_tau"]
        return np.repeat(post["tau_unit"][:, :, None], P, axis=2)

    def _nuisance_draws(self, post, fam, ix):
        name = {"beta": "concentration", "normal": "noise_sd", "negative_binomial": "dispersion"}.get(fam)
        return None if name is None else post[name][:, :, None, None]

    def pointwise_loglik(self, post: dict[str, np.ndarray], tau_index: np.ndarray | None = None) -> np.ndarray:
        """Log-likelihood of each cell (order parameter, step, prompt) per draw: ``(D, K, T, P)``.

        Computed from sufficient statistics (plus, for negative binomial, per-cell value counts). For
        the step model it is conditional on the sampled grid position ``tau_index``.
        """
        mu = self.mean_curves(post, tau_index=tau_index)
        out = np.empty_like(mu)
        for fam, ix in self.groups.items():
            m = mu[:, ix]
            if fam in ("beta", "binomial"):
                m = np.clip(self._judge_mean(m, fam, ix, post), _EPS, 1 - _EPS)
            nuis = self._nuisance_draws(post, fam, ix)
            ll = cell_loglik(fam, self.stats[fam], m, nuis, NUMPY_MATH)
            if fam == "negative_binomial":
                ll = ll + nb_cell_shared_loglik(self.obs[ix], post["dispersion"])
            out[:, ix] = ll
        return out

    def step_conditional(self, post: dict[str, np.ndarray]) -> np.ndarray:
        """Step model: p(tau = t_j | parameters, data) per draw, ``(D, K, T)`` (zero at j = 0)."""
        K, T = len(self.order_parameters), len(self.steps)
        lb, la = self._link_levels(post)
        D = lb.shape[0]
        logp = np.full((D, K, T), -np.inf)
        for fam, ix in self.groups.items():
            nuis = self._nuisance_draws(post, fam, ix)
            A = _inv_link(fam, lb[:, ix])[:, :, None, :]
            B = _inv_link(fam, la[:, ix])[:, :, None, :]
            if fam in ("beta", "binomial"):
                A, B = np.clip(A, _EPS, 1 - _EPS), np.clip(B, _EPS, 1 - _EPS)
            pre = cell_loglik(fam, self.stats[fam], A, nuis, NUMPY_MATH).sum(-1)  # (D,k,T)
            post_ll = cell_loglik(fam, self.stats[fam], B, nuis, NUMPY_MATH).sum(-1)
            cum_pre = np.cumsum(pre, axis=-1)[..., :-1]
            suffix = np.cumsum(post_ll[..., ::-1], axis=-1)[..., ::-1][..., 1:]
            logp[:, ix, 1:] = self.step_log_prior() + cum_pre + suffix
        logp -= logp.max(-1, keepdims=True)
        prob = np.exp(logp)
        return prob / prob.sum(-1, keepdims=True)


# ---------------------------------------------------------------------- sampling
def _sample(model, *, draws, tune, chains, cores, random_seed, sampler, target_accept, progressbar):
    """Run NUTS; return (posterior, sample_stats) as xarray Datasets with (chain, draw) dims."""
    import pymc as pm

    if sampler == "auto":
        try:
            import nutpie  # noqa: F401

            sampler = "nutpie"
        except ImportError:
            sampler = "pymc"
    if sampler not in ("nutpie", "pymc"):
        raise ModelSpecError(f"sampler must be 'auto', 'nutpie' or 'pymc', got {sampler!r}.")
    cores = cores if cores is not None else max(1, min(chains, os.cpu_count() or 1))
    with model, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(mass matrix|adaptation|cores).*")
        kwargs: dict[str, Any] = dict(
            draws=draws, tune=tune, chains=chains, cores=cores, random_seed=random_seed,
            progressbar=progressbar, target_accept=target_accept, compute_convergence_checks=False,
        )
        kwargs["nuts_sampler"] = sampler  # explicit: PyMC 6 silently prefers nutpie when installed
        idata = pm.sample(**kwargs)
    posterior = idata["posterior"].to_dataset() if hasattr(idata["posterior"], "to_dataset") else idata["posterior"]
    stats = idata["sample_stats"].to_dataset() if hasattr(idata["sample_stats"], "to_dataset") else idata["sample_stats"]
    keep = [v for v in ("diverging", "tree_depth", "n_steps", "energy", "step_size", "lp") if v in stats]
    stats = stats[keep]
    posterior.attrs = {}
    stats.attrs = {"sampler": sampler}
    return posterior, stats


def _flat(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Posterior variables as arrays with a single leading draw axis."""
    out = {}
    for name, var in ds.data_vars.items():
        arr = var.values
        out[name] = arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])
    return out


def _unflat(arr: np.ndarray, chains: int) -> np.ndarray:
    return arr.reshape(chains, arr.shape[0] // chains, *arr.shape[1:])


# ---------------------------------------------------------------------- result
class ChangePointResult:
    """Posterior of a :class:`ChangePointModel` fit, with summaries, diagnostics, plots and save/load.

    ``posterior`` holds, besides the raw parameters, ``tau`` (order_parameter; training steps; the
    average over the run's prompts of the per-prompt transition steps),
    ``tau_prompt`` (order_parameter, prompt), ``width`` (steps; sigmoid), ``before``/``after``
    (population levels in score units: 0–100 for judge scores, probability for binomial).
    """

    def __init__(self, model: ChangePointModel, posterior: xr.Dataset, sample_stats: xr.Dataset,
                 extra: dict[str, xr.Dataset] | None = None):
        self.model = model
        self.config = model.config
        self.posterior = posterior
        self.sample_stats = sample_stats
        self.extra = dict(extra or {})

    # -- construction ---------------------------------------------------
    @classmethod
    def _from_samples(cls, model: ChangePointModel, posterior: xr.Dataset, sample_stats: xr.Dataset,
                      random_seed=None) -> "ChangePointResult":
        chains = posterior.sizes["chain"]
        post = _flat(posterior)
        P = len(model.prompts)
        extra = {}
        dims_kp = ("chain", "draw", "order_parameter", "prompt")
        dims_k = ("chain", "draw", "order_parameter")
        # Population quantities are prompt averages (the transition of this prompt set). The
        # non-centred form has zero-sum offsets, so tau_unit already is that average; the centred
        # form's hierarchical mean is not, so average its prompt-level values explicitly.
        prompt_mean = model.centered and model.config.pooling == "partial" and P > 1
        if model.config.transition == "sigmoid":
            tau_kp = model.t0 + model.span * model._tau_prompt_unit(post)
            tau = tau_kp.mean(-1) if prompt_mean else model.t0 + model.span * post["tau_unit"]
            posterior["width"] = (dims_k, _unflat(model.span * post["width_unit"], chains))
        elif model.config.transition == "step":
            prob = model.step_conditional(post)  # (D,K,T)
            rng = np.random.default_rng(random_seed)
            cum = np.cumsum(prob, axis=-1)
            idx = (rng.random(prob.shape[:2])[..., None] > cum).sum(-1)
            idx = np.minimum(idx, len(model.steps) - 1)
            tau = model.steps[idx]
            tau_kp = np.repeat(tau[:, :, None], P, axis=2)
            posterior["tau_index"] = (dims_k, _unflat(idx, chains))
            extra["tau_probability"] = xr.Dataset(
                {"probability": (("order_parameter", "step"), prob.mean(0))},
                coords={"order_parameter": model.order_parameters, "step": model.steps.astype(int)},
            )
        if model.config.transition != "none":
            posterior["tau"] = (dims_k, _unflat(tau, chains))
            posterior["tau_prompt"] = (dims_kp, _unflat(tau_kp, chains))
        lb, la = model._link_levels(post)
        before_kp = np.empty_like(lb)
        after_kp = np.empty_like(lb)
        before = np.empty(lb.shape[:2])
        after = np.empty(lb.shape[:2])
        for fam, ix in model.groups.items():
            for j, k in enumerate(ix):
                conv = _ScoreScale(model, k)
                before_kp[:, k] = conv(_inv_link(fam, lb[:, k]))
                pop_b = lb[:, k].mean(-1) if prompt_mean else post["level_before_link"][:, k]
                before[:, k] = conv(_inv_link(fam, pop_b))
                if la is not None:
                    after_kp[:, k] = conv(_inv_link(fam, la[:, k]))
                    pop_a = la[:, k].mean(-1) if prompt_mean else post["level_after_link"][:, k]
                    after[:, k] = conv(_inv_link(fam, pop_a))
        posterior["before"] = (dims_k, _unflat(before, chains))
        posterior["before_prompt"] = (dims_kp, _unflat(before_kp, chains))
        if model.config.transition != "none":
            posterior["after"] = (dims_k, _unflat(after, chains))
            posterior["after_prompt"] = (dims_kp, _unflat(after_kp, chains))
        posterior = posterior.assign_coords(order_parameter=model.order_parameters, prompt=model.prompts)
        post_tau_index = None
        if model.config.transition == "step":
            post_tau_index = _flat(posterior[["tau_index"]])["tau_index"]
        ll = model.pointwise_loglik(post, tau_index=post_tau_index)
        extra["log_likelihood"] = xr.Dataset(
            {"cell": (("chain", "draw", "order_parameter", "step", "prompt"), _unflat(ll, chains))},
            coords={"order_parameter": model.order_parameters, "step": model.steps.astype(int), "prompt": model.prompts},
        )
        return cls(model, posterior, sample_stats, extra)

    # -- draws helpers ----------------------------------------------------
    @property
    def order_parameters(self) -> list[str]:
        return list(self.model.order_parameters)

    def draws(self, name: str) -> np.ndarray:
        """Flattened draws of a posterior variable: ``(chains × draws, ...)``."""
        return _flat(self.posterior[[name]])[name]

    def _require_transition(self):
        if self.config.transition == "none":
            raise ModelSpecError("this is a no-transition model; it has no tau.")

    # -- summaries ---------------------------------------------------------
    def transition_steps(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Posterior of tau per order parameter (training steps): mean, median, sd, lower, upper.

        ``attrs`` carry ``ci_prob``, ``ci_kind`` (default 94 % HDI) and units; ``r_hat`` and
        ``ess_bulk`` of tau are included as columns.
        """
        self._require_transition()
        tau = self.draws("tau")
        table = summarize_draws({op: tau[:, k] for k, op in enumerate(self.order_parameters)},
                                ci_prob=ci_prob, ci_kind=ci_kind, units="training steps")
        diag = self._diag_vars(["tau"])
        table["r_hat"] = [diag.loc[f"tau[{op}]", "r_hat"] for op in self.order_parameters]
        table["ess_bulk"] = [diag.loc[f"tau[{op}]", "ess_bulk"] for op in self.order_parameters]
        table["ci_prob"] = table.attrs["ci_prob"]
        table["ci_kind"] = table.attrs["ci_kind"]
        return table

    def prompt_transition_steps(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Per-prompt tau (training steps), indexed by (order_parameter, prompt)."""
        self._require_transition()
        d = self.draws("tau_prompt")
        table = summarize_draws(
            {(op, p): d[:, k, j] for k, op in enumerate(self.order_parameters) for j, p in enumerate(self.model.prompts)},
            ci_prob=ci_prob, ci_kind=ci_kind, units="training steps",
        )
        table.index = pd.MultiIndex.from_tuples(table.index, names=["order_parameter", "prompt"])
        return table

    def levels(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Population levels before/after (score units) and width (steps), one row per (order_parameter, quantity)."""
        names = ["before", "after", "width"] if self.config.transition == "sigmoid" else (
            ["before", "after"] if self.config.transition == "step" else ["before"])
        rows = {}
        for name in names:
            d = self.draws(name)
            for k, op in enumerate(self.order_parameters):
                rows[(op, name)] = d[:, k]
        table = summarize_draws(rows, ci_prob=ci_prob, ci_kind=ci_kind)
        table.index = pd.MultiIndex.from_tuples(table.index, names=["order_parameter", "quantity"])
        return table

    def step_probabilities(self) -> pd.DataFrame:
        """Step model: posterior probability that tau is each grid step (rows: order parameters)."""
        if "tau_probability" not in self.extra:
            raise ModelSpecError("step probabilities exist only for transition='step'.")
        return self.extra["tau_probability"]["probability"].to_pandas()

    def prob_earlier(self) -> pd.DataFrame:
        """P(tau_row < tau_column) for every pair of order parameters (ties count half)."""
        self._require_transition()
        tau = self.draws("tau")
        ops = self.order_parameters
        mat = np.full((len(ops), len(ops)), np.nan)
        for i in range(len(ops)):
            for j in range(len(ops)):
                if i != j:
                    mat[i, j] = np.mean(tau[:, i] < tau[:, j]) + 0.5 * np.mean(tau[:, i] == tau[:, j])
        out = pd.DataFrame(mat, index=pd.Index(ops, name="earlier"), columns=pd.Index(ops, name="later"))
        out.attrs["meaning"] = "P(tau[row] < tau[column] | data)"
        return out

    def predict(self, steps: np.ndarray | None = None, n_draws: int = 200, seed: int = 0) -> xr.Dataset:
        """Expected score curves (score units) for ``n_draws`` posterior draws.

        Returns a Dataset with ``mean_prompt`` (draw, order_parameter, step, prompt) and
        ``mean_population`` (draw, order_parameter, step; the curve of the population tau, width and
        levels). ``steps`` defaults to a fine grid of 200 points over the run.
        """
        m = self.model
        steps = np.linspace(m.steps[0], m.steps[-1], 200) if steps is None else np.asarray(steps, dtype=float)
        post = _flat(self.posterior)
        D = next(iter(post.values())).shape[0]
        idx = np.random.default_rng(seed).choice(D, size=min(n_draws, D), replace=False)
        sub = {k: v[idx] for k, v in post.items()}
        tau_index = sub.get("tau_index")
        curves = m.mean_curves(sub, steps=steps, tau_index=tau_index)
        pop = dict(sub)
        for name in ("z_before", "z_after", "z_tau"):
            if name in pop:
                pop[name] = np.zeros_like(pop[name])
        for name in ("before_prompt_link", "after_prompt_link", "tau_prompt_unit"):
            if name in pop:  # centred form: the population curve uses the prompt averages
                pop[name] = np.repeat(pop[name].mean(-1, keepdims=True), len(m.prompts), axis=2)
        pop_curve = m.mean_curves(pop, steps=steps, tau_index=tau_index)[..., 0]
        for k, op in enumerate(m.order_parameters):
            conv = _ScoreScale(m, k)
            curves[:, k] = conv(curves[:, k])
            pop_curve[:, k] = conv(pop_curve[:, k])
        return xr.Dataset(
            {
                "mean_prompt": (("draw", "order_parameter", "step", "prompt"), curves),
                "mean_population": (("draw", "order_parameter", "step"), pop_curve),
            },
            coords={"order_parameter": m.order_parameters, "step": steps, "prompt": m.prompts},
        )

    def posterior_predictive(self, n_draws: int = 200, seed: int = 0) -> xr.Dataset:
        """Replicated cell means (score units) drawn from the fitted likelihood, for checks.

        Returns ``cell_mean`` (draw, order_parameter, step, prompt) with the observed counts per cell,
        and ``observed`` (order_parameter, step, prompt): the observed cell means.
        """
        m = self.model
        rng = np.random.default_rng(seed)
        post = _flat(self.posterior)
        D = next(iter(post.values())).shape[0]
        idx = rng.choice(D, size=min(n_draws, D), replace=False)
        sub = {k: v[idx] for k, v in post.items()}
        mu = m.mean_curves(sub, tau_index=sub.get("tau_index"))
        reps = np.empty_like(mu)
        for fam, ix in m.groups.items():
            n = m.stats[fam].n[None]  # (1,k,T,P)
            mk = m._judge_mean(mu[:, ix], fam, ix, sub)
            nu = m._nuisance_draws(sub, fam, ix)
            nmax = int(n.max())
            shape = (*mk.shape, nmax)
            mask = np.arange(nmax) < n[..., None]
            if fam == "beta":
                mk = np.clip(mk, _EPS, 1 - _EPS)
                x = rng.beta((mk * nu)[..., None] * np.ones(nmax), ((1 - mk) * nu)[..., None] * np.ones(nmax))
            elif fam == "binomial":
                x = (rng.random(shape) < mk[..., None]).astype(float)
            elif fam == "normal":
                x = rng.normal(mk[..., None], nu[..., None] * np.ones(nmax))
            elif fam == "poisson":
                x = rng.poisson(mk[..., None] * np.ones(nmax)).astype(float)
            else:
                lam = rng.gamma(nu[..., None] * np.ones(nmax), (mk / nu)[..., None] * np.ones(nmax))
                x = rng.poisson(lam).astype(float)
            reps[:, ix] = np.where(mask, x, 0.0).sum(-1) / np.maximum(n, 1)
        observed = np.nanmean(np.where(np.isfinite(m.obs), m.obs, np.nan), axis=-1)
        for k in range(len(m.order_parameters)):
            conv = _ScoreScale(m, k)
            reps[:, k] = conv(reps[:, k])
            observed[k] = conv(observed[k])
        return xr.Dataset(
            {
                "cell_mean": (("draw", "order_parameter", "step", "prompt"), reps),
                "observed": (("order_parameter", "step", "prompt"), observed),
            },
            coords={"order_parameter": m.order_parameters, "step": m.steps.astype(int), "prompt": m.prompts},
        )

    # -- diagnostics -------------------------------------------------------
    def _diag_vars(self, names: list[str]) -> pd.DataFrame:
        import arviz as az

        rows = {}
        for name in names:
            if name not in self.posterior:
                continue
            var = self.posterior[name]
            extra_dims = [d for d in var.dims if d not in ("chain", "draw")]
            stacked = var.stack(_flat_=extra_dims) if extra_dims else var.expand_dims(_flat_=[0])
            for i in range(stacked.sizes["_flat_"]):
                x = stacked.isel(_flat_=i).transpose("chain", "draw").values
                label = name
                if extra_dims:
                    key = stacked["_flat_"].values[i]
                    key = key if isinstance(key, tuple) else (key,)
                    label = f"{name}[{', '.join(str(k) for k in key)}]"
                if np.ptp(x) == 0:
                    rows[label] = {"r_hat": np.nan, "ess_bulk": np.nan, "ess_tail": np.nan}
                    continue
                rows[label] = {
                    "r_hat": float(az.rhat(x)),
                    "ess_bulk": float(az.ess(x, method="bulk")),
                    "ess_tail": float(az.ess(x, method="tail", prob=0.05)),
                }
        return pd.DataFrame.from_dict(rows, orient="index")

    def diagnostics(self) -> pd.DataFrame:
        """R-hat, bulk and tail ESS of every reported quantity; ``attrs['divergences']`` counts divergences."""
        names = ["tau", "width", "before", "after"] if self.config.transition == "sigmoid" else ["tau", "before", "after"]
        if self.config.transition == "step":
            names = ["before", "after"]
        if self.config.transition == "none":
            names = ["before"]
        names += [n for n in ("concentration", "noise_sd", "dispersion", "sigma_tau_unit") if n in self.posterior]
        table = self._diag_vars(names)
        table.attrs["divergences"] = self.n_divergences
        table.attrs["draws"] = int(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])
        return table

    @property
    def n_divergences(self) -> int:
        if "diverging" not in self.sample_stats:
            return 0
        return int(self.sample_stats["diverging"].values.sum())

    def check_diagnostics(self, warn: bool = True) -> list[str]:
        """List the diagnostic problems (R-hat > 1.01, ESS < 400, divergences); warn loudly if any."""
        table = self.diagnostics()
        problems = []
        bad_rhat = table[table["r_hat"] > defaults.RHAT_MAX]
        if len(bad_rhat):
            problems.append(f"R-hat > {defaults.RHAT_MAX} for {list(bad_rhat.index)} (max {bad_rhat['r_hat'].max():.3f})")
        low = table[(table["ess_bulk"] < defaults.ESS_MIN) | (table["ess_tail"] < defaults.ESS_MIN)]
        if len(low):
            problems.append(f"ESS < {defaults.ESS_MIN:g} for {list(low.index)}")
        if self.n_divergences:
            problems.append(f"{self.n_divergences} divergent transitions")
        if problems and warn:
            warnings.warn(
                "MCMC diagnostics are bad — do not trust these intervals yet: " + "; ".join(problems)
                + ". Try more tune/draws, target_accept=0.95, or check whether this order parameter has a "
                "transition at all (fit(compare_null=True)).",
                DiagnosticsWarning,
                stacklevel=3,
            )
        return problems

    # -- no-transition comparison -------------------------------------------
    def fit_null(self, **sample_kwargs) -> "ChangePointResult":
        """Fit the no-transition model (same data, levels and pooling) and store it for comparison."""
        null = ChangePointModel(
            self.model.ds, likelihood=self.config.likelihood, transition="none", pooling=self.config.pooling,
            order_parameters=self.order_parameters, threshold=self.config.threshold, below=self.config.below,
            priors=self.config.priors, parametrization=self.config.parametrization, measurement=self.config.measurement,
        )
        posterior, stats = _sample(null.build(), target_accept=0.95, **sample_kwargs)
        null_result = ChangePointResult._from_samples(null, posterior, stats)
        self.extra["null_log_likelihood"] = null_result.extra["log_likelihood"]
        return null_result

    def transition_evidence(self, n_bootstrap: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Is there a transition at all? LOO comparison with the no-transition model per order parameter.

        Cells (step × prompt) are the units left out. Columns: ``elpd_transition``, ``elpd_null``,
        ``elpd_diff`` (transition − null), ``se_diff``, ``p_transition`` (pseudo-BMA+ weight of the
        transition model: Bayesian-bootstrap-regularised LOO weight, not a posterior probability of a
        prior over models) and ``max_pareto_k`` (> 0.7 means LOO is unreliable for some cells).
        Requires ``fit(compare_null=True)`` or :meth:`fit_null`.
        """
        import arviz as az

        if "null_log_likelihood" not in self.extra:
            raise ModelSpecError("fit the no-transition model first: fit(compare_null=True) or result.fit_null().")
        rows = {}
        rng = np.random.default_rng(seed)
        for op in self.order_parameters:
            elpd, khat = {}, {}
            pointwise = {}
            for key, group in (("transition", "log_likelihood"), ("null", "null_log_likelihood")):
                ll = self.extra[group]["cell"].sel(order_parameter=op)
                dt = xr.DataTree.from_dict({"log_likelihood": xr.Dataset({"cell": ll}),
                                            "posterior": xr.Dataset({"x": ll.isel(step=0, prompt=0)})})
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = az.loo(dt, pointwise=True, var_name="cell")
                elpd[key] = float(res.elpd)
                pointwise[key] = np.asarray(res.elpd_i).ravel()
                khat[key] = float(np.nanmax(np.asarray(res.pareto_k)))
            diff = pointwise["transition"] - pointwise["null"]
            n = diff.size
            w = rng.dirichlet(np.ones(n), size=n_bootstrap)
            boot = n * (w @ diff)
            p = float(np.mean(1.0 / (1.0 + np.exp(-np.clip(boot, -700, 700)))))
            rows[op] = {
                "elpd_transition": elpd["transition"],
                "elpd_null": elpd["null"],
                "elpd_diff": float(diff.sum()),
                "se_diff": float(np.sqrt(n) * diff.std(ddof=1)),
                "p_transition": p,
                "max_pareto_k": max(khat.values()),
            }
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "order_parameter"
        table.attrs["method"] = "PSIS-LOO over (step, prompt) cells; p_transition = pseudo-BMA+ weight"
        return table

    # -- comparison with the gradient peak -----------------------------------
    def compare_to(self, peak, ci_prob: float | None = None, ci_kind: str | None = None, seed: int = 0) -> pd.DataFrame:
        """Lag tau_k − peak (training steps) per order parameter, with P(tau_k > peak).

        ``peak`` is a :class:`~phasebayes.GradientPeakResult` (or any object with ``peak_draws()``,
        or an array of peak draws). The two posteriors are independent; draws are paired at random.
        """
        self._require_transition()
        peak_draws = np.asarray(peak.peak_draws() if hasattr(peak, "peak_draws") else peak, dtype=float).ravel()
        tau = self.draws("tau")
        rng = np.random.default_rng(seed)
        pk = rng.choice(peak_draws, size=tau.shape[0], replace=tau.shape[0] > peak_draws.size)
        lags = {op: tau[:, k] - pk for k, op in enumerate(self.order_parameters)}
        table = summarize_draws(lags, ci_prob=ci_prob, ci_kind=ci_kind, units="training steps")
        table = table.rename(columns={c: f"lag_{c}" for c in table.columns})
        table["p_later"] = [float(np.mean(lags[op] > 0)) for op in self.order_parameters]
        table["peak_median"] = float(np.median(peak_draws))
        table.attrs.update({"ci_prob": table.attrs.get("ci_prob"), "meaning": "lag = tau - gradient peak; p_later = P(tau > peak)"})
        return table

    # -- persistence --------------------------------------------------------
    def to_datatree(self) -> xr.DataTree:
        """Data + posterior + model config in one DataTree (groups: posterior, sample_stats, run, ...)."""
        children = {"posterior": self.posterior, "sample_stats": self.sample_stats, "run": _encodable(numeric_part(self.model.ds))}
        children.update(self.extra)
        tree = xr.DataTree.from_dict({k: v for k, v in children.items()})
        tree.attrs.update({"phasebayes_model": "ChangePointModel", "config": self.config.to_json()})
        from .. import __version__

        tree.attrs["phasebayes_version"] = __version__
        return tree

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write data, posterior and config to one netCDF file (atomic; refuses to overwrite unless asked)."""
        return save_netcdf(self.to_datatree(), path, overwrite=overwrite)

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> "ChangePointResult":
        """Rebuild a result (and its model) from :meth:`to_datatree` output."""
        if tree.attrs.get("phasebayes_model") != "ChangePointModel":
            raise RunDataError("this file is not a saved ChangePointModel result.")
        cfg = ModelConfig.from_json(tree.attrs["config"])
        run = tree["run"].to_dataset()
        for name in ("order_parameter", "prompt"):
            run = run.assign_coords({name: run[name].values.astype(object)})
        for name in list(run.data_vars):
            if run[name].dtype.kind == "U":
                run[name] = run[name].astype(object)
        model = ChangePointModel(run, likelihood=cfg.likelihood, transition=cfg.transition, pooling=cfg.pooling,
                                 order_parameters=cfg.order_parameters, threshold=cfg.threshold, below=cfg.below,
                                 priors=cfg.priors, parametrization=cfg.parametrization, measurement=cfg.measurement)
        posterior = tree["posterior"].to_dataset()
        posterior = posterior.assign_coords(order_parameter=list(cfg.order_parameters), prompt=model.prompts)
        extra = {k: tree[k].to_dataset() for k in tree.children if k not in ("posterior", "sample_stats", "run")}
        return cls(model, posterior, tree["sample_stats"].to_dataset(), extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ChangePointResult":
        """Read a result written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise RunDataError(f"no saved result at {path}.")
        tree = xr.open_datatree(path, engine="netcdf4").load()
        return cls.from_datatree(tree)

    # -- plots ----------------------------------------------------------------
    def plot_trajectories(self, ci_prob: float | None = None, max_prompts: int = 8):
        """Observed cell means per prompt with fitted curves, the population curve and the tau band.

        One panel per order parameter; returns a matplotlib Figure.
        """
        from .plots import plot_trajectories

        return plot_trajectories(self, ci_prob=ci_prob, max_prompts=max_prompts)

    def plot_tau(self, ci_prob: float | None = None):
        """Posterior densities of tau per order parameter (with the interval marked); a Figure."""
        from .plots import plot_tau

        return plot_tau(self, ci_prob=ci_prob)

    def summary(self, ci_prob: float | None = None, ci_kind: str | None = None) -> str:
        """A short plain-text summary of the transitions (one line per order parameter)."""
        prob, kind = resolve_ci(ci_prob, ci_kind)
        ts = self.transition_steps(prob, kind)
        lines = [f"Transition step tau (training steps; {prob:.0%} {kind.upper()}):"]
        for op, row in ts.iterrows():
            lines.append(f"  {op:<24s} {row['median']:9.1f}  [{row['lower']:.1f}, {row['upper']:.1f}]  R-hat {row['r_hat']:.3f}")
        lines.append(f"  divergences: {self.n_divergences}")
        return "\n".join(lines)


class _ScoreScale:
    """Convert a model mean (observation scale) of order parameter k into score units."""

    def __init__(self, model: ChangePointModel, k: int):
        op = model.order_parameters[k]
        self.family = model.config.likelihood[op]
        self.lo, self.hi = order_parameter_scale(model.ds, op)
        self.n = max(int(model.n_finite[k]), 2)

    def __call__(self, mean):
        if self.family == "beta":
            unit = (mean * self.n - 0.5) / (self.n - 1)  # undo the squeeze
            return self.lo + (self.hi - self.lo) * unit
        return mean


def load_result(path: str | os.PathLike) -> ChangePointResult:
    """Load a saved :class:`ChangePointResult` (alias of :meth:`ChangePointResult.load`)."""
    return ChangePointResult.load(path)
