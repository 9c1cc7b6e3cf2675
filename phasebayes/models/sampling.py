"""Running NUTS for the phasebayes models and reshaping draws (chain, draw) <-> (draw,)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ModelSpecError

SAMPLERS = ("auto", "nutpie", "pymc", "numpyro", "blackjax")
"""Accepted ``sampler=`` values: ``auto`` (nutpie when installed, else ``pymc``), nutpie (Rust NUTS),
``pymc`` (PyMC's own NUTS, ``cores`` processes) and the JAX-based ``numpyro`` and ``blackjax``
(optional extra ``phasebayes[jax]``)."""

_JAX_FIX = 'install the JAX samplers with: pip install "phasebayes[jax]"'


def _check_jax_sampler(sampler: str) -> None:
    """Raise :class:`ModelSpecError` with the fix when a JAX sampler's packages are missing or incompatible."""
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    for module in ("jax", sampler):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ModelSpecError(f"sampler={sampler!r} needs the package {module!r} ({err}); {_JAX_FIX}.") from None
    if sampler == "blackjax":
        try:
            major, minor = (int(x) for x in version("blackjax").split(".")[:2])
        except (PackageNotFoundError, ValueError):
            return
        if (major, minor) >= (1, 6):  # PyMC 6 passes progress_bar to window_adaptation, removed in blackjax 1.6
            raise ModelSpecError(f"sampler='blackjax' needs blackjax < 1.6 with PyMC 6 (installed: "
                                 f"{version('blackjax')}); {_JAX_FIX} (it pins blackjax>=1.2,<1.6).")


def resolve_sampler(sampler: str) -> str:
    """The sampler a fit will use: ``auto`` -> ``nutpie`` (or ``pymc`` without nutpie); checks the name
    and, for ``numpyro`` / ``blackjax``, that JAX and the sampler are installed."""
    if sampler not in SAMPLERS:
        raise ModelSpecError(f"sampler must be one of {', '.join(repr(s) for s in SAMPLERS)}, got {sampler!r}.")
    if sampler == "auto":
        try:
            import nutpie  # noqa: F401

            return "nutpie"
        except ImportError:
            return "pymc"
    if sampler in ("numpyro", "blackjax"):
        _check_jax_sampler(sampler)
    return sampler


def _sample(model, *, draws, tune, chains, cores, random_seed, sampler, target_accept, progressbar):
    """Run NUTS; return (posterior, sample_stats) as xarray Datasets with (chain, draw) dims.

    ``sample_stats`` keeps ``diverging``, ``tree_depth``, ``n_steps``, ``energy``, ``step_size`` and ``lp``
    where the sampler reports them (blackjax has no ``step_size``); its ``attrs["sampler"]`` names the
    sampler used."""
    import pymc as pm

    sampler = resolve_sampler(sampler)
    cores = cores if cores is not None else max(1, min(chains, os.cpu_count() or 1))
    with model, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(mass matrix|adaptation|cores|devices).*")
        kwargs: dict[str, Any] = dict(
            draws=draws, tune=tune, chains=chains, cores=cores, random_seed=random_seed,
            progressbar=progressbar, target_accept=target_accept, compute_convergence_checks=False,
        )
        kwargs["nuts_sampler"] = sampler  # explicit: PyMC 6 silently prefers nutpie when installed
        if sampler in ("numpyro", "blackjax"):
            # the chains as one batched (vmap) JAX program: PyMC's default "parallel" (pmap) failed for
            # blackjax under jax 0.12 on the benchmark's base model (a squeeze error inside pmap)
            kwargs["nuts"] = {"chain_method": "vectorized"}
        idata = pm.sample(**kwargs)
    posterior = idata["posterior"].to_dataset() if hasattr(idata["posterior"], "to_dataset") else idata["posterior"]
    stats = idata["sample_stats"].to_dataset() if hasattr(idata["sample_stats"], "to_dataset") else idata["sample_stats"]
    stats = stats.rename({old: new for old, new in _STAT_ALIASES.items() if old in stats and new not in stats})
    keep = [v for v in ("diverging", "tree_depth", "n_steps", "energy", "step_size", "lp") if v in stats]
    stats = stats[keep]
    if "diverging" in stats:
        stats["diverging"] = stats["diverging"].astype(bool)
    posterior.attrs = {}
    stats.attrs = {"sampler": sampler}
    return posterior, stats


# raw blackjax/numpyro names of the statistics phasebayes reads; PyMC 6 already maps its JAX samplers'
# output to the ArviZ names (checked: numpyro 0.22, blackjax 1.5), so these only guard a renamed statistic
_STAT_ALIASES = {"is_divergent": "diverging", "num_integration_steps": "n_steps",
                 "num_trajectory_expansions": "tree_depth", "logdensity": "lp"}


def _flat(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """Posterior variables as arrays with a single leading draw axis."""
    out = {}
    for name, var in ds.data_vars.items():
        arr = var.values
        out[name] = arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])
    return out


def _unflat(arr: np.ndarray, chains: int) -> np.ndarray:
    return arr.reshape(chains, arr.shape[0] // chains, *arr.shape[1:])


def diagnostic_problems(table, n_divergences: int) -> list[str]:
    """Problems in a diagnostics table (``r_hat``, ``ess_bulk``, ``ess_tail`` per quantity): R-hat above
    :data:`~phasebayes.defaults.RHAT_MAX`, ESS below :data:`~phasebayes.defaults.ESS_MIN`, divergences."""
    from .. import defaults

    problems = []
    bad = table[table["r_hat"] > defaults.RHAT_MAX]
    if len(bad):
        problems.append(f"R-hat > {defaults.RHAT_MAX} for {list(bad.index)} (max {bad['r_hat'].max():.3f})")
    low = table[(table["ess_bulk"] < defaults.ESS_MIN) | (table["ess_tail"] < defaults.ESS_MIN)]
    if len(low):
        problems.append(f"ESS < {defaults.ESS_MIN:g} for {list(low.index)}")
    if n_divergences:
        problems.append(f"{n_divergences} divergent transitions")
    return problems


def diagnostics_table(posterior: xr.Dataset, names: list[str]) -> "pd.DataFrame":
    """R-hat, bulk ESS and tail ESS (5 % tails) per scalar of the ``names`` in ``posterior`` (ArviZ's
    rank-normalised split R-hat and ESS); rows ``name`` or ``name[coord, ...]``. Quantities that never
    move (a fixed value) get NaN. Names missing from ``posterior`` are skipped."""
    import arviz as az
    import pandas as pd

    rows = {}
    for name in names:
        if name not in posterior:
            continue
        var = posterior[name]
        extra_dims = [d for d in var.dims if d not in ("chain", "draw")]
        stacked = var.stack(_flat_=extra_dims) if extra_dims else var.expand_dims(_flat_=[0])
        for i in range(stacked.sizes["_flat_"]):
            x = stacked.isel(_flat_=i).transpose("chain", "draw").values
            label = name
            if extra_dims:
                key = stacked["_flat_"].values[i]
                label = f"{name}[{', '.join(str(k) for k in (key if isinstance(key, tuple) else (key,)))}]"
            if np.ptp(x) == 0:
                rows[label] = {"r_hat": np.nan, "ess_bulk": np.nan, "ess_tail": np.nan}
                continue
            rows[label] = {"r_hat": float(az.rhat(x)), "ess_bulk": float(az.ess(x, method="bulk")),
                           "ess_tail": float(az.ess(x, method="tail", prob=0.05))}
    return pd.DataFrame.from_dict(rows, orient="index")


def count_divergences(sample_stats: xr.Dataset) -> int:
    """Number of divergent transitions in ``sample_stats`` (0 when the sampler does not record them)."""
    return int(sample_stats["diverging"].values.sum()) if "diverging" in sample_stats else 0


class CheckedDraws:
    """The one diagnostics check of fitted results (mixin): needs ``sample_stats`` and ``diagnostics()``
    (a :func:`diagnostics_table`); ``DIAGNOSTICS_FIX`` says what to try when the check fails."""

    DIAGNOSTICS_FIX = "Try more tune/draws or target_accept=0.99."

    @property
    def n_divergences(self) -> int:
        """Divergent transitions over all chains."""
        return count_divergences(self.sample_stats)

    def check_diagnostics(self, warn: bool = True) -> list[str]:
        """The diagnostic problems (R-hat, ESS, divergences; thresholds in :mod:`phasebayes.defaults`);
        warns loudly (:class:`~phasebayes.errors.DiagnosticsWarning`) if there are any and ``warn``."""
        from ..errors import DiagnosticsWarning

        problems = diagnostic_problems(self.diagnostics(), self.n_divergences)
        if problems and warn:
            warnings.warn("MCMC diagnostics are bad — do not trust these intervals yet: " + "; ".join(problems)
                          + ". " + self.DIAGNOSTICS_FIX, DiagnosticsWarning, stacklevel=3)
        return problems
