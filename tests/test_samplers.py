"""The NUTS implementations behind ``fit(sampler=...)`` give the same posterior on the same model."""

import sys

import numpy as np
import pytest

import phasebayes as pb
from phasebayes.models.changepoint import ChangePointModel

pytest.importorskip("numpyro")


@pytest.fixture(scope="module")
def run():
    ds, truth = pb.simulate_run(n_steps=15, n_prompts=4, n_samples=10, order_parameters=["a"], tau=400.0,
                                width=60.0, seed=1)
    return ds, truth


@pytest.mark.slow(ci=True)  # two small fits; the JAX compile is most of the ~40 s
def test_numpyro_matches_nutpie(run):
    ds, truth = run
    fits = {s: ChangePointModel(ds).fit(draws=500, tune=500, chains=2, random_seed=3, sampler=s,
                                        progressbar=False, warn=False) for s in ("nutpie", "numpyro")}
    assert fits["numpyro"].sample_stats.attrs["sampler"] == "numpyro"
    tau = {s: f.transition_steps(ci_prob=0.94).loc["a"] for s, f in fits.items()}
    draws = {s: np.asarray(f.posterior["tau"]).ravel() for s, f in fits.items()}
    sd = max(d.std() for d in draws.values())
    # two independent chains of 1,000 draws each: medians agree within a few Monte Carlo errors
    assert abs(tau["nutpie"]["median"] - tau["numpyro"]["median"]) < 0.5 * sd, tau
    assert abs(draws["nutpie"].std() / draws["numpyro"].std() - 1) < 0.35
    for s in fits:
        assert tau[s]["lower"] <= 400.0 <= tau[s]["upper"], (s, tau[s])
        d = fits[s].diagnostics()
        assert d["r_hat"].max() < 1.05, (s, d)
        assert int(np.asarray(fits[s].sample_stats["diverging"]).sum()) == 0


def test_sampler_errors(run, monkeypatch):
    ds, _ = run
    with pytest.raises(pb.PhasebayesError, match="sampler must be one of"):
        ChangePointModel(ds).fit(draws=10, tune=10, chains=1, sampler="stan", progressbar=False)
    monkeypatch.setitem(sys.modules, "numpyro", None)  # as if NumPyro were not installed
    with pytest.raises(pb.PhasebayesError, match=r'pip install "phasebayes\[jax\]"'):
        ChangePointModel(ds).fit(draws=10, tune=10, chains=1, sampler="numpyro", progressbar=False)
