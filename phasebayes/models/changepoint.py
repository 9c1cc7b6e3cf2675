"""Hierarchical Bayesian change-point model for judged scores (``docs/changepoint-models.md``).

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
NUTS moves the sigmoid model's population levels as their link-scale blends at the first and last
checkpoint (:func:`~phasebayes.models.geometry.levels_from_end_values`; same priors, Jacobian added).

Priors, in data units (``priors`` overrides any of them):

- ``tau_k`` ~ Uniform(first step, last step);
- ``w_k`` (steps) ~ LogNormal(log(median checkpoint spacing), 1) (``priors["width_median_steps"]`` overrides the
  spacing: adaptive designs set it to the spacing of the checkpoints that exist);
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

import numpy as np
import xarray as xr

from ..dataset import order_parameter_scale, validate
from ..errors import ModelSpecError, RunDataError
from .aggregated import aggregated_cells, aggregated_form  # aggregated judgements (from_counts / from_summaries)
from .families import (
    CellStats,
    ORDINAL_MAX_CATEGORIES,
    get_family,
    n_categories,
    prepare_scores,
    pytensor_math,
    sufficient_statistics,
)
from .geometry import TAU_SEPARATION_CENTRED, end_links, levels_from_end_values, tau_separation, width_prior_median
from .links import _EPS, _inv_link, _logistic  # noqa: F401  (re-exported for older imports)
from .mirror import _NumpyMirror
from .multirun import MultiRunChangePointModel, is_multi_run
from .model_config import ModelConfig
from .ordinal import ordinal_graph
from .sampling import _flat, _sample, _unflat  # noqa: F401  (re-exported for older imports)

__all__ = ["ChangePointModel", "ChangePointResult", "ModelConfig", "load_result"]

TRANSITIONS = ("sigmoid", "step")


class ChangePointModel(_NumpyMirror):
    """All order parameters of a run in one hierarchical change-point model.

    Parameters
    ----------
    ds
        Run dataset (:func:`phasebayes.from_dataframe`, :func:`phasebayes.simulate_run`, ...). Several
        runs (a list or dict of run datasets, or one dataset with a ``run`` dimension) give a
        :class:`~phasebayes.models.multirun.MultiRunChangePointModel` instead: tau per run, population
        tau and seed-to-seed spread (sigmoid transition).
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
        Sampler geometry of the prompt-level effects (same model, different coordinates). ``"auto"``
        (default): tau offsets centred when the data show prompt taus that clearly differ
        (:mod:`phasebayes.models.geometry`), else non-centred zero-sum (no funnel when prompts share tau);
        level offsets centred when cells hold >= 40 scores on average, else non-centred.
        ``"centered"`` / ``"noncentered"`` force one form; see ``docs/changepoint-models.md``.
    measurement
        Optional :class:`~phasebayes.models.measurement.JudgeMeasurement` (human ratings of a subset):
        the curve, tau and levels are then on the human scale and the judge scores are a calibrated,
        noisy measurement of it (see :mod:`phasebayes.models.measurement`).
    """

    DEFAULT_PRIORS: dict[str, float] = {
        "width_log_sd": 1.0,  # sd of log width
        "width_median_steps": 0.0,  # median of the width prior in steps; 0: the median checkpoint spacing
        "sigma_tau_frac": 0.05,  # HalfNormal scale of prompt tau deviations, fraction of the run
        "level_sd_link": 1.5,  # sd of logit/log population levels
        "level_sd_normal": 2.5,  # sd of normal population levels, in data sds
        "level_sd_ordinal": 3.0,  # sd of the ordinal latent level after the transition (logit scale)
        "cut_sd": 2.0,  # sd of ordinal cut points around the early checkpoints' cumulative logits
        "prompt_level_sd_link": 0.5,  # HalfNormal scale of prompt level deviations (logit/log)
        "beta_phi_log_mean": float(np.log(5.0)),
        "beta_phi_log_sd": 1.5,
        "nb_alpha_log_mean": float(np.log(5.0)),
        "nb_alpha_log_sd": 2.0,
    }

    def __new__(cls, ds=None, *args, **kwargs):
        # several runs (a list/dict of run datasets, or one with a 'run' dimension): the multi-run model
        if cls is ChangePointModel and ds is not None and is_multi_run(ds):
            return MultiRunChangePointModel(ds, *args, **kwargs)
        return super().__new__(cls)

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
                    threshold=threshold,  # only the binomial family reads it
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
        self.n_cat = np.array([n_categories(order_parameter_scale(ds, op)) if get_family(fams[op]).bounded_integer else 0
                               for op in ops])
        self.stats: dict[str, CellStats] = self._cell_statistics()
        # ordinal order parameters: the population latent level before the transition is pinned at 0
        self.before_free = np.array([0.0 if get_family(fams[op]).has_cut_points else 1.0 for op in ops])
        # Prompt-level effects: centred when each prompt's curve is well identified by its own data
        # (many scores per prompt), non-centred (zero-sum offsets) when the data are sparse.
        per_cell = float(np.isfinite(self.obs).sum(-1).mean())
        # data summaries used by priors (per order parameter)
        self.data_mean = np.array([np.nanmean(self.obs[k]) for k in range(len(ops))])
        self.data_sd = np.array([max(np.nanstd(self.obs[k]), 1e-6) for k in range(len(ops))])
        if agg:
            self.stats, self.n_finite, per_cell, self.data_mean, self.data_sd = (
                agg.stats, agg.n_total, agg.per_cell, agg.data_mean, agg.data_sd)
        self.centered_levels = parametrization == "centered" or (parametrization == "auto" and per_cell >= 40)
        # tau offsets: centred when prompt taus clearly differ (non-centred ones would form a banana)
        self.tau_separation = tau_separation(self.obs, self.u) if not agg else np.full(len(ops), np.nan)
        self.centered_tau = parametrization == "centered" or (
            parametrization == "auto" and bool(np.all(self.tau_separation > TAU_SEPARATION_CENTRED)))
        self.measurement = None
        if measurement is not None:  # judge error model: see phasebayes/models/measurement.py
            from .measurement import JudgeMeasurement

            spec = measurement if isinstance(measurement, JudgeMeasurement) else JudgeMeasurement.from_dict(measurement)
            self.measurement = spec.bind(self)
            self.config.measurement = spec.to_dict()

    def _judge_mean(self, mu, fam: str, ix, post=None):
        """Mean of the observed (judge) scores given the curve ``mu``: the identity unless a measurement model is set."""
        if self.measurement is None or not get_family(fam).judge_error_model:
            return mu
        return self.measurement.judge_mean_pymc(mu, ix) if post is None else self.measurement.judge_mean(post, mu, ix)

    # ------------------------------------------------------------------ set-up
    def _cell_statistics(self) -> dict[str, CellStats]:
        """Per-cell sufficient statistics of each family group (the only use of the raw scores)."""
        return {f: sufficient_statistics(f, self.obs[ix], self.n_cat[ix]) for f, ix in self.groups.items()}

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
                    integer = lo == np.round(lo) and hi == np.round(hi) and np.all(y == np.round(y))
                    if (lo, hi) == (0.0, 1.0) and np.all(np.isin(y, [0.0, 1.0])):
                        fams[op] = "binomial"
                    elif integer and 3 <= hi - lo + 1 <= ORDINAL_MAX_CATEGORIES:
                        fams[op] = "ordinal"
                    else:
                        fams[op] = "beta"
                elif np.all(y >= 0) and np.all(y == np.round(y)):
                    fams[op] = "negative_binomial"
                else:
                    fams[op] = "normal"
        else:
            fams = {o: likelihood for o in ops}
        for op, f in fams.items():
            try:
                get_family(f)
            except ModelSpecError as err:
                raise ModelSpecError(f"{err} (order parameter '{op}')") from None
        return fams

    @property
    def transition(self) -> str:
        return self.config.transition

    def _link_level_prior(self, k: int) -> tuple[float, float]:
        fam = get_family(self.config.likelihood[self.order_parameters[k]])
        return fam.level_prior(self.config.priors, self.data_mean[k], self.data_sd[k])

    def _prompt_level_scale(self, k: int) -> float:
        fam = get_family(self.config.likelihood[self.order_parameters[k]])
        return fam.prompt_level_scale(self.config.priors, self.data_sd[k])

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
            has_transition = cfg.transition != "none"
            if cfg.transition == "sigmoid":
                tau_u = pm.Uniform("tau_unit", 0.0, 1.0, dims="order_parameter")
                w0 = width_prior_median(cfg.priors, self.u, self.span)
                width_u = pm.LogNormal("width_unit", mu=np.log(w0), sigma=cfg.priors["width_log_sd"], dims="order_parameter")
                # levels sampled as their link-scale blends at the first and last checkpoint (geometry.py)
                ends = [pm.Flat(n, initval=mu_lvl[:, 0], dims="order_parameter") for n in ("start_link", "end_link")]
                mask = np.array([not get_family(cfg.likelihood[o]).has_cut_points for o in self.order_parameters], dtype=float)
                a, b, log_jac = levels_from_end_values(*ends, tau_u, width_u, mask, pt)
                level_before = pm.Deterministic("level_before_link", a, dims="order_parameter")
                level_after = pm.Deterministic("level_after_link", b, dims="order_parameter")
                prior = pm.logp(pm.Normal.dist(mu=mu_lvl[:, 0], sigma=mu_lvl[:, 1]), pt.stack([a, b]))
                pm.Potential("level_prior", pt.sum(prior) + log_jac)
            else:  # chains start at the data's first and last checkpoints (one mode, not a swapped one)
                start, end = end_links(self.obs, [get_family(self.config.likelihood[o]) for o in self.order_parameters],
                                       mu_lvl[:, 0])
                level_before = pm.Normal("level_before_link", mu=mu_lvl[:, 0], sigma=mu_lvl[:, 1], dims="order_parameter",
                                         initval=start)
                if has_transition:
                    level_after = pm.Normal("level_after_link", mu=mu_lvl[:, 0], sigma=mu_lvl[:, 1],
                                            dims="order_parameter", initval=end)
            if not self.before_free.all():  # ordinal: the cut points carry the location
                level_before = level_before * self.before_free
            centered = self.centered_levels
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
                if partial:
                    s_tau = pm.HalfNormal("sigma_tau_unit", sigma=cfg.priors["sigma_tau_frac"], dims="order_parameter")
                    if self.centered_tau:
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
                st, F = self.stats[fam], get_family(fam)
                if F.has_cut_points:
                    total = total + ordinal_graph(self, ix, lb, la if has_transition else None,
                                                  s[ix] if cfg.transition == "sigmoid" else None)
                    continue
                nuis = self._nuisance_rv(pm, fam, ix)
                A = F.clip(F.inv_link(lb[ix], pt)[:, None, :], pt)  # (k,1,P)
                if cfg.transition == "none":
                    total = total + pt.sum(F.loglik(st, self._judge_mean(A, fam, ix), nuis, m))
                    continue
                B = F.clip(F.inv_link(la[ix], pt)[:, None, :], pt)
                if cfg.transition == "sigmoid":
                    mu = F.clip(A + (B - A) * s[ix], pt)
                    total = total + pt.sum(F.loglik(st, self._judge_mean(mu, fam, ix), nuis, m))
                else:  # step: exact marginalisation over the first post-transition grid index j
                    ll_pre = pt.sum(F.loglik(st, A, nuis, m), axis=2)  # (k,T)
                    ll_post = pt.sum(F.loglik(st, B, nuis, m), axis=2)
                    total = total + self.step_marginal(ll_pre, ll_post)
                if nuis is not None:
                    total = total + pt.sum(F.shared_loglik(st, nuis[:, 0, 0], m))
            pm.Potential("loglik", total)
        return model

    def step_marginal(self, ll_pre, ll_post):
        """Step model: log-sum-exp over the first post-transition index j of the per-step log-likelihoods.

        ``ll_pre``/``ll_post`` are PyTensor ``(k, T)`` sums over prompts before/after; returns a scalar.
        """
        import pymc as pm
        import pytensor.tensor as pt

        cum_pre = pt.cumsum(ll_pre, axis=1)[:, :-1]  # Σ_{t<j}, j = 1..T−1
        suffix = pt.cumsum(ll_post[:, ::-1], axis=1)[:, ::-1][:, 1:]  # Σ_{t≥j}
        return pt.sum(pm.math.logsumexp(self.step_log_prior()[None, :] + cum_pre + suffix, axis=1))

    def _nuisance_rv(self, pm, fam: str, ix: np.ndarray):
        """The family's nuisance parameter, one per order parameter of ``ix``, as ``(k, 1, 1)`` (or None)."""
        F = get_family(fam)
        if F.nuisance is None:
            return None
        dim = f"{F.nuisance}_op"
        pm.modelcontext(None).add_coord(dim, [self.order_parameters[k] for k in ix])
        return F.nuisance_prior(pm, self.config.priors, self.data_sd[ix], dim)[:, None, None]

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

        ``sampler``: ``"auto"`` (nutpie, else ``"pymc"`` in ``cores`` processes), ``"nutpie"``, ``"pymc"``, or
        the JAX ``"numpyro"`` / ``"blackjax"`` (``pip install "phasebayes[jax]"``). ``random_seed``: reproducible.
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


from .result import ChangePointResult, _ScoreScale, load_result  # noqa: E402  (re-exported)
