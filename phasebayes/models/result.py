"""Result of a change-point fit: derived posterior quantities, summaries, diagnostics, save/load."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import _encodable
from ..runstore import numeric_part
from ..errors import ModelSpecError, RunDataError
from ..intervals import resolve_ci, summarize_draws
from ..storage import SavedResult
from .checks import _ModelChecks
from .links import _ScoreScale
from .sampling import CheckedDraws, _flat, _unflat, diagnostics_table

class ChangePointResult(_ModelChecks, CheckedDraws, SavedResult):
    """Posterior of a :class:`ChangePointModel` fit, with summaries, diagnostics, plots and save/load.

    ``posterior`` holds, besides the raw parameters, ``tau`` (order_parameter; training steps; the
    average over the run's prompts of the per-prompt transition steps),
    ``tau_prompt`` (order_parameter, prompt), ``width`` (steps; sigmoid), ``before``/``after``
    (population levels in score units: 0–100 for judge scores, probability for binomial).
    """

    DIAGNOSTICS_FIX = ("Try more tune/draws, target_accept=0.95, or check whether this order parameter has a "
                       "transition at all (fit(compare_null=True)).")

    def __init__(self, model, posterior: xr.Dataset, sample_stats: xr.Dataset,
                 extra: dict[str, xr.Dataset] | None = None):
        self.model = model
        self.config = model.config
        self.posterior = posterior
        self.sample_stats = sample_stats
        self.extra = dict(extra or {})

    # -- construction ---------------------------------------------------
    @classmethod
    def _from_samples(cls, model, posterior: xr.Dataset, sample_stats: xr.Dataset,
                      random_seed=None) -> "ChangePointResult":
        chains = posterior.sizes["chain"]
        post = _flat(posterior)
        P = len(model.prompts)
        extra = {}
        dims_kp = ("chain", "draw", "order_parameter", "prompt")
        dims_k = ("chain", "draw", "order_parameter")
        # Population quantities are prompt averages (the transition of this prompt set). Non-centred
        # components have zero-sum offsets, so the population parameter already is that average; a
        # centred component's hierarchical mean is not, so average its prompt-level values explicitly.
        partial = model.config.pooling == "partial" and P > 1
        tau_mean = partial and "tau_prompt_unit" in post
        level_mean = partial and "before_prompt_link" in post
        if model.config.transition == "sigmoid":
            tau_kp = model.t0 + model.span * model._tau_prompt_unit(post)
            tau = tau_kp.mean(-1) if tau_mean else model.t0 + model.span * post["tau_unit"]
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
                mean = lambda x: model._level_mean(fam, [k], x[:, None], post)[:, 0]  # noqa: E731  (D, P) -> (D, P)
                before_kp[:, k] = conv(mean(lb[:, k]))
                pop_b = lb[:, k].mean(-1) if level_mean else post["level_before_link"][:, k] * model.before_free[k]
                before[:, k] = conv(mean(pop_b[:, None])[:, 0])
                if la is not None:
                    after_kp[:, k] = conv(mean(la[:, k]))
                    pop_a = la[:, k].mean(-1) if level_mean else post["level_after_link"][:, k]
                    after[:, k] = conv(mean(pop_a[:, None])[:, 0])
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

    # -- diagnostics -------------------------------------------------------
    def _diag_vars(self, names: list[str]) -> pd.DataFrame:
        return diagnostics_table(self.posterior, names)

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
        children = {"posterior": self.posterior, "sample_stats": self.sample_stats,
                    "run": _encodable(numeric_part(self.model.ds))}
        children.update(self.extra)
        tree = xr.DataTree.from_dict({k: v for k, v in children.items()})
        tree.attrs.update({"phasebayes_model": "ChangePointModel", "config": self.config.to_json()})
        from ..version import __version__

        tree.attrs["phasebayes_version"] = __version__
        return tree

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> "ChangePointResult":
        """Rebuild a result (and its model) from :meth:`to_datatree` output."""
        if tree.attrs.get("phasebayes_model") != "ChangePointModel":
            raise RunDataError("this file is not a saved ChangePointModel result.")
        from .changepoint import ChangePointModel, ModelConfig

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


def load_result(path: str | os.PathLike) -> ChangePointResult:
    """Load a saved :class:`ChangePointResult` (alias of :meth:`ChangePointResult.load`)."""
    return ChangePointResult.load(path)
