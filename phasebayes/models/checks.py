"""Model checks of a change-point fit: posterior predictive draws and the no-transition comparison.

Mixed into :class:`~phasebayes.models.result.ChangePointResult`.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import expit
import pandas as pd
import xarray as xr
from scipy.special import expit

from ..errors import ModelSpecError
from .families import get_family
from .links import _ScoreScale
from .sampling import _flat, _sample


class _ModelChecks:
    """Posterior predictive checks and LOO comparison with the no-transition model."""

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
            n = m.stats[fam].n_observed[None]  # (1,k,T,P)
            if get_family(fam).has_cut_points:  # category counts per cell from the fitted mixture probabilities
                def draw(probs, counts):
                    cnt = rng.multinomial(counts.sum(-1).astype(int)[None], np.clip(probs, 0, None) /
                                          np.clip(probs, 0, None).sum(-1, keepdims=True))
                    return (cnt * np.arange(probs.shape[-1])).sum(-1) / np.maximum(counts.sum(-1), 1)

                reps[:, ix] = m._ordinal_cells(sub, ix, sub.get("tau_index"), draw)
                continue
            F = get_family(fam)
            mk = F.clip(m._judge_mean(mu[:, ix], fam, ix, sub))
            nu = m._nuisance_draws(sub, fam, ix)
            nmax = int(n.max())
            mask = np.arange(nmax) < n[..., None]
            st = m.stats[fam]
            trials = None if st.n_categories is None else (st.n_categories - 1.0)[None, :, None, None, None]
            x = F.draw(rng, mk[..., None] * np.ones(nmax), None if nu is None else nu[..., None], trials)
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

    # -- no-transition comparison -------------------------------------------
    def fit_null(self, **sample_kwargs) -> "ChangePointResult":
        """Fit the no-transition model (same data, levels and pooling) and store it for comparison."""
        from .changepoint import ChangePointModel

        null = ChangePointModel(
            self.model.ds, likelihood=self.config.likelihood, transition="none", pooling=self.config.pooling,
            order_parameters=self.order_parameters, threshold=self.config.threshold, below=self.config.below,
            priors=self.config.priors, parametrization=self.config.parametrization, measurement=self.config.measurement,
        )
        posterior, stats = _sample(null.build(), target_accept=0.95, **sample_kwargs)
        null_result = type(self)._from_samples(null, posterior, stats)
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
            # pseudo-BMA+ (Bayesian-bootstrap) weight of two models by hand: az.compare computes it over whole
            # fits, not over these per-order-parameter cell slices, and would not take our seed.
            w = rng.dirichlet(np.ones(n), size=n_bootstrap)
            boot = n * (w @ diff)
            p = float(np.mean(expit(boot)))
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
