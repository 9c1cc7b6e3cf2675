"""Result of a multi-run change-point fit: population, per-run and seed-to-seed transition steps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import _encodable
from ..errors import RunDataError
from ..intervals import summarize_draws
from ..storage import SavedResult
from .links import _inv_link, _ScoreScale
from .sampling import CheckedDraws, _flat, _unflat, diagnostics_table

__all__ = ["MultiRunResult"]


class MultiRunResult(CheckedDraws, SavedResult):
    """Posterior of a :class:`~phasebayes.models.multirun.MultiRunChangePointModel`.

    ``posterior`` holds, besides the raw parameters (all in training steps / score units):
    ``tau`` (order_parameter; population transition step), ``tau_run`` (order_parameter, run),
    ``seed_sd`` (order_parameter; sd of the transition step across runs, a population parameter),
    ``tau_run_sd`` (sd of the fitted runs' tau around their mean), ``width``, ``before``/``after``
    (population levels) and ``before_run``/``after_run``.
    """

    def __init__(self, model, posterior: xr.Dataset, sample_stats: xr.Dataset):
        self.model = model
        self.posterior = posterior
        self.sample_stats = sample_stats

    @classmethod
    def from_samples(cls, model, posterior: xr.Dataset, sample_stats: xr.Dataset) -> "MultiRunResult":
        chains = posterior.sizes["chain"]
        post = _flat(posterior)
        t0, span = model.t0, model.span
        k_dims, kr_dims = ("chain", "draw", "order_parameter"), ("chain", "draw", "order_parameter", "run")
        tau_run_u = post["tau_unit"][:, :, None] + post["sigma_run_tau_unit"][:, :, None] * post["z_run_tau"]
        tau_run = t0 + span * tau_run_u
        derived = {
            "tau": (k_dims, t0 + span * post["tau_unit"]),
            "tau_run": (kr_dims, tau_run),
            "seed_sd": (k_dims, span * post["sigma_run_tau_unit"]),
            "tau_run_sd": (k_dims, tau_run.std(-1, ddof=1)),
            "width": (k_dims, span * post["width_unit"]),
        }
        for name in ("before", "after"):
            pop = post[f"level_{name}_link"]
            run = pop[:, :, None] + post[f"sigma_run_{name}_link"][:, :, None] * post[f"z_run_{name}"]
            pop_s, run_s = np.empty_like(pop), np.empty_like(run)
            for fam, ix in model.groups.items():
                for k in ix:
                    conv = _ScoreScale(model, k)
                    pop_s[:, k] = conv(_inv_link(fam, pop[:, k]))
                    run_s[:, k] = conv(_inv_link(fam, run[:, k]))
            derived[name] = (k_dims, pop_s)
            derived[f"{name}_run"] = (kr_dims, run_s)
        for name, (dims, arr) in derived.items():
            posterior[name] = (dims, _unflat(arr, chains))
        posterior = posterior.assign_coords(order_parameter=model.order_parameters, run=model.run_names)
        return cls(model, posterior, sample_stats)

    # -- summaries ---------------------------------------------------------
    @property
    def order_parameters(self) -> list[str]:
        return list(self.model.order_parameters)

    @property
    def runs(self) -> list[str]:
        return list(self.model.run_names)

    def draws(self, name: str) -> np.ndarray:
        """Flattened draws of a posterior variable: ``(chains × draws, ...)``."""
        return _flat(self.posterior[[name]])[name]

    def _table(self, name, ci_prob, ci_kind, units="training steps") -> pd.DataFrame:
        d = self.draws(name)
        if d.ndim == 2:
            table = summarize_draws({op: d[:, k] for k, op in enumerate(self.order_parameters)},
                                    ci_prob=ci_prob, ci_kind=ci_kind, units=units)
        else:
            table = summarize_draws({(op, r): d[:, k, j] for k, op in enumerate(self.order_parameters)
                                     for j, r in enumerate(self.runs)}, ci_prob=ci_prob, ci_kind=ci_kind, units=units)
            table.index = pd.MultiIndex.from_tuples(table.index, names=["order_parameter", "run"])
        diag = diagnostics_table(self.posterior, [name])
        table["r_hat"] = diag["r_hat"].values
        table["ess_bulk"] = diag["ess_bulk"].values
        return table

    def transition_steps(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Population tau per order parameter (training steps): the mean transition step across runs."""
        return self._table("tau", ci_prob, ci_kind)

    def run_transition_steps(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Tau of each run (training steps), indexed by (order_parameter, run)."""
        return self._table("tau_run", ci_prob, ci_kind)

    def seed_spread(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Seed-to-seed spread of tau (training steps), rows (order_parameter, quantity).

        ``seed_sd``: sd of the transition step across runs of the population (what a new seed would
        scatter by); ``tau_run_sd``: sd of the fitted runs' tau (this set of runs).
        """
        rows = {(op, q): self.draws(q)[:, k] for q in ("seed_sd", "tau_run_sd") for k, op in enumerate(self.order_parameters)}
        table = summarize_draws(rows, ci_prob=ci_prob, ci_kind=ci_kind, units="training steps")
        table.index = pd.MultiIndex.from_tuples(table.index, names=["order_parameter", "quantity"])
        return table.sort_index()

    def levels(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Population levels before/after (score units) and width (steps), rows (order_parameter, quantity)."""
        rows = {(op, q): self.draws(q)[:, k] for q in ("before", "after", "width") for k, op in enumerate(self.order_parameters)}
        table = summarize_draws(rows, ci_prob=ci_prob, ci_kind=ci_kind)
        table.index = pd.MultiIndex.from_tuples(table.index, names=["order_parameter", "quantity"])
        return table

    def compare_to_peaks(self, peaks=None, ci_prob: float | None = None, ci_kind: str | None = None, seed: int = 0,
                         **fit_kwargs) -> pd.DataFrame:
        """Lag of each run's tau to its own gradient-norm peak, rows (order_parameter, run).

        ``peaks`` maps run name -> :class:`~phasebayes.GradientPeakResult` (or peak draws); runs without
        one get ``GradientPeak(run_ds).fit(**fit_kwargs)``. Columns as in ``compare_to``: lag summary,
        ``p_later`` = P(tau_run > peak) and ``peak_median``.
        """
        from .gradient_peak import GradientPeak

        peaks = dict(peaks or {})
        rng = np.random.default_rng(seed)
        tau = self.draws("tau_run")
        lags, p_later, peak_med = {}, {}, {}
        for j, run in enumerate(self.runs):
            pk = peaks.get(run)
            if pk is None:
                pk = GradientPeak(self.model.runs[run]).fit(**{"progressbar": False, **fit_kwargs})
            pd_ = np.asarray(pk.peak_draws() if hasattr(pk, "peak_draws") else pk, dtype=float).ravel()
            draw = rng.choice(pd_, size=tau.shape[0], replace=tau.shape[0] > pd_.size)
            for k, op in enumerate(self.order_parameters):
                lags[(op, run)] = tau[:, k, j] - draw
                p_later[(op, run)] = float(np.mean(lags[(op, run)] > 0))
                peak_med[(op, run)] = float(np.median(pd_))
        table = summarize_draws(lags, ci_prob=ci_prob, ci_kind=ci_kind, units="training steps")
        table.index = pd.MultiIndex.from_tuples(table.index, names=["order_parameter", "run"])
        table = table.rename(columns={c: f"lag_{c}" for c in table.columns})
        table["p_later"] = [p_later[i] for i in table.index]
        table["peak_median"] = [peak_med[i] for i in table.index]
        table.attrs["meaning"] = "lag = tau of the run - its gradient peak; p_later = P(tau > peak)"
        return table

    # -- diagnostics -------------------------------------------------------
    def diagnostics(self) -> pd.DataFrame:
        """R-hat, bulk and tail ESS of every reported quantity; ``attrs['divergences']``."""
        names = ["tau", "tau_run", "seed_sd", "width", "before", "after", "before_run", "after_run"]
        names += [n for n in ("concentration", "noise_sd", "dispersion") if n in self.posterior]
        table = diagnostics_table(self.posterior, names)
        table.attrs["divergences"] = self.n_divergences
        return table

    # -- persistence --------------------------------------------------------
    def to_datatree(self) -> xr.DataTree:
        """Runs, posterior and config in one DataTree (groups: posterior, sample_stats, run_0, run_1, ...)."""
        children = {"posterior": self.posterior, "sample_stats": self.sample_stats}
        children.update({f"run_{i}": _encodable(d) for i, d in enumerate(self.model.runs.values())})
        tree = xr.DataTree.from_dict(children)
        tree.attrs.update({"phasebayes_model": "MultiRunChangePointModel", "runs": json.dumps(self.runs),
                           "config": json.dumps(self.model.config_dict())})
        return tree

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> "MultiRunResult":
        """Rebuild a result (and its model) from :meth:`to_datatree` output."""
        from .multirun import MultiRunChangePointModel

        if tree.attrs.get("phasebayes_model") != "MultiRunChangePointModel":
            raise RunDataError("this file is not a saved multi-run change-point result.")
        names = json.loads(tree.attrs["runs"])
        runs = {}
        for i, name in enumerate(names):
            d = tree[f"run_{i}"].to_dataset()
            for c in ("order_parameter", "prompt"):
                d = d.assign_coords({c: d[c].values.astype(object)})
            for v in list(d.data_vars):
                if d[v].dtype.kind == "U":
                    d[v] = d[v].astype(object)
            runs[name] = d
        model = MultiRunChangePointModel(runs, **json.loads(tree.attrs["config"]))
        posterior = tree["posterior"].to_dataset().assign_coords(order_parameter=model.order_parameters, run=names)
        return cls(model, posterior, tree["sample_stats"].to_dataset())
