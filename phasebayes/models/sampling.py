"""Running NUTS for the phasebayes models and reshaping draws (chain, draw) <-> (draw,)."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ModelSpecError

SAMPLERS = ("nutpie", "pymc", "numpyro")
"""NUTS implementations ``fit(sampler=...)`` accepts besides ``"auto"`` (nutpie when installed, else
``"pymc"``): nutpie (PyMC's model compiled to Rust), PyMC's own NUTS, and NumPyro's NUTS on the model
compiled to JAX (``pip install "phasebayes[jax]"``; runs on a GPU when JAX has one). BlackJAX is not
offered: PyMC 6.4 passes it a ``progress_bar`` argument that BlackJAX 1.7 no longer accepts."""


def _require_jax() -> None:
    """Raise a :class:`ModelSpecError` with the fix when JAX or NumPyro is missing."""
    try:
        import jax  # noqa: F401
        import numpyro  # noqa: F401
    except ImportError as err:
        raise ModelSpecError(
            f"sampler='numpyro' needs JAX and NumPyro ({err.name} is not installed): "
            'pip install "phasebayes[jax]", or use sampler="auto" (nutpie).'
        ) from None


def _sample(model, *, draws, tune, chains, cores, random_seed, sampler, target_accept, progressbar):
    """Run NUTS; return (posterior, sample_stats) as xarray Datasets with (chain, draw) dims."""
    import pymc as pm

    if sampler == "auto":
        try:
            import nutpie  # noqa: F401

            sampler = "nutpie"
        except ImportError:
            sampler = "pymc"
    if sampler not in SAMPLERS:
        raise ModelSpecError(f"sampler must be one of {', '.join(map(repr, ('auto', *SAMPLERS)))}, got {sampler!r}.")
    if sampler == "numpyro":
        _require_jax()
    cores = cores if cores is not None else max(1, min(chains, os.cpu_count() or 1))
    with model, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(mass matrix|adaptation|cores).*")
        kwargs: dict[str, Any] = dict(
            draws=draws, tune=tune, chains=chains, cores=cores, random_seed=random_seed,
            progressbar=progressbar, target_accept=target_accept, compute_convergence_checks=False,
        )
        kwargs["nuts_sampler"] = sampler  # explicit: PyMC 6 silently prefers nutpie when installed
        if sampler == "numpyro":
            # one CPU/GPU device: "vectorized" runs the chains as one batched JAX program, where
            # "parallel" (pmap) would fall back to running them one after another
            kwargs["nuts"] = {"chain_method": "vectorized"}
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
