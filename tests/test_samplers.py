"""The JAX samplers (numpyro, blackjax) give the same tau posterior as nutpie on the same data; errors name the fix."""

import sys

import numpy as np
import pytest

import phasebayes as pb
from phasebayes.errors import ModelSpecError
from phasebayes.models.sampling import resolve_sampler

FIT = dict(draws=400, tune=400, chains=2, random_seed=0, progressbar=False, warn=False)
TRUE_TAU = 450.0


@pytest.fixture(scope="module")
def run():
    ds, _ = pb.simulate_run(n_steps=12, n_prompts=3, n_samples=20, order_parameters=["a"], tau=TRUE_TAU,
                            width=40.0, seed=0)
    return ds


@pytest.fixture(scope="module")
def nutpie_fit(run):
    return pb.ChangePointModel(run).fit(sampler="nutpie", **FIT)


def _median_mcse(row) -> float:
    """Monte Carlo standard error of a posterior median: sqrt(pi/2) sd / sqrt(ESS) (normal approximation)."""
    return float(np.sqrt(np.pi / 2) * row["sd"] / np.sqrt(row["ess_bulk"]))


@pytest.mark.slow(ci=True)
@pytest.mark.parametrize("sampler", ["numpyro", "blackjax"])
def test_jax_sampler_agrees_with_nutpie(run, nutpie_fit, sampler):
    pytest.importorskip("jax")
    pytest.importorskip(sampler)
    res = pb.ChangePointModel(run).fit(sampler=sampler, **FIT)
    assert res.sample_stats.attrs["sampler"] == sampler
    assert {"diverging", "tree_depth", "n_steps", "energy", "lp"} <= set(res.sample_stats.data_vars)
    assert res.posterior["tau"].shape[:2] == (2, 400)  # (chain, draw): nothing dropped or reshaped wrong
    # another sampler really ran: nutpie with the same seed would reproduce its draws exactly
    assert not np.allclose(res.draws("tau"), nutpie_fit.draws("tau"))
    ref = nutpie_fit.transition_steps(ci_prob=0.95).loc["a"]
    row = res.transition_steps(ci_prob=0.95).loc["a"]
    for r in (ref, row):  # both recover the truth
        assert r["lower"] <= TRUE_TAU <= r["upper"], r.to_dict()
        assert r["r_hat"] < 1.05 and r["ess_bulk"] > 100, r.to_dict()
    # same posterior: medians within 4 combined MCSEs (plus 2 % of the sd for the MCSE's own noise), sds within 25 %
    tol = 4 * np.hypot(_median_mcse(ref), _median_mcse(row)) + 0.02 * ref["sd"]
    assert abs(row["median"] - ref["median"]) < tol, (row["median"], ref["median"], tol)
    assert 0.75 < row["sd"] / ref["sd"] < 1.25, (row["sd"], ref["sd"])
    # divergences are counted from the sampler's own statistic, and the diagnostics table works
    assert res.n_divergences == int(res.sample_stats["diverging"].values.sum())
    assert res.n_divergences <= 0.01 * 800
    diag = res.diagnostics()
    assert np.isfinite(diag.loc["tau[a]", "r_hat"]) and diag.attrs["divergences"] == res.n_divergences


def test_unknown_sampler_is_a_clear_error(run):
    with pytest.raises(ModelSpecError, match="sampler must be one of .*'numpyro'.*got 'stan'"):
        pb.ChangePointModel(run).fit(sampler="stan", draws=5, tune=5, chains=1, progressbar=False)


def test_missing_jax_sampler_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numpyro", None)  # import numpyro -> ImportError
    with pytest.raises(ModelSpecError, match=r"phasebayes\[jax\]"):
        resolve_sampler("numpyro")


def test_incompatible_blackjax_names_the_pin(monkeypatch):
    pytest.importorskip("jax")
    pytest.importorskip("blackjax")
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.7.1")
    with pytest.raises(ModelSpecError, match=r"blackjax < 1.6"):
        resolve_sampler("blackjax")


def test_auto_is_nutpie():
    pytest.importorskip("nutpie")
    assert resolve_sampler("auto") == "nutpie"
