"""GradientPeak: recovers a known peak, ignores spikes, feeds compare_to."""

import warnings

import numpy as np
import pandas as pd
import pytest

import phasebayes as pb

FAST = dict(draws=300, tune=400, chains=2, progressbar=False)


def test_recovers_known_peak_despite_spikes():
    ds, truth = pb.simulate_run(n_steps=8, n_prompts=2, n_samples=3, grad_peak=420.0, n_grad_spikes=3, seed=21)
    res = pb.GradientPeak(ds).fit(random_seed=0, **FAST)
    row = res.summary(ci_prob=0.94).iloc[0]
    assert row["lower"] <= 420.0 <= row["upper"]
    assert abs(row["median"] - 420.0) < 15
    assert row["r_hat"] < 1.02
    assert res.summary().attrs["ci_kind"] == "hdi"


def test_not_fooled_by_a_single_huge_spike():
    rng = np.random.default_rng(5)
    steps = np.arange(1, 601)
    trace = 1.0 + 2.0 * np.exp(-0.5 * ((steps - 200) / 30.0) ** 2)
    trace = trace * np.exp(rng.normal(0, 0.1, steps.size))
    trace[449] = 40.0  # a single spike, 13x the bump's height, at step 450
    assert steps[np.argmax(trace)] == 450  # the naive argmax is fooled
    res = pb.GradientPeak(pd.Series(trace, index=steps)).fit(random_seed=1, **FAST)
    row = res.summary().iloc[0]
    assert row["lower"] <= 200 <= row["upper"]
    assert row["upper"] < 300


def test_compare_to_gradient_peak_gives_lag():
    ds, truth = pb.simulate_run(n_steps=12, n_prompts=2, n_samples=10, order_parameters=["a"], tau=600.0,
                                grad_peak=300.0, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pb.ChangePointModel(ds).fit(random_seed=0, **FAST)
    peak = pb.GradientPeak(ds).fit(random_seed=0, **FAST)
    table = res.compare_to(peak)
    assert table.loc["a", "p_later"] > 0.99
    assert 250 < table.loc["a", "lag_median"] < 350
    assert table.loc["a", "lag_lower"] < table.loc["a", "lag_median"] < table.loc["a", "lag_upper"]
    assert table.attrs["ci_prob"] == 0.94


def test_peak_errors_and_roundtrip(tmp_path):
    ds, _ = pb.simulate_run(n_steps=5, n_prompts=1, n_samples=2, seed=0)
    with pytest.raises(pb.RunDataError, match="available"):
        pb.GradientPeak(ds, signal="lora_norm")
    with pytest.raises(pb.RunDataError, match="training log"):
        pb.GradientPeak(ds.drop_dims("train_step"))
    res = pb.GradientPeak(ds, signal="loss").fit(random_seed=0, draws=100, tune=100, chains=2, progressbar=False, warn=False)
    path = res.save(tmp_path / "peak.nc")
    back = pb.GradientPeakResult.load(path)
    np.testing.assert_array_equal(back.peak_draws(), res.peak_draws())
    fig = back.plot()
    assert fig.axes
