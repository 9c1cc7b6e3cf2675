"""Several runs (seeds, datasets, models) in one change-point model.

For order parameter k, run r, prompt p and checkpoint step t (sigmoid transition, width w_k shared):

    tau_krp = tau_k + sigma_run_k · z_kr + sigma_tau_k · z_krp          (z_kr ~ N(0, 1); z_krp zero-sum over p)
    level_krp = g⁻¹(level_k + sigma_run_level_k · u_kr + sigma_level_k · u_krp)   (before and after alike)

``tau_k`` is the population transition step (the mean over runs that could have been trained),
``tau_kr = tau_k + sigma_run_k · z_kr`` the transition of run r (average over its prompts) and
``sigma_run_k`` the seed-to-seed spread of the transition step (standard deviation across runs, in
training steps). Prompt offsets are nested in runs and non-centred; run offsets are centred when the
runs' cells hold >= 40 scores on average (``parametrization``), else non-centred. Likelihoods are the
single-run families (not ``ordinal``) on per-cell sufficient statistics, so the cost grows with
runs × steps × prompts, not with samples. Runs may have different checkpoint grids and prompt sets:
they are aligned on the union of steps and prompts, missing cells carry no data.

Priors (data units, overridable): sigma_run_k ~ HalfNormal(10 % of the run), sigma_run_level_k ~
HalfNormal(0.5 on the link scale; one data sd for ``normal``); the rest as in
:class:`~phasebayes.ChangePointModel`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import order_parameter_scale, validate
from ..errors import ModelSpecError, RunDataError
from .families import get_family, n_categories, prepare_scores, pytensor_math, sufficient_statistics
from .geometry import width_prior_median

__all__ = ["MultiRunChangePointModel", "stack_runs", "is_multi_run"]


def is_multi_run(data) -> bool:
    """True for a list/tuple/dict of run datasets or a dataset with a ``run`` dimension."""
    if isinstance(data, xr.Dataset):
        return "run" in data.dims
    return isinstance(data, (Mapping, Sequence)) and not isinstance(data, (str, bytes))


def split_runs(data) -> dict[str, xr.Dataset]:
    """Normalise the accepted inputs to ``{run name: run dataset}`` (each validated)."""
    if isinstance(data, xr.Dataset):
        runs = {str(r): data.sel(run=r, drop=True) for r in data["run"].values}
    elif isinstance(data, Mapping):
        runs = {str(k): v for k, v in data.items()}
    else:
        runs = {f"run{i}": d for i, d in enumerate(data)}
    if len(runs) < 2:
        raise ModelSpecError(f"a multi-run model needs at least 2 runs, got {len(runs)}; fit one run with ChangePointModel(ds).")
    for name, d in runs.items():
        if not isinstance(d, xr.Dataset):
            raise RunDataError(f"run '{name}' is a {type(d).__name__}, not a run dataset (xarray.Dataset).")
        try:
            validate(d)
        except RunDataError as err:
            raise RunDataError(f"run '{name}': {err}") from None
    return runs


def stack_runs(runs: Mapping[str, xr.Dataset], order_parameters: list[str] | None = None) -> xr.DataArray:
    """Scores of all runs on the union of steps, prompts and samples: ``(run, order_parameter, step, prompt, sample)``."""
    ops0 = [str(o) for o in next(iter(runs.values()))["order_parameter"].values]
    ops = list(order_parameters) if order_parameters is not None else ops0
    for name, d in runs.items():
        have = {str(o) for o in d["order_parameter"].values}
        missing = [o for o in ops if o not in have]
        if missing:
            raise ModelSpecError(f"order parameter(s) {missing} missing in run '{name}'; pass order_parameters=[...] "
                                 "to model the ones every run has.")
    scores = [d["score"].sel(order_parameter=ops).assign_coords(sample=np.arange(d.sizes["sample"]))
              for d in runs.values()]
    stacked = xr.concat(scores, dim=pd.Index(list(runs), name="run"), join="outer", fill_value=np.nan)
    return stacked.transpose("run", "order_parameter", "step", "prompt", "sample")


class MultiRunChangePointModel:
    """One hierarchical change-point model over several runs (``ChangePointModel([ds1, ds2, ...])``).

    Parameters are those of :class:`~phasebayes.ChangePointModel` (``transition`` must be
    ``"sigmoid"``, ``pooling`` ``"partial"``); ``priors`` also takes ``run_tau_frac`` and
    ``run_level_sd_link``. ``data`` is a list or dict of run datasets, or one dataset with a ``run``
    dimension.
    """

    EXTRA_PRIORS = {"run_tau_frac": 0.10, "run_level_sd_link": 0.5}

    def __init__(self, data, *, likelihood="auto", transition="sigmoid", pooling="partial", order_parameters=None,
                 threshold=None, below=True, priors=None, parametrization="auto"):
        from .changepoint import ChangePointModel

        if transition != "sigmoid":
            raise ModelSpecError("several runs in one model support transition='sigmoid' only; fit step models per run.")
        if pooling not in ("partial", True):
            raise ModelSpecError("several runs in one model need pooling='partial' (runs and prompts are pooled).")
        known = set(ChangePointModel.DEFAULT_PRIORS) | set(self.EXTRA_PRIORS)
        bad = set(priors or {}) - known
        if bad:
            raise ModelSpecError(f"unknown prior key(s) {sorted(bad)}; known: {sorted(known)}.")
        self.runs = split_runs(data)
        self.run_names = list(self.runs)
        score = stack_runs(self.runs, order_parameters)
        first = next(iter(self.runs.values()))
        ops = [str(o) for o in score["order_parameter"].values]
        self.order_parameters = ops
        fams = ChangePointModel._resolve_likelihood(first, ops, likelihood, threshold)
        if any(get_family(f).has_cut_points for f in fams.values()):
            raise ModelSpecError("the ordinal likelihood is not available in multi-run models yet; fit each run "
                                 "with ChangePointModel(ds) or choose likelihood='beta'.")
        self.likelihood = fams
        self.threshold, self.below = threshold, below
        self.priors = {**ChangePointModel.DEFAULT_PRIORS, **self.EXTRA_PRIORS, **(priors or {})}
        self.steps = score["step"].values.astype(float)
        self.prompts = [str(p) for p in score["prompt"].values]
        self.t0, self.span = float(self.steps[0]), float(self.steps[-1] - self.steps[0])
        self.u = (self.steps - self.t0) / self.span
        self.score = score
        # observations (K, R, T, P, N) on each family's scale
        self.obs = np.stack([prepare_scores(fams[op], score.sel(order_parameter=op).values,
                                            order_parameter_scale(first, op),
                                            threshold=threshold, below=below)
                             for op in ops])
        self.n_finite = np.isfinite(self.obs).sum(axis=(1, 2, 3, 4))
        if (np.isfinite(self.obs).sum(axis=(2, 3, 4)) == 0).any():
            raise RunDataError("a run has no finite score for some order parameter.")
        groups: dict[str, list[int]] = {}
        for k, op in enumerate(ops):
            groups.setdefault(fams[op], []).append(k)
        self.groups = {f: np.array(ix) for f, ix in groups.items()}
        K, R, T, P, N = self.obs.shape
        self.shape = (K, R, T, P)
        if parametrization not in ("auto", "centered", "noncentered"):
            raise ModelSpecError(f"parametrization must be 'auto', 'centered' or 'noncentered', got {parametrization!r}.")
        # Run offsets (tau and levels): centred when each run's cells hold >= 40 scores on average (the
        # single-run model's rule for its level offsets) — every run's curve is then pinned by its own data and
        # non-centred offsets would form a funnel with the run spread (8 runs x 8 prompts x 100 checkpoints x
        # 50 samples: ESS 4-36, R-hat 1.08-1.37 non-centred; ESS >= 500, R-hat <= 1.01 centred).
        per_cell = float(np.isfinite(self.obs).sum(-1).mean())
        self.centered_runs = parametrization == "centered" or (parametrization == "auto" and per_cell >= 40)
        # cells of all runs side by side on the step axis: (k, R*T, P)
        n_values = np.array([n_categories(order_parameter_scale(first, op)) if get_family(fams[op]).bounded_integer else 0
                             for op in ops])
        self.stats = {f: sufficient_statistics(f, self.obs[ix].reshape(len(ix), R * T, P, N), n_values[ix])
                      for f, ix in self.groups.items()}
        self.data_mean = np.array([np.nanmean(self.obs[k]) for k in range(K)])
        self.data_sd = np.array([max(np.nanstd(self.obs[k]), 1e-6) for k in range(K)])
        self._single = ChangePointModel.__new__(ChangePointModel)  # prior helpers of the single-run model
        self._single.config = type("C", (), {"likelihood": fams, "priors": self.priors})()
        self._single.order_parameters, self._single.data_mean, self._single.data_sd = ops, self.data_mean, self.data_sd
        self.config, self.ds = self._single.config, first  # what score-scale conversions read

    def build(self):
        """The PyMC model of all runs."""
        import pymc as pm
        import pytensor.tensor as pt

        K, R, T, P = self.shape
        pr = self.priors
        coords = {"order_parameter": self.order_parameters, "run": self.run_names, "prompt": self.prompts}
        m = pytensor_math()
        lvl = np.array([self._single._link_level_prior(k) for k in range(K)])
        prompt_scale = np.array([self._single._prompt_level_scale(k) for k in range(K)])
        run_scale = np.array([get_family(self.likelihood[o]).run_level_scale(pr, self.data_sd[k])
                              for k, o in enumerate(self.order_parameters)])
        with pm.Model(coords=coords) as model:
            levels = {}
            for name in ("before", "after"):
                pop = pm.Normal(f"level_{name}_link", mu=lvl[:, 0], sigma=lvl[:, 1], dims="order_parameter")
                s_run = pm.HalfNormal(f"sigma_run_{name}_link", sigma=run_scale, dims="order_parameter")
                z_run = self._run_offsets(pm, f"z_run_{name}", pop, s_run)
                s_p = pm.HalfNormal(f"sigma_{name}_link", sigma=prompt_scale, dims="order_parameter")
                z_p = pm.ZeroSumNormal(f"z_{name}", dims=("order_parameter", "run", "prompt"))
                levels[name] = (pop[:, None, None] + s_run[:, None, None] * z_run[:, :, None]
                                + s_p[:, None, None] * z_p)  # (K,R,P)
            tau = pm.Uniform("tau_unit", 0.0, 1.0, dims="order_parameter")
            s_run_tau = pm.HalfNormal("sigma_run_tau_unit", sigma=pr["run_tau_frac"], dims="order_parameter")
            z_run_tau = self._run_offsets(pm, "z_run_tau", tau, s_run_tau)
            s_tau = pm.HalfNormal("sigma_tau_unit", sigma=pr["sigma_tau_frac"], dims="order_parameter")
            z_tau = pm.ZeroSumNormal("z_tau", dims=("order_parameter", "run", "prompt"))
            tau_krp = tau[:, None, None] + s_run_tau[:, None, None] * z_run_tau[:, :, None] + s_tau[:, None, None] * z_tau
            w0 = width_prior_median(pr, self.u, self.span)
            width = pm.LogNormal("width_unit", mu=np.log(w0), sigma=pr["width_log_sd"], dims="order_parameter")
            s = pt.sigmoid((self.u[None, None, :, None] - tau_krp[:, :, None, :]) / width[:, None, None, None])  # (K,R,T,P)
            total = 0.0
            for fam, ix in self.groups.items():
                F, nuis = get_family(fam), self._nuisance_rv(pm, fam, ix)
                A = F.inv_link(levels["before"][ix], pt)[:, :, None, :]
                B = F.inv_link(levels["after"][ix], pt)[:, :, None, :]
                mu = F.clip((A + (B - A) * s[ix]).reshape((len(ix), R * T, P)), pt)
                total = total + pt.sum(F.loglik(self.stats[fam], mu, nuis, m))
                if nuis is not None:
                    total = total + pt.sum(F.shared_loglik(self.stats[fam], nuis[:, 0, 0], m))
            pm.Potential("loglik", total)
        return model

    def _run_offsets(self, pm, name, centre, spread):
        """Standardised run offsets ``name`` (order_parameter, run): sampled directly (non-centred) or
        derived from the centred run values ``<name without z_>_centred ~ Normal(centre, spread)``."""
        dims = ("order_parameter", "run")
        if not self.centered_runs:
            return pm.Normal(name, 0.0, 1.0, dims=dims)
        value = pm.Normal(name.removeprefix("z_") + "_centred", centre[:, None], spread[:, None], dims=dims)
        return pm.Deterministic(name, (value - centre[:, None]) / spread[:, None], dims=dims)

    def _nuisance_rv(self, pm, fam, ix):
        from .changepoint import ChangePointModel

        helper = self._single
        helper.order_parameters = self.order_parameters
        return ChangePointModel._nuisance_rv(helper, pm, fam, ix)

    def fit(self, *, draws: int = 1000, tune: int = 1000, chains: int = 4, cores: int | None = None,
            random_seed: int | None = None, sampler: str = "auto", target_accept: float = 0.95,
            progressbar: bool = True, warn: bool = True):
        """Sample with NUTS; returns a :class:`~phasebayes.models.multirun_result.MultiRunResult`.

        ``sampler``: ``"auto"`` (nutpie), ``"nutpie"``, ``"pymc"``, ``"numpyro"`` or ``"blackjax"`` (the JAX
        ones need ``pip install "phasebayes[jax]"``), as in :meth:`ChangePointModel.fit`."""
        from .multirun_result import MultiRunResult
        from .sampling import _sample

        posterior, stats = _sample(self.build(), draws=draws, tune=tune, chains=chains, cores=cores,
                                   random_seed=random_seed, sampler=sampler, target_accept=target_accept,
                                   progressbar=progressbar)
        result = MultiRunResult.from_samples(self, posterior, stats)
        if warn:
            result.check_diagnostics(warn=True)
        return result

    def config_dict(self) -> dict:
        """Constructor arguments (JSON-able) to rebuild this model from its runs."""
        return {"likelihood": self.likelihood, "threshold": self.threshold, "below": self.below,
                "priors": self.priors, "order_parameters": self.order_parameters,
                "parametrization": "centered" if self.centered_runs else "noncentered"}
