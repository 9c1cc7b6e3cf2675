"""from_counts / from_summaries: same posterior as the expanded per-answer data, clear errors otherwise."""

import numpy as np
import pandas as pd
import pytest

import phasebayes as pb
from phasebayes.errors import ModelSpecError, PhasebayesError, RunDataError
from phasebayes.models.aggregated import require_per_answer


def _binary_run(seed=0):
    ds, truth = pb.simulate_run(n_steps=12, n_prompts=3, n_samples=30, order_parameters=["misaligned"],
                                likelihood="binomial", tau=500.0, levels=(0.1, 0.6), missing_fraction=0.1, seed=seed)
    return ds, truth


def _tidy(ds):
    df = ds["score"].to_dataframe().reset_index().dropna(subset=["score"])
    return df[["step", "prompt", "sample", "order_parameter", "score"]]


def _logp_at_random_points(model_a, model_b, n=5):
    ma, mb = model_a.build(), model_b.build()
    fa, fb = ma.compile_logp(), mb.compile_logp()
    ip = ma.initial_point()
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        pt = {k: v + rng.normal(0, 0.3, size=np.shape(v)) for k, v in ip.items()}
        out.append((float(fa(pt)), float(fb(pt))))
    return np.array(out)


def test_counts_same_model_as_expanded_answers():
    ds, _ = _binary_run()
    tidy = _tidy(ds)
    counts = tidy.groupby(["step", "prompt", "order_parameter"])["score"].agg(k="sum", n="count").reset_index()
    agg = pb.from_counts(counts)
    assert agg.attrs["aggregated"] == "counts" and agg.sizes["sample"] == 1
    full = pb.from_dataframe(tidy, scales={"misaligned": (0, 1)})
    a, b = pb.ChangePointModel(full, likelihood="binomial"), pb.ChangePointModel(agg)
    assert a.config.likelihood == b.config.likelihood == {"misaligned": "binomial"}
    np.testing.assert_allclose(a.data_mean, b.data_mean, rtol=1e-12)
    np.testing.assert_allclose(a.data_sd, b.data_sd, rtol=1e-12)
    assert a.centered_levels == b.centered_levels and a.centered_tau == b.centered_tau
    lp = _logp_at_random_points(a, b)
    np.testing.assert_allclose(lp[:, 0], lp[:, 1], rtol=1e-10)  # the same joint density everywhere


def test_summaries_same_model_as_expanded_scores():
    ds, _ = pb.simulate_run(n_steps=10, n_prompts=2, n_samples=15, order_parameters=["alignment"], likelihood="normal",
                            tau=400.0, levels=(0.0, 2.0), noise_sd=1.0, seed=3)
    tidy = _tidy(ds)
    summ = tidy.groupby(["step", "prompt", "order_parameter"])["score"].agg(mean="mean", sd="std", n="count").reset_index()
    agg = pb.from_summaries(summ, scales={"alignment": None})
    full = pb.from_dataframe(tidy, scales={"alignment": None})
    a, b = pb.ChangePointModel(full, likelihood="normal"), pb.ChangePointModel(agg)
    np.testing.assert_allclose(a.data_sd, b.data_sd, rtol=1e-10)
    for fam in a.stats:
        np.testing.assert_allclose(a.stats[fam].s2, b.stats[fam].s2, rtol=1e-10)
    lp = _logp_at_random_points(a, b)
    np.testing.assert_allclose(lp[:, 0], lp[:, 1], rtol=1e-9)


@pytest.mark.slow  # the log densities are identical (tests above, in CI), so the posteriors are too
def test_counts_posterior_matches_expanded_within_mcmc_error():
    ds, truth = _binary_run(seed=5)
    tidy = _tidy(ds)
    counts = tidy.groupby(["step", "prompt", "order_parameter"])["score"].agg(k="sum", n="count").reset_index()
    kw = dict(draws=400, tune=400, chains=2, cores=1, random_seed=2, progressbar=False, warn=False)
    ra = pb.ChangePointModel(pb.from_dataframe(tidy, scales={"misaligned": (0, 1)}), likelihood="binomial").fit(**kw)
    rb = pb.ChangePointModel(pb.from_counts(counts)).fit(**kw)
    ta, tb = ra.transition_steps().loc["misaligned"], rb.transition_steps().loc["misaligned"]
    se = np.hypot(ta["sd"], tb["sd"]) / np.sqrt(min(ra.diagnostics()["ess_bulk"].min(), rb.diagnostics()["ess_bulk"].min()))
    assert abs(ta["mean"] - tb["mean"]) < 4 * se * np.sqrt(2) + 1e-9
    assert abs(ta["sd"] - tb["sd"]) < 0.25 * ta["sd"]
    true_tau = float(truth.tau["misaligned"])
    assert ta["lower"] <= true_tau <= ta["upper"] or tb["lower"] <= true_tau <= tb["upper"]


def test_aggregated_errors():
    counts = pd.DataFrame({"step": [0, 10, 20, 30], "k": [1, 2, 30, 35], "n": [50, 50, 50, 50]})
    ds = pb.from_counts(counts)  # one aggregate per checkpoint: prompt 'all', order parameter 'score'
    assert list(ds["prompt"].values) == ["all"] and float(ds["score"].sel(step=20).item()) == pytest.approx(0.6)
    with pytest.raises(ModelSpecError, match=r"support only \['binomial'\]"):
        pb.ChangePointModel(ds, likelihood="beta")
    with pytest.raises(ModelSpecError, match="threshold"):
        pb.ChangePointModel(ds, threshold=0.5)
    with pytest.raises(RunDataError, match="per-answer"):
        require_per_answer(ds, "the decomposition")
    with pytest.raises(PhasebayesError, match="k must be <= n"):
        pb.from_counts(counts.assign(k=[1, 2, 60, 3]))
    with pytest.raises(PhasebayesError, match="missing column"):
        pb.from_counts(counts.drop(columns="n"))
    summ = pd.DataFrame({"step": [0, 1, 2], "mean": [10.0, 20.0, 90.0], "sd": [1.0, np.nan, 2.0], "n": [5, 5, 5]})
    with pytest.raises(PhasebayesError, match="row 1"):
        pb.from_summaries(summ)
    with pytest.raises(ModelSpecError, match="normal"):
        pb.ChangePointModel(pb.from_summaries(summ.fillna(1.0)), likelihood="negative_binomial")
