"""Likelihood families as objects: the registry, and the zero-inflated binomial added as one class."""

import numpy as np
import pytest
from scipy import stats

import phasebayes as pb
from phasebayes.models.families import FAMILIES, NUMPY_MATH, get_family, pytensor_math, sufficient_statistics


def test_get_family_unknown_lists_the_names():
    assert get_family("beta") is FAMILIES["beta"]
    with pytest.raises(pb.ModelSpecError, match="zero_inflated_binomial"):
        get_family("gamma")


def test_zero_inflated_binomial_loglik_equals_scipy_per_observation():
    """Σ_i log(π·1[k_i = 0] + (1 − π)·Binom(k_i | n, μ)) from the cell statistics, numpy and PyTensor."""
    import pytensor.tensor as pt

    rng = np.random.default_rng(3)
    trials = np.array([10, 6])
    K, T, P, N = 2, 5, 3, 40
    pi_true = np.array([0.3, 0.1])
    k = rng.binomial(trials[:, None, None, None], 0.4, (K, T, P, N)).astype(float)
    k = np.where(rng.random(k.shape) < pi_true[:, None, None, None], 0.0, k)
    k[rng.random(k.shape) < 0.1] = np.nan  # missing answers
    fam = get_family("zero_inflated_binomial")
    st = sufficient_statistics("zero_inflated_binomial", k / trials[:, None, None, None], trials + 1)
    mu = rng.uniform(0.1, 0.9, (K, T, P))
    pi = np.array([0.25, 0.05])[:, None, None]
    got = fam.loglik(st, mu, pi, NUMPY_MATH)
    pmf = stats.binom.pmf(k, trials[:, None, None, None], mu[..., None])
    per_obs = np.log(pi[..., None] * (k == 0) + (1 - pi[..., None]) * pmf)
    want = np.nansum(np.where(np.isfinite(k), per_obs, np.nan), axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    expr = fam.loglik(st, pt.as_tensor(mu), pt.as_tensor(pi), pytensor_math())
    np.testing.assert_allclose(expr.eval(), want, rtol=1e-10)
    assert np.all(st.n <= N) and np.allclose(st.s2, ((k == 0) & np.isfinite(k)).sum(-1))


def test_zero_inflated_binomial_scores_are_checked():
    fam = get_family("zero_inflated_binomial")
    with pytest.raises(pb.ModelSpecError, match="integer scores between 0 and 10"):
        fam.prepare(np.array([1.0, 11.0]), (0.0, 10.0))
    with pytest.raises(pb.ModelSpecError, match="bounded scale"):
        fam.prepare(np.array([1.0, 2.0]), (np.nan, np.nan))


def test_zero_inflated_binomial_recovers_tau_and_zero_inflation():
    ds, truth = pb.simulate_run(n_steps=15, n_prompts=3, n_samples=20, order_parameters=["successes"],
                                likelihood="zero_inflated_binomial", tau=450.0, width=30.0, levels=(8.0, 3.0),
                                family_options={"zero_inflation": 0.3, "n_trials": 10}, seed=4)
    assert float(ds["score"].max()) <= 10 and float((ds["score"] == 0).mean()) > 0.25
    res = pb.ChangePointModel(ds, likelihood="zero_inflated_binomial").fit(
        draws=300, tune=300, chains=2, random_seed=0, progressbar=False, warn=False)
    row = res.transition_steps(ci_prob=0.94).loc["successes"]
    assert row["lower"] <= 450.0 <= row["upper"] and abs(row["median"] - 450.0) < 40, row.to_dict()
    pi = res.posterior["zero_inflation"].values.ravel()
    assert abs(pi.mean() - 0.3) < 0.05, pi.mean()
    lv = res.levels()
    assert abs(lv.loc[("successes", "before"), "median"] - 8.0) < 0.8
    assert abs(lv.loc[("successes", "after"), "median"] - 3.0) < 0.8
    ppc = res.posterior_predictive(n_draws=20)
    assert float(ppc["cell_mean"].max()) <= 10.0


def test_zero_inflated_binomial_in_a_multi_run_model_with_other_families():
    """Several runs: the family's trials come from the scale; the model's log density is finite at the start."""
    runs, _ = pb.simulate_study(n_runs=2, order_parameters=["a", "b"], seed=1, n_steps=6, n_prompts=2, n_samples=5,
                                likelihood={"a": "zero_inflated_binomial", "b": "negative_binomial"})
    m = pb.ChangePointModel(runs, likelihood={"a": "zero_inflated_binomial", "b": "negative_binomial"})
    np.testing.assert_array_equal(m.stats["zero_inflated_binomial"].n_categories, [11])
    model = m.build()
    assert "zero_inflation" in model.named_vars and "dispersion" in model.named_vars
    assert np.isfinite(model.compile_logp()(model.initial_point()))


def test_beta_scores_at_the_bounds_enter_as_their_rounding_interval():
    """0-100 scores with some exactly 0 or 100: interior scores by their Beta density, a score at a bound
    by the probability of the half rounding step next to it (scipy's cdf / sf), numpy and PyTensor."""
    import pytensor.tensor as pt

    rng = np.random.default_rng(5)
    K, T, P, N = 2, 3, 2, 30
    y = np.round(100 * rng.beta(0.5, 0.5, (K, T, P, N)))  # many scores at 0 and 100
    y[0, 0, 0, :5] = np.nan
    fam = get_family("beta")
    obs = fam.prepare(y, (0.0, 100.0))
    st = sufficient_statistics("beta", obs)
    assert np.allclose(st.bound_width, 0.005)  # integer scores: 100 stands for 99.5-100
    assert np.array_equal(st.n_observed, np.isfinite(y).sum(-1))
    mu, phi = rng.uniform(0.2, 0.8, (K, T, P)), np.array([2.0, 7.0])[:, None, None]
    a, b = (mu * phi)[..., None], ((1 - mu) * phi)[..., None]
    per_obs = np.where(obs <= 0, stats.beta.logcdf(0.005, a, b),
                       np.where(obs >= 1, stats.beta.logsf(0.995, a, b), stats.beta.logpdf(np.clip(obs, 1e-9, 1 - 1e-9), a, b)))
    want = np.where(np.isfinite(obs), per_obs, 0.0).sum(-1)
    np.testing.assert_allclose(fam.loglik(st, mu, phi, NUMPY_MATH), want, rtol=1e-9)
    np.testing.assert_allclose(fam.loglik(st, pt.as_tensor(mu), pt.as_tensor(phi), pytensor_math()).eval(), want, rtol=1e-9)
    # no score at a bound: nothing extra is stored, the reported mean maps straight back to score units
    inner = sufficient_statistics("beta", fam.prepare(np.full((1, 1, 1, 3), 50.0), (0.0, 100.0)))
    assert inner.bound_width is None and fam.to_score(0.25, 0.0, 100.0, 3) == 25.0


def test_beta_fit_near_a_saturated_level_is_unbiased():
    """A judge level at 0.975 (concentration 30), scores rounded to 0.1 points (4 % of them exactly 100):
    the maximum-likelihood mean and concentration come out right. Squeezing every score into (0, 1) by
    (y (N - 1) + 1/2) / N gave a logit error of -0.06 and a concentration of 37 here."""
    from scipy import optimize, special

    rng = np.random.default_rng(0)
    y = np.round(100 * rng.beta(0.975 * 30, 0.025 * 30, (1, 1, 1, 20000)), 1)
    assert 0.02 < np.mean(y == 100) < 0.08
    fam = get_family("beta")
    st = sufficient_statistics("beta", fam.prepare(y, (0.0, 100.0)))

    def nll(p):
        return -float(fam.loglik(st, np.array([[[special.expit(p[0])]]]), np.array([[[np.exp(p[1])]]]), NUMPY_MATH).sum())

    fit = optimize.minimize(nll, [2.0, np.log(10.0)], method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-6})
    assert abs(fit.x[0] - special.logit(0.975)) < 0.025, fit.x
    assert abs(np.exp(fit.x[1]) / 30 - 1) < 0.08, np.exp(fit.x[1])
