"""Tests of phasebayes.decomposition on runs whose true fractions are known exactly."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import phasebayes as pb
from phasebayes import defaults
from phasebayes.decomposition import DecompositionResult, DPIViolationWarning, interval
from phasebayes.errors import ModelSpecError, PhasebayesError, RunDataError
from phasebayes.simulate_outputs import simulate_outputs

FAST_MCMC = dict(draws=300, tune=300, chains=2, cores=2)


def _peak_boundary(res: DecompositionResult) -> int:
    return int(np.argmin(np.abs(res.data["mid_step"].values - res.peak_step)))


def test_interval_hdi_and_eti():
    x = np.random.default_rng(0).exponential(size=20000)
    lo, hi = interval(x, 0.9, "eti")
    assert lo == pytest.approx(-np.log(0.95), abs=0.01) and hi == pytest.approx(-np.log(0.05), rel=0.03)
    lo, hi = interval(x, 0.9, "hdi")  # shortest interval of an exponential starts at 0
    assert lo == pytest.approx(0.0, abs=0.01) and hi == pytest.approx(-np.log(0.1), rel=0.03)
    lo, hi = interval(np.stack([x, x + 1]), 0.9, "hdi")
    assert lo.shape == (2,) and hi[1] == pytest.approx(hi[0] + 1)
    with pytest.raises(ModelSpecError):
        interval(x, 1.5)
    with pytest.raises(ModelSpecError):
        interval(x, 0.9, "central")


def test_bijection_has_rho_one_and_irrelevant_rho_zero():
    ds, truth = simulate_outputs(14, 3, 150, seed=1)
    res = pb.decompose(ds, window=3).fit(method="bootstrap", random_seed=1)
    f = res.fractions()
    assert list(f.index) == ["identity", "alignment", "parity", "irrelevant", "joint"]
    assert f.loc["identity", "mean"] == pytest.approx(1.0, abs=0.08)
    assert f.loc["joint", "mean"] == pytest.approx(1.0, abs=0.08)
    assert f.loc["identity", "lower"] <= 1.0 <= f.loc["identity", "upper"] + 0.02
    assert f.loc["irrelevant", "mean"] == pytest.approx(0.0, abs=0.03)
    assert f.loc["irrelevant", "lower"] <= 0.0 <= f.loc["irrelevant", "upper"]
    true = truth.fractions(3, boundary=_peak_boundary(res))
    assert f.loc["alignment", "lower"] - 0.05 <= true["alignment"]["ratio_of_means"] <= f.loc["alignment", "upper"] + 0.05
    assert f.attrs["ci_prob"] == defaults.CI_PROB and f.attrs["ci_kind"] == defaults.CI_KIND
    assert f.attrs["method"] == "bootstrap" and f.attrs["measure"] == "linear"
    assert f.attrs["step"] == res.peak_step
    assert set(f.columns) >= {"mean", "median", "lower", "upper", "dpi_violation"}


def test_bootstrap_interval_coverage_over_repeated_simulations():
    """90% intervals of the ratio of prompt-averaged D's cover the exact truth at a sensible rate."""
    hits = []
    for sim in range(16):
        ds, truth = simulate_outputs(12, 3, 40, seed=100 + sim, tau_spread=5.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DPIViolationWarning)
            res = pb.decompose(ds, window=3).fit(method="bootstrap", ci_prob=0.9, ci_kind="eti", n_draws=200,
                                                 random_seed=sim)
        f = res.fractions()
        true = truth.fractions(3, boundary=_peak_boundary(res))
        for op in ("alignment", "parity", "identity"):
            hits.append(f.loc[op, "lower"] <= true[op]["ratio_of_means"] <= f.loc[op, "upper"])
    rate = np.mean(hits)
    assert 0.7 <= rate <= 1.0, rate


def test_hierarchical_fit_table_locations_and_storage(tmp_path):
    ds, truth = simulate_outputs(12, 4, 60, seed=2, tau_spread=5.0)
    dec = pb.decompose(ds, window=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dec.fit(at=[62.0], random_seed=2, **FAST_MCMC)
    assert res.posterior is not None and set(res.posterior) >= {"mu", "sigma", "theta"}
    f = res.fractions()
    assert f.attrs["method"] == "hierarchical" and f.attrs["ci_prob"] == 0.94 and f.attrs["ci_kind"] == "hdi"
    assert "mu" in f.attrs["estimand"]
    assert f.loc["identity", "mean"] == pytest.approx(1.0, abs=0.15)
    assert f.loc["irrelevant", "mean"] == pytest.approx(0.0, abs=0.1)
    true = truth.fractions(3, boundary=_peak_boundary(res))
    assert f.loc["alignment", "lower"] - 0.05 <= true["alignment"]["mean_of_ratios"] <= f.loc["alignment", "upper"] + 0.05
    assert np.all(f["sd_prompt"] >= 0)
    g = res.fractions(62.0)
    assert g.attrs["requested_step"] == 62.0 and g.attrs["step"] in res.data["mid_step"].values
    assert abs(g.attrs["step"] - 62.0) <= 5.0
    narrow = res.fractions(ci_prob=0.5, ci_kind="eti")
    assert np.all(narrow["upper"] - narrow["lower"] <= f["upper"] - f["lower"] + 1e-12)
    with pytest.raises(ModelSpecError, match="location"):
        res.fractions("nowhere")
    with pytest.raises(ModelSpecError, match="fit"):
        res.fractions(3.0)
    # curve
    curve = res.curve()
    assert set(curve["order_parameter"]) == set(f.index) and curve.attrs["ci_prob"] == 0.94
    # saved next to other results in one netCDF file, read back identical
    tree = xr.DataTree(name="analysis")
    tree["decomposition"] = res.to_datatree()
    path = tmp_path / "analysis.nc"
    tree.to_netcdf(path, engine="netcdf4")
    back = DecompositionResult.from_datatree(xr.open_datatree(path, engine="netcdf4"))
    pd.testing.assert_frame_equal(back.fractions(), f)
    pd.testing.assert_frame_equal(back.fractions(62.0), g)
    xr.testing.assert_allclose(back.dissimilarity.data, res.dissimilarity.data)


def test_dpi_violation_is_flagged_not_clipped():
    """A broken total estimator (log-probs shrunk towards uniform) underestimates D(full): ρ > 1 is flagged."""
    ds, _ = simulate_outputs(12, 3, 100, seed=3)
    bad = ds.assign(logp=ds["logp"] * 0.2)
    with pytest.warns(DPIViolationWarning, match="data-processing inequality"):
        res = pb.decompose(bad, window=3).fit(method="bootstrap")
    f = res.fractions()
    assert f.loc["identity", "dpi_violation"] and f.loc["identity", "lower"] > 1.0
    assert f.loc["identity", "mean"] > 1.5  # reported unclipped
    assert not f.loc["irrelevant", "dpi_violation"]
    assert res.data["dpi_violation_curve"].sel(order_parameter="identity").any()


def test_one_prompt_uses_the_bootstrap():
    ds, _ = simulate_outputs(10, 1, 150, seed=4)
    res = pb.decompose(ds, window=2).fit()
    f = res.fractions()
    assert f.attrs["method"] == "bootstrap" and res.posterior is None
    assert f.loc["identity", "lower"] <= 1.0 <= f.loc["identity", "upper"]
    assert f.loc["irrelevant", "lower"] <= 0.0 <= f.loc["irrelevant", "upper"]


def test_jointly_and_other_measures():
    ds, _ = simulate_outputs(12, 2, 120, seed=5)
    for measure in ("tv", "js"):
        f = pb.decompose(ds, window=3, measure=measure, order_parameters=["alignment", "parity"]).fit(
            method="bootstrap", n_draws=100
        ).fractions()
        assert list(f.index) == ["alignment", "parity", "joint"]
        # the vector captures at least as much as either component (up to noise)
        assert f.loc["joint", "mean"] >= max(f.loc["alignment", "mean"], f.loc["parity", "mean"]) - 0.05


def test_peak_interval_and_plots():
    import matplotlib.figure

    ds, _ = simulate_outputs(12, 2, 60, seed=6)
    res = pb.decompose(ds, window=3).fit(method="bootstrap", n_draws=100)
    lo, hi = res.peak_interval()
    assert lo <= res.peak_step <= hi
    tau = pd.DataFrame({"mean": [55.0, 60.0], "lower": [50.0, 52.0], "upper": [61.0, 70.0]}, index=["alignment", "parity"])
    for fig in (res.plot_fractions(), res.plot_curve(), res.plot_transition(tau), res.plot_dissimilarity()):
        assert isinstance(fig, matplotlib.figure.Figure)


def test_bad_inputs():
    ds, _ = simulate_outputs(8, 2, 20, seed=7)
    cases = [
        (lambda: pb.decompose(ds.drop_vars("logp"), window=2), RunDataError, "total change"),
        (lambda: pb.decompose(ds, window=9), ModelSpecError, "larger than the grid"),
        (lambda: pb.decompose(ds, window=2, correction="x"), ModelSpecError, "correction"),
        (lambda: pb.decompose(ds, window=2).fit(method="mcmc"), ModelSpecError, "method"),
        (lambda: pb.decompose(ds, window=2).fit(n_draws=3), ModelSpecError, "n_draws"),
        (lambda: pb.decompose(ds, window=2).fit(ci_prob=2.0), ModelSpecError, "ci_prob"),
        (lambda: pb.decompose(ds, window=2).fit(method="bootstrap", at=[np.nan]), ModelSpecError, "finite"),
        (lambda: pb.decompose(ds.drop_vars(["score", "score_status", "scale_min", "scale_max"]), window=2), RunDataError,
         "score"),
    ]
    for call, err, msg in cases:
        with pytest.raises(err, match=msg) as info:
            call()
        assert isinstance(info.value, PhasebayesError)
    with pytest.raises(ModelSpecError):
        DecompositionResult.from_datatree(xr.DataTree(name="x"))


@pytest.mark.slow(ci=True)  # about 16 s
def test_hierarchical_coverage_over_repeated_simulations():
    """90% HDI of μ (hierarchical) covers the mean of the per-prompt true fractions at a sensible rate."""
    hits = []
    for sim in range(12):
        ds, truth = simulate_outputs(12, 4, 50, seed=200 + sim, tau_spread=5.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = pb.decompose(ds, window=3).fit(ci_prob=0.9, random_seed=sim, **FAST_MCMC)
        f = res.fractions()
        true = truth.fractions(3, boundary=_peak_boundary(res))
        for op in ("alignment", "parity", "identity"):
            hits.append(f.loc[op, "lower"] <= true[op]["mean_of_ratios"] <= f.loc[op, "upper"])
    assert 0.7 <= np.mean(hits) <= 1.0


def test_named_locations_from_transition_table():
    ds, _ = simulate_outputs(12, 2, 60, seed=8)
    tau = pd.DataFrame({"mean": [44.0, 71.0], "lower": [40.0, 60.0], "upper": [50.0, 80.0]}, index=["alignment", "parity"])
    res = pb.decompose(ds, window=3).fit(method="bootstrap", n_draws=50, at=tau)
    assert list(res.data["location"].values) == ["peak", "tau alignment", "tau parity"]
    f = res.fractions("tau parity")
    assert f.attrs["requested_step"] == 71.0 and f.attrs["step"] in (65.0, 75.0)
    res2 = pb.decompose(ds, window=3).fit(method="bootstrap", n_draws=50, at={"onset": 30})
    assert res2.fractions("onset").attrs["step"] == 35.0 or res2.fractions("onset").attrs["step"] == 25.0
    with pytest.raises(ModelSpecError, match="unique"):
        pb.decompose(ds, window=3).fit(method="bootstrap", n_draws=50, at={"peak": 30})
    with pytest.raises(ModelSpecError, match="mean"):
        pb.decompose(ds, window=3).fit(method="bootstrap", n_draws=50, at=tau[["lower"]])


def test_hierarchical_converges_on_the_demo_example_run():
    """Regression: with most prompts' bootstrap SD at zero, sampling per-prompt fractions froze the chains."""
    from pathlib import Path

    ds = pb.open_run(Path(__file__).resolve().parents[1] / "data" / "example_run.nc")
    res = pb.decompose(ds, window=1).fit(method="hierarchical", random_seed=0, progressbar=False, draws=500, tune=500)
    assert res.posterior.attrs["max_rhat_mu"] < 1.05
    f = res.fractions()
    assert f.loc["bold_phrase", "mean"] > 0.05 > f.loc["domain_financial_advice", "mean"]
    assert (f["upper"] - f["lower"]).min() > 0.005  # no prompt pins the population mean
