"""ChangePointModel: likelihood algebra, exact marginalisation, recovery, calibration, persistence, errors."""

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import phasebayes as pb
from phasebayes.models.changepoint import ChangePointModel
from phasebayes.models.families import (
    NUMPY_MATH,
    cell_loglik,
    nb_cell_shared_loglik,
    nb_shared_loglik,
    prepare_scores,
    pytensor_math,
    sufficient_statistics,
)

FAST = dict(draws=400, tune=400, chains=2, progressbar=False)


# ---------------------------------------------------------------- sufficient statistics
def _per_observation(family, y, mu, nuis):
    if family == "beta":
        return stats.beta.logpdf(y, mu * nuis, (1 - mu) * nuis)
    if family == "binomial":
        return stats.bernoulli.logpmf(y, mu)
    if family == "normal":
        return stats.norm.logpdf(y, mu, nuis)
    if family == "poisson":
        return stats.poisson.logpmf(y, mu)
    p = nuis / (nuis + mu)
    return stats.nbinom.logpmf(y, nuis, p)


@pytest.mark.parametrize("family", ["beta", "binomial", "normal", "poisson", "negative_binomial"])
def test_sufficient_statistics_equal_per_observation_loglik(family):
    rng = np.random.default_rng(0)
    shape = (2, 4, 3, 25)
    if family == "beta":
        obs = rng.beta(2, 3, shape)
    elif family == "binomial":
        obs = (rng.random(shape) < 0.3).astype(float)
    elif family == "normal":
        obs = rng.normal(1, 2, shape)
    else:
        obs = rng.poisson(7, shape).astype(float)
    obs[rng.random(shape) < 0.2] = np.nan  # missing scores are skipped, not imputed
    mu = rng.uniform(0.2, 0.8, shape[:3]) if family in ("beta", "binomial") else rng.uniform(2, 9, shape[:3])
    nuis = np.array([3.5, 0.7])[:, None, None] if family != "binomial" else None
    st = sufficient_statistics(family, obs)
    got = cell_loglik(family, st, mu, nuis, NUMPY_MATH)
    if family == "negative_binomial":
        got = got + nb_cell_shared_loglik(obs, np.array([[3.5, 0.7]]))[0]
    want = np.nansum(_per_observation(family, obs, mu[..., None], None if nuis is None else nuis[..., None]), axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-8)
    if family == "negative_binomial":  # per-order-parameter shared term from value counts
        np.testing.assert_allclose(nb_shared_loglik(st, np.array([3.5, 0.7])),
                                   nb_cell_shared_loglik(obs, np.array([[3.5, 0.7]]))[0].sum(axis=(1, 2)), rtol=1e-12)
    # the PyTensor graph computes the same number
    import pytensor.tensor as pt

    m = pytensor_math()
    expr = cell_loglik(family, st, pt.as_tensor(mu), None if nuis is None else pt.as_tensor(nuis), m)
    np.testing.assert_allclose(expr.eval(), cell_loglik(family, st, mu, nuis, NUMPY_MATH), rtol=1e-10)


def test_prepare_scores_transformations_and_errors():
    y = np.array([0.0, 50.0, 100.0, np.nan])
    x = prepare_scores("beta", y, (0, 100))
    # rescaled, not squeezed: scores at a bound stay there and enter the likelihood as censored (test_families.py)
    np.testing.assert_array_equal(x[:3], [0.0, 0.5, 1.0])
    assert np.isnan(x[3])
    np.testing.assert_array_equal(prepare_scores("binomial", y, (0, 100), threshold=30)[:3], [1, 0, 0])
    with pytest.raises(pb.ModelSpecError, match="threshold"):
        prepare_scores("binomial", y, (0, 100))
    with pytest.raises(pb.ModelSpecError, match="integer counts"):
        prepare_scores("poisson", np.array([1.5, 2.0]), (np.nan, np.nan))
    with pytest.raises(pb.ModelSpecError, match="bounded scale"):
        prepare_scores("beta", y, (np.nan, np.nan))


# ---------------------------------------------------------------- the step model's exact marginal
def _tiny_step_run():
    ds, _ = pb.simulate_run(n_steps=5, n_prompts=1, n_samples=4, order_parameters=["x"], likelihood="normal",
                            transition="step", tau=500, levels=(0.0, 1.0), noise_sd=0.8, seed=11)
    return ds


def test_step_potential_equals_enumeration_over_grid():
    ds = _tiny_step_run()
    model = ChangePointModel(ds, transition="step", pooling="complete")
    pm_model = model.build()
    y = ds["score"].values[0, :, 0, :]  # (T, N)
    a, b, sigma = -0.3, 1.2, 0.9
    point = pm_model.initial_point()
    point["level_before_link"] = np.array([a])
    point["level_after_link"] = np.array([b])
    point["noise_sd_log__"] = np.array([np.log(sigma)])
    total = pm_model.compile_logp(jacobian=False)(point)
    priors = pm_model.compile_logp(vars=pm_model.free_RVs, jacobian=False)(point)
    potential = total - priors
    gaps = np.diff(ds["step"].values)
    terms = []
    for j in range(1, 5):  # first post-transition checkpoint index
        mean = np.where(np.arange(5) >= j, b, a)[:, None]
        terms.append(np.log(gaps[j - 1] / gaps.sum()) + stats.norm.logpdf(y, mean, sigma).sum())
    assert float(potential) == pytest.approx(logsumexp(terms), rel=1e-10)
    post = {"level_before_link": np.array([[a]]), "level_after_link": np.array([[b]]), "noise_sd": np.array([[sigma]])}
    cond = model.step_conditional(post)[0, 0]
    np.testing.assert_allclose(cond[1:], np.exp(np.array(terms) - logsumexp(terms)), rtol=1e-9)
    assert cond[0] == 0.0


def test_step_posterior_matches_brute_force_integration():
    """P(tau = t_j | y) from MCMC (Rao-Blackwellised) equals numerical integration over (a, b, sigma)."""
    ds = _tiny_step_run()
    model = ChangePointModel(ds, transition="step", pooling="complete")
    res = model.fit(draws=1500, tune=800, chains=2, random_seed=3, progressbar=False, warn=False)
    got = res.step_probabilities().loc["x"].values

    y = ds["score"].values[0, :, 0, :]
    m0, s0 = model._link_level_prior(0)
    sig_scale = 2.0 * model.data_sd[0]
    a = np.linspace(m0 - 6 * s0, m0 + 6 * s0, 241)
    sig = np.linspace(0.05, 4.0, 160)
    A, B, S = np.meshgrid(a, a, sig, indexing="ij")
    log_prior = stats.norm.logpdf(A, m0, s0) + stats.norm.logpdf(B, m0, s0) + stats.halfnorm.logpdf(S, scale=sig_scale)
    gaps = np.diff(ds["step"].values)
    n_t = (~np.isnan(y)).sum(1)
    s1 = np.nansum(y, 1)
    s2 = np.nansum(y * y, 1)
    log_post = []
    for j in range(1, 5):
        ll = 0.0
        for t in range(5):
            mu = B if t >= j else A
            ll = ll + (-n_t[t] * np.log(S) - 0.5 * n_t[t] * np.log(2 * np.pi) - (s2[t] - 2 * mu * s1[t] + n_t[t] * mu**2) / (2 * S**2))
        log_post.append(np.log(gaps[j - 1] / gaps.sum()) + logsumexp(ll + log_prior))
    want = np.exp(np.array(log_post) - logsumexp(log_post))
    np.testing.assert_allclose(got[1:], want, atol=0.02)
    assert got[0] == 0.0


# ---------------------------------------------------------------- recovery
FAMS = {"judge": "beta", "indicator": "binomial", "zscore": "normal", "words": "poisson", "tokens": "negative_binomial"}


@pytest.mark.parametrize("transition", ["sigmoid", "step"])
def test_recovery_every_likelihood(transition):
    taus = {"judge": 300.0, "indicator": 420.0, "zscore": 500.0, "words": 610.0, "tokens": 700.0}
    ds, truth = pb.simulate_run(n_steps=21, n_prompts=4, n_samples=30, order_parameters=list(FAMS), likelihood=FAMS,
                                transition=transition, tau=taus, width=20.0, prompt_tau_sd=8.0 if transition == "sigmoid" else 0.0,
                                prompt_level_sd=0.15, missing_fraction=0.05, seed=7)
    res = pb.ChangePointModel(ds, transition=transition).fit(random_seed=1, **FAST, warn=False)
    # 99% intervals: five order parameters are checked at once, so 94% intervals would miss one in 4 runs
    table = res.transition_steps(ci_prob=0.99)
    assert table.attrs["ci_kind"] == "hdi" and table.attrs["ci_prob"] == 0.99
    steps = ds["step"].values
    for op, tau in taus.items():
        row = table.loc[op]
        target = tau if transition == "sigmoid" else steps[np.searchsorted(steps, tau)]
        assert row["lower"] - 1e-9 <= target <= row["upper"] + 1e-9, (op, row.to_dict(), target)
        assert abs(row["median"] - target) < 25, op
    levels = res.levels()
    for op in taus:
        for q, true in (("before", truth.before[op]), ("after", truth.after[op])):
            r = levels.loc[(op, q)]
            scale = abs(truth.after[op] - truth.before[op])
            assert abs(r["median"] - true) < 0.12 * scale, (op, q, r["median"], true)
    if transition == "sigmoid":
        w = levels.xs("width", level="quantity")["median"]
        assert ((w > 5) & (w < 60)).all(), w.to_dict()  # truth 20 steps; grid spacing 50
        pt = res.prompt_transition_steps()
        assert pt.shape[0] == 5 * 4
    else:
        probs = res.step_probabilities()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert res.n_divergences <= 0.01 * 800  # rare funnel divergences are reported, never hidden


def test_pooling_complete_and_threshold_indicator():
    """The indicator 'score < 30' has its own midpoint: where P(score < 30) is halfway between its levels."""
    from phasebayes.simulate import transition_curve

    ds, truth = pb.simulate_run(n_steps=15, n_prompts=3, n_samples=40, order_parameters=["alignment"],
                                tau=500.0, width=60.0, levels=(85.0, 20.0), concentration=8.0, seed=2)
    res = pb.ChangePointModel(ds, likelihood="binomial", threshold=30, pooling=False).fit(random_seed=0, **FAST, warn=False)
    t = np.linspace(0, 1000, 20001)
    mean = transition_curve(t, 500.0, 60.0, 85.0, 20.0) / 100
    p_below = stats.beta.cdf(0.295, mean * 8.0, (1 - mean) * 8.0)  # integer scores: < 30 means < 29.5
    half = 0.5 * (p_below[0] + p_below[-1])
    true_tau = t[np.argmin(np.abs(p_below - half))]
    assert true_tau > 520  # the indicator moves later than the mean score
    row = res.transition_steps(ci_prob=0.99).loc["alignment"]
    assert row["lower"] < true_tau < row["upper"]
    lv = res.levels()
    assert abs(lv.loc[("alignment", "before"), "median"] - p_below[0]) < 0.05
    assert abs(lv.loc[("alignment", "after"), "median"] - p_below[-1]) < 0.08
    assert "z_tau" not in res.posterior


# ---------------------------------------------------------------- calibration
def _coverage(n_fits, n_ops, seed0):
    hits = []
    for f in range(n_fits):
        rng = np.random.default_rng(seed0 + f)
        ops = [f"op{k}" for k in range(n_ops)]
        tau = {o: float(rng.uniform(200, 800)) for o in ops}
        width = {o: float(rng.uniform(10, 60)) for o in ops}
        levels = {o: tuple(sorted(rng.uniform(15, 85, 2))[:: rng.choice([-1, 1])]) for o in ops}
        ds, _ = pb.simulate_run(n_steps=16, n_prompts=3, n_samples=12, order_parameters=ops, tau=tau, width=width,
                                levels=levels, prompt_tau_sd=10.0, prompt_level_sd=0.2, concentration=4.0, seed=seed0 + f)
        res = pb.ChangePointModel(ds).fit(random_seed=f, **FAST, warn=False)
        table = res.transition_steps(ci_prob=0.9)
        hits += [table.loc[o, "lower"] <= tau[o] <= table.loc[o, "upper"] for o in ops]
    return np.mean(hits), len(hits)


def test_calibration_reduced():
    """Coverage of the 90% HDI for tau over 24 simulated transitions (3 fits × 8 independent order parameters)."""
    cov, n = _coverage(n_fits=3, n_ops=8, seed0=100)
    assert n == 24
    assert 0.75 <= cov <= 1.0, cov


@pytest.mark.slow  # about 2.5 min on 2 cores; test_calibration_reduced runs in CI
def test_calibration_full():
    cov, n = _coverage(n_fits=12, n_ops=10, seed0=1000)
    assert 0.80 <= cov <= 0.97, (cov, n)


# ---------------------------------------------------------------- no-transition comparison, diagnostics
def test_transition_evidence_separates_change_from_none():
    ds, _ = pb.simulate_run(n_steps=12, n_prompts=3, n_samples=20, order_parameters=["moves", "flat"],
                            levels={"moves": (80.0, 30.0), "flat": (60.0, 60.0)}, seed=9)
    res = pb.ChangePointModel(ds).fit(random_seed=0, compare_null=True, **FAST, warn=False)
    ev = res.transition_evidence()
    assert ev.loc["moves", "elpd_diff"] > 20 and ev.loc["moves", "p_transition"] > 0.99
    assert ev.loc["flat", "elpd_diff"] < 3 and ev.loc["flat", "p_transition"] < 0.9


def test_bad_diagnostics_warn_loudly():
    ds, _ = pb.simulate_run(n_steps=8, n_prompts=2, n_samples=5, order_parameters=["a"], seed=1)
    with pytest.warns(pb.DiagnosticsWarning, match="do not trust"):
        pb.ChangePointModel(ds).fit(draws=15, tune=15, chains=2, random_seed=0, progressbar=False)


def test_model_errors():
    ds, _ = pb.simulate_run(n_steps=6, n_prompts=2, n_samples=3, seed=0)
    with pytest.raises(pb.ModelSpecError, match="unknown likelihood"):
        pb.ChangePointModel(ds, likelihood="gamma")
    with pytest.raises(pb.ModelSpecError, match="transition"):
        pb.ChangePointModel(ds, transition="linear")
    with pytest.raises(pb.ModelSpecError, match="not in the run"):
        pb.ChangePointModel(ds, order_parameters=["nope"])
    with pytest.raises(pb.ModelSpecError, match="threshold"):
        pb.ChangePointModel(ds, likelihood="binomial")
    with pytest.raises(pb.ModelSpecError, match="prior"):
        pb.ChangePointModel(ds, priors={"tau_sd": 1.0})
    with pytest.raises(pb.RunDataError):
        pb.ChangePointModel(ds.drop_vars("score"))


# ---------------------------------------------------------------- results: save/load, comparisons, plots
@pytest.fixture(scope="module")
def fitted():
    ds, truth = pb.simulate_run(n_steps=12, n_prompts=3, n_samples=10, order_parameters=["early", "late"],
                                tau={"early": 300.0, "late": 700.0}, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pb.ChangePointModel(ds).fit(random_seed=2, **FAST)
    return ds, truth, res


def test_save_load_roundtrip_exact(fitted, tmp_path):
    import xarray as xr

    _, _, res = fitted
    path = res.save(tmp_path / "fit.nc")
    back = pb.load_result(path)
    xr.testing.assert_identical(back.posterior.drop_vars(["order_parameter", "prompt"]),
                                res.posterior.drop_vars(["order_parameter", "prompt"]))
    assert back.config == res.config
    assert back.transition_steps().equals(res.transition_steps())
    xr.testing.assert_identical(back.model.ds["score"], res.model.ds["score"])
    with pytest.raises(pb.OutputExistsError):
        res.save(path)


def test_pairwise_order_and_lag(fitted):
    _, _, res = fitted
    pe = res.prob_earlier()
    assert pe.loc["early", "late"] > 0.99 and pe.loc["late", "early"] < 0.01
    lag = res.compare_to(np.full(1000, 200.0))
    assert lag.loc["early", "p_later"] == 1.0
    assert lag.loc["late", "lag_median"] == pytest.approx(res.transition_steps().loc["late", "median"] - 200.0)
    lag2 = res.compare_to(np.full(1000, 500.0))
    assert lag2.loc["early", "p_later"] < 0.01 and lag2.loc["late", "p_later"] > 0.99


def test_predictions_and_plots(fitted):
    ds, truth, res = fitted
    pred = res.predict(steps=ds["step"].values)
    true_mean = truth.cell_mean("late", ds["step"].values).mean(1)
    np.testing.assert_allclose(pred["mean_prompt"].sel(order_parameter="late").median("draw").mean("prompt"), true_mean, atol=8)
    ppc = res.posterior_predictive(n_draws=50)
    obs = ppc["observed"]
    lo, hi = ppc["cell_mean"].quantile([0.005, 0.995], "draw")
    inside = ((obs >= lo) & (obs <= hi)).mean()
    assert float(inside) > 0.85
    fig = res.plot_trajectories()
    assert len(fig.axes) == 2
    res.plot_tau()
    diag = res.diagnostics()
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(diag.columns) and "divergences" in diag.attrs


def test_random_seed_reproducible():
    ds, _ = pb.simulate_run(n_steps=6, n_prompts=2, n_samples=4, order_parameters=["a"], seed=8)
    kw = dict(draws=50, tune=50, chains=2, progressbar=False, warn=False)
    r1 = pb.ChangePointModel(ds).fit(random_seed=42, **kw)
    r2 = pb.ChangePointModel(ds).fit(random_seed=42, **kw)
    r3 = pb.ChangePointModel(ds).fit(random_seed=43, **kw)
    np.testing.assert_array_equal(r1.draws("tau"), r2.draws("tau"))
    assert not np.array_equal(r1.draws("tau"), r3.draws("tau"))


def test_centered_and_noncentered_agree():
    ds, truth = pb.simulate_run(n_steps=12, n_prompts=3, n_samples=40, order_parameters=["a"], tau=450.0,
                                prompt_tau_sd=10.0, prompt_level_sd=0.2, seed=12)
    res = {p: pb.ChangePointModel(ds, parametrization=p).fit(random_seed=0, **FAST, warn=False)
           for p in ("centered", "noncentered")}
    assert "tau_prompt_unit" in res["centered"].posterior and "z_tau" in res["noncentered"].posterior
    a, b = (res[p].transition_steps().loc["a"] for p in ("centered", "noncentered"))
    assert abs(a["median"] - b["median"]) < 0.5 * b["sd"] + 2
    assert abs(a["sd"] - b["sd"]) < 0.35 * b["sd"]
    pa = res["centered"].prompt_transition_steps()["median"].values
    pb_ = res["noncentered"].prompt_transition_steps()["median"].values
    np.testing.assert_allclose(pa, pb_, atol=10)


def test_default_geometry_noncentred_tau_centred_levels_when_data_rich():
    """Default: tau offsets always non-centred (no funnel when prompts share tau); levels centred only with >= 40 scores per cell."""
    rich, _ = pb.simulate_run(n_steps=6, n_prompts=3, n_samples=40, order_parameters=["a"], seed=0)
    sparse, _ = pb.simulate_run(n_steps=6, n_prompts=3, n_samples=10, order_parameters=["a"], seed=0)
    names = {k: {v.name for v in ChangePointModel(d).build().free_RVs} for k, d in (("rich", rich), ("sparse", sparse))}
    assert {"z_tau", "before_prompt_link", "after_prompt_link"} <= names["rich"] and "tau_prompt_unit" not in names["rich"]
    assert {"z_tau", "z_before", "z_after"} <= names["sparse"]
    forced = {v.name for v in ChangePointModel(rich, parametrization="centered").build().free_RVs}
    assert {"tau_prompt_unit", "before_prompt_link"} <= forced


def test_result_saved_by_the_previous_version_still_loads():
    """A centred-form result written before the geometry change (tau_prompt_unit in the posterior) loads and works."""
    from pathlib import Path

    res = pb.load_result(Path(__file__).parent / "data" / "changepoint_result_v0_centred.nc")
    assert "tau_prompt_unit" in res.posterior and "z_tau" not in res.posterior
    ts = res.transition_steps()
    np.testing.assert_allclose(ts["median"].values, np.median(res.draws("tau"), axis=0))
    assert 250 < ts.loc["a", "median"] < 400 and 600 < ts.loc["b", "median"] < 750  # simulated at about 350 and 650
    post = {k: res.draws(k) for k in res.posterior.data_vars}
    np.testing.assert_allclose(res.model._tau_prompt_unit(post), post["tau_prompt_unit"])
    pred = res.predict(n_draws=20, steps=res.model.steps)
    obs = res.posterior_predictive(n_draws=20)["observed"].mean("prompt")
    np.testing.assert_allclose(pred["mean_prompt"].median("draw").mean("prompt"), obs, atol=12)


def test_default_tau_geometry_follows_the_data():
    """auto: non-centred tau offsets when prompts share tau, centred when their taus clearly differ (no banana)."""
    from phasebayes.models.geometry import TAU_SEPARATION_CENTRED, tau_separation

    kw = dict(n_steps=60, n_prompts=8, n_samples=50, order_parameters=["a"], tau=500.0, width=40.0,
              prompt_level_sd=0.3, concentration=4.0)
    for seed in (0, 1, 2):
        shared = ChangePointModel(pb.simulate_run(prompt_tau_sd=0.0, seed=seed, **kw)[0])
        spread = ChangePointModel(pb.simulate_run(prompt_tau_sd=100.0, seed=seed, **kw)[0])
        assert shared.tau_separation[0] < TAU_SEPARATION_CENTRED and not shared.centered_tau, shared.tau_separation
        assert spread.tau_separation[0] > TAU_SEPARATION_CENTRED and spread.centered_tau, spread.tau_separation
        assert "tau_prompt_unit" in {v.name for v in spread.build().free_RVs}
    # per-prompt estimates recover a known shift: prompt taus 300 and 700 are far apart, flat curves say nothing
    u = np.linspace(0, 1, 21)
    curve = lambda t: 1 / (1 + np.exp(-(u - t) / 0.03))  # noqa: E731
    rng = np.random.default_rng(0)
    obs = np.stack([curve(0.3)] * 2 + [curve(0.7)] * 2, axis=1)[None, :, :, None] + rng.normal(0, 0.01, (1, 21, 4, 10))
    assert tau_separation(obs, u)[0] > 10
    assert np.isnan(tau_separation(obs[..., :1], u)[0])  # one score per cell (aggregated): cannot tell
    assert ChangePointModel(pb.simulate_run(prompt_tau_sd=100.0, seed=0, **kw)[0], parametrization="noncentered").centered_tau is False
