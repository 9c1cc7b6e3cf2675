"""Tests of phasebayes.dissimilarity against closed forms (categorical and Gaussian families)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import phasebayes as pb
from phasebayes.dissimilarity import (
    DissimilarityResult,
    classifier_terms,
    discrete_divergence,
    g_logodds,
    likelihood_terms,
    stratified_mean,
    window_slots,
)
from phasebayes.errors import ModelSpecError, PhasebayesError, RunDataError
from phasebayes.simulate_outputs import simulate_outputs, window_mixture_index

MEASURES = ("linear", "tv", "js")


def _random_family(rng, n_steps=7, n_cat=6, scale=1.5):
    """Random categorical family P(x | step), shape (n_steps, n_cat), a random walk in logit space."""
    logits = np.cumsum(scale * rng.standard_normal((n_steps, n_cat)), axis=0)
    return np.exp(logits - np.logaddexp.reduce(logits, axis=1, keepdims=True))


def _true_curve(probs, window, measure):
    """Closed-form D per boundary for a family probs (n_steps, n_cat)."""
    left, right = window_mixture_index(len(probs), window)
    pl = (left / left.sum(1, keepdims=True)) @ probs
    pr = (right / right.sum(1, keepdims=True)) @ probs
    return discrete_divergence(pl, pr, measure)


def _enumerated_logp(probs):
    """logp array whose 'samples' are all categories: (n_steps, 1, n_cat, n_steps) and their weights."""
    n_steps, n_cat = probs.shape
    logp = np.broadcast_to(np.log(probs).T[None, None, :, :], (n_steps, 1, n_cat, n_steps)).copy()
    weights = np.broadcast_to(probs[:, None, :], (n_steps, 1, n_cat))
    return logp, weights


# ------------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("window", [1, 2, 3])
def test_likelihood_estimator_expectation_equals_closed_form(measure, window):
    """Weighting every possible response by its probability gives the estimator's exact expectation."""
    probs = _random_family(np.random.default_rng(window), n_steps=8)
    logp, w = _enumerated_logp(probs)
    terms, ok = likelihood_terms(logp, window, measure)
    idx, _ = window_slots(len(probs), window)
    expectation = np.stack([stratified_mean(terms[b], ok[b], window, weights=w[idx[b]]) for b in range(len(idx))])[:, 0]
    np.testing.assert_allclose(expectation, _true_curve(probs, window, measure), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("measure", MEASURES)
def test_closed_form_identities_of_measures(measure):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(5), size=200)
    q = rng.dirichlet(np.ones(5), size=200)
    d = discrete_divergence(p, q, measure)
    assert np.all(d >= -1e-15) and np.all(d <= 1 + 1e-12)
    np.testing.assert_allclose(discrete_divergence(p, p, measure), 0.0, atol=1e-15)
    # f-divergence form: D = 1/2 E_p[g(r)] + 1/2 E_q[g(1-r)]
    z = np.log(p) - np.log(q)
    direct = 0.5 * (p * g_logodds(z, measure)).sum(-1) + 0.5 * (q * g_logodds(-z, measure)).sum(-1)
    np.testing.assert_allclose(d, direct, rtol=1e-10)


def test_tv_squared_le_linear_le_tv():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.full(8, 0.5), size=1000)
    q = rng.dirichlet(np.full(8, 0.5), size=1000)
    lin, tv = discrete_divergence(p, q, "linear"), discrete_divergence(p, q, "tv")
    assert np.all(tv**2 <= lin + 1e-12) and np.all(lin <= tv + 1e-12)
    # and for the estimator's exact expectation on a family
    probs = _random_family(rng, n_steps=10)
    logp, w = _enumerated_logp(probs)
    idx, _ = window_slots(10, 2)
    est = {}
    for m in ("linear", "tv"):
        terms, ok = likelihood_terms(logp, 2, m)
        est[m] = np.stack([stratified_mean(terms[b], ok[b], 2, weights=w[idx[b]]) for b in range(9)])
    assert np.all(est["tv"] ** 2 <= est["linear"] + 1e-12) and np.all(est["linear"] <= est["tv"] + 1e-12)


def test_small_shift_fisher_limits():
    """D_lin ≈ F δ²/4 and D_JS ≈ F δ²/8 (nats) for an exponential family p_θ(x) ∝ exp(θ v(x))."""
    v = np.array([0.0, 1.0, 2.5, -1.0, 0.3])
    theta = 0.4

    def p(t):
        e = np.exp(t * v)
        return e / e.sum()

    fisher = p(theta) @ v**2 - (p(theta) @ v) ** 2
    for delta in (0.02, 0.05):
        pl, pr = p(theta - delta / 2), p(theta + delta / 2)
        lin = discrete_divergence(pl, pr, "linear")
        js_nats = discrete_divergence(pl, pr, "js") * np.log(2)
        assert lin == pytest.approx(fisher * delta**2 / 4, rel=5 * delta)
        assert js_nats == pytest.approx(fisher * delta**2 / 8, rel=5 * delta)
    # Gaussian location family N(θ, 1): F = 1, through the likelihood estimator on a fine grid (JS in bits)
    x = np.linspace(-12, 12, 48001)
    dx = x[1] - x[0]
    delta = 0.05
    dens = np.stack([np.exp(-0.5 * (x - m) ** 2) for m in (0.0, delta)]) / np.sqrt(2 * np.pi) * dx
    logp = np.log(dens).T[None, None, :, :].repeat(2, axis=0)  # samples = grid points
    for measure, const in (("linear", 4.0), ("js", 8.0 * np.log(2))):
        terms, ok = likelihood_terms(logp, 1, measure)
        d = stratified_mean(terms[0], ok[0], 1, weights=dens[:, None, :])[0]
        assert d == pytest.approx(delta**2 / const, rel=0.02)


def test_gaussian_family_matches_quadrature():
    ds, truth = simulate_outputs(10, 2, 2000, family="gaussian", shift=2.0, seed=3)
    for measure in MEASURES:
        res = pb.dissimilarity(ds, window=2, measure=measure)
        true = truth.dissimilarity(2, measure)["total"].mean(1)
        se = res.data["d_total_se"].values
        assert np.all(np.abs(res.total.values - true) < 5 * se + 1e-3), measure


@pytest.mark.parametrize("measure", MEASURES)
def test_categorical_run_matches_closed_form(measure):
    ds, truth = simulate_outputs(12, 3, 300, seed=4)
    res = pb.dissimilarity(ds, window=3, measure=measure)
    assert res.total_estimator == "exact_likelihood"
    assert res.data.attrs["measure"] == measure
    true = truth.dissimilarity(3, measure)
    z = (res.data["d_total_prompt"].values - true["total"]) / np.maximum(res.data["d_total_se_prompt"].values, 1e-4)
    assert np.mean(np.abs(z) < 3) > 0.9 and np.all(np.abs(z) < 6)
    # order parameters: bias-corrected plug-in close to the truth at the transition
    b = int(np.argmax(true["total"].mean(1)))
    for op in ("identity", "alignment", "irrelevant"):
        est = float(res.order_parameters.sel(order_parameter=op).values[b])
        tol = 0.06 if measure == "tv" else 0.03
        assert est == pytest.approx(true[op].mean(1)[b], abs=tol), op


def test_likelihood_estimator_unbiased_monte_carlo():
    """Few samples per checkpoint: the average over replicates still equals the closed form."""
    rng = np.random.default_rng(5)
    probs = _random_family(rng, n_steps=6, n_cat=8)
    n_rep, n_s = 400, 4
    true = _true_curve(probs, 2, "linear")
    cdf = np.cumsum(probs, 1)
    x = (rng.random((n_rep, 6, n_s, 1)) > cdf[None, :, None, :]).sum(-1)  # (rep, step, sample)
    x = np.minimum(x, probs.shape[1] - 1)
    logp = np.log(probs).T[x]  # (rep, step, sample, ref_step)
    logp = logp[:, :, None]  # one prompt
    est = np.stack([stratified_mean(*likelihood_terms(lp, 2, "linear"), 2)[:, 0] for lp in logp])
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(n_rep)
    assert np.all(np.abs(mean - true) < 4 * se + 1e-12)
    # the binned plug-in on the same samples is clearly biased upwards (why order parameters need a model)
    counts = np.stack([(x[r][..., None] == np.arange(probs.shape[1])).sum(1) for r in range(50)]).astype(float)
    left, right = window_mixture_index(len(probs), 2)
    pl = np.einsum("bj,rjc->rbc", left / left.sum(1, keepdims=True), counts / counts.sum(-1, keepdims=True))
    pr = np.einsum("bj,rjc->rbc", right / right.sum(1, keepdims=True), counts / counts.sum(-1, keepdims=True))
    plug = discrete_divergence(pl, pr, "linear").mean(0)
    assert np.all(plug > true)


def test_order_parameter_posterior_under_no_change():
    """Nothing changes: the histogram model says so (high P(no change), small D), never a negative D."""
    ds, _ = simulate_outputs(10, 4, 30, strength=0.0, seed=7)  # before == after logits: no change at all
    res = pb.dissimilarity(ds, window=2, n_draws=200)
    d = res.data
    assert d.attrs["order_parameter_estimator"] == "histogram_posterior"
    assert float(d["p_no_change"].mean()) > 0.6
    assert float(d["d_op"].mean()) < 0.02 and float(d["d_op"].max()) < 0.12
    assert float(d["d_op_lower"].min()) == 0.0 and float(d["d_op_upper"].max()) <= 1.0
    assert (d["d_op"] >= 0).all()


def test_order_parameter_posterior_tracks_a_change_and_keeps_the_ordering():
    ds, truth = simulate_outputs(10, 12, 50, n_a=3, width=2.0, seed=3)
    res = pb.dissimilarity(ds, window=1, n_draws=300)
    true = truth.dissimilarity(1)
    b = int(np.argmax(true["total"].mean(1)))
    d = res.data
    for name in ("identity", "alignment", "parity", "joint"):
        t = float(true[name][b].mean())
        est = float(d["d_op"].sel(order_parameter=name)[b])
        assert abs(est - t) < 0.25 * t + 0.02, name
    assert float(d["d_op"].sel(order_parameter="irrelevant")[b]) < 0.02
    # the joint carries at least as much as any order parameter, at every boundary
    ops = d["d_op"].sel(order_parameter=["identity", "alignment", "parity", "irrelevant"])
    assert bool((ops <= d["d_op"].sel(order_parameter="joint") + 1e-9).all())


# ------------------------------------------------------------------------------------------ robustness
def test_very_negative_logp_is_stable():
    a, _ = simulate_outputs(10, 2, 40, seed=8)
    b, _ = simulate_outputs(10, 2, 40, seed=8, logp_offset=-5000.0, logp_offset_sd=800.0)
    assert float(b["logp"].max()) < -1000
    for measure in MEASURES:
        # the totals are what the offset could break; one order parameter and few draws keep this quick
        kw = dict(window=3, measure=measure, order_parameters=["irrelevant"], n_draws=50)
        ra, rb = pb.dissimilarity(a, **kw), pb.dissimilarity(b, **kw)
        assert np.all(np.isfinite(rb.total.values))
        np.testing.assert_allclose(ra.total.values, rb.total.values, atol=1e-9)


def test_edge_windows_truncated_and_indexed_by_midpoint():
    ds, truth = simulate_outputs(6, 1, 20, seed=9, step_spacing=10)
    res = pb.dissimilarity(ds, window=3)
    d = res.data
    np.testing.assert_array_equal(d["mid_step"].values, [5, 15, 25, 35, 45])
    np.testing.assert_array_equal(d["n_left"].values, [1, 2, 3, 3, 3])
    np.testing.assert_array_equal(d["n_right"].values, [3, 3, 3, 2, 1])
    assert d.attrs["edge_windows"] == "truncated"
    logp, w = _enumerated_logp(truth.probs[:, 0])
    idx, _ = window_slots(6, 3)
    terms, ok = likelihood_terms(logp, 3, "linear")
    exact = np.stack([stratified_mean(terms[b], ok[b], 3, weights=w[idx[b]]) for b in range(5)])[:, 0]
    np.testing.assert_allclose(exact, truth.dissimilarity(3)["total"][:, 0], rtol=1e-10)
    # the largest window the grid allows works; one more is an error
    assert pb.dissimilarity(ds, window=5).total.shape == (5,)
    with pytest.raises(ModelSpecError, match="larger than the grid"):
        pb.dissimilarity(ds, window=6)


def test_one_prompt_and_prompt_average():
    ds, truth = simulate_outputs(8, 1, 50, seed=10)
    res = pb.dissimilarity(ds, window=2)
    assert res.data["d_total_prompt"].shape == (7, 1)
    np.testing.assert_allclose(res.total.values, res.data["d_total_prompt"].values[:, 0])
    # averaging per-prompt divergences equals the divergence of the joint (prompt, response) distribution
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(4), size=3), rng.dirichlet(np.ones(4), size=3)
    for m in MEASURES:
        joint = discrete_divergence(p.ravel() / 3, q.ravel() / 3, m)
        assert joint == pytest.approx(discrete_divergence(p, q, m).mean())


def test_missing_logp_raise_or_drop():
    ds, _ = simulate_outputs(8, 2, 20, seed=11)
    lp = ds["logp"].values.copy()
    lp[3, 0, 0, 5] = np.nan  # sample (step index 3) lacks logp under one checkpoint of its windows
    bad = ds.assign(logp=(ds["logp"].dims, lp))
    with pytest.raises(RunDataError, match="lack 'logp'"):
        pb.dissimilarity(bad, window=3)
    res = pb.dissimilarity(bad, window=3, on_missing="drop")
    assert np.all(np.isfinite(res.total.values))
    # a sample with no logp at all is simply absent
    lp2 = ds["logp"].values.copy()
    lp2[3, 0, 0, :] = np.nan
    assert np.all(np.isfinite(pb.dissimilarity(ds.assign(logp=(ds["logp"].dims, lp2)), window=3).total.values))


def test_bad_inputs_raise_clear_phasebayes_errors():
    ds, _ = simulate_outputs(6, 1, 10, seed=12)
    cases = [
        (lambda: pb.dissimilarity(ds.to_dataframe(), window=2), RunDataError, "xarray.Dataset"),
        (lambda: pb.dissimilarity(ds, window=2, measure="kl"), ModelSpecError, "unknown measure"),
        (lambda: pb.dissimilarity(ds, window=0), ModelSpecError, "positive integer"),
        (lambda: pb.dissimilarity(ds, window=2.5), ModelSpecError, "positive integer"),
        (lambda: pb.dissimilarity(ds, window=2, order_parameters=["nope"]), RunDataError, "unknown order parameter"),
        (lambda: pb.dissimilarity(ds, window=2, bins=[0, 50]), ModelSpecError, "outside its bins"),
        (lambda: pb.dissimilarity(ds, window=2, bins={"identity": [5, 1]}), ModelSpecError, "strictly increasing"),
        (lambda: pb.dissimilarity(ds, window=2, n_draws=5), ModelSpecError, "n_draws"),
        (lambda: pb.dissimilarity(ds, window=2, prefix_tokens=8), RunDataError, "logp_prefix"),
        (lambda: pb.dissimilarity(ds.drop_vars("logp"), window=2, total="likelihood"), RunDataError, "logp"),
        (lambda: pb.dissimilarity(ds.drop_vars("logp"), window=2, total="classifier"), RunDataError, "embeddings"),
        (lambda: pb.dissimilarity(ds, window=2, total="magic"), ModelSpecError, "total must be"),
        (lambda: pb.dissimilarity(ds.assign(logp=ds["logp"] + np.inf), window=2), RunDataError, r"\+inf"),
        (lambda: pb.dissimilarity(ds.drop_vars("logp"), window=2, embeddings=np.zeros((6, 1, 10))), RunDataError, "shape"),
    ]
    for call, err, msg in cases:
        with pytest.raises(err, match=msg) as info:
            call()
        assert isinstance(info.value, PhasebayesError)
    wrong_ref = ds.assign_coords(ref_step=ds["ref_step"].values + 1)
    with pytest.raises(RunDataError, match="not checkpoint steps"):
        pb.dissimilarity(wrong_ref, window=2)


# ------------------------------------------------------------------------------- other estimators
def test_classifier_lower_bound_from_embeddings():
    ds, truth = simulate_outputs(12, 3, 60, seed=13, strength=3.0, embedding_dim=16, embedding_noise=0.5)
    ds = ds.drop_vars("logp")
    true = {m: truth.dissimilarity(3, m)["total"].mean(1) for m in MEASURES}
    for measure in MEASURES:
        res = pb.dissimilarity(ds, window=3, measure=measure)
        assert res.total_estimator == "classifier_lower_bound"
        est = res.total.values
        # a lower bound: on average below the truth, and informative at the transition
        assert np.mean(est - true[measure]) < 0
        assert np.sum(est > true[measure] + 3 * res.data["d_total_se"].values) <= 1
        b = int(np.argmax(true[measure]))
        assert est[b] > 0.3 * true[measure][b]


def test_classifier_terms_held_out_under_no_change():
    """With no change, held-out scoring cannot find any (the mean lower bound is <= 0 up to noise)."""
    rng = np.random.default_rng(14)
    emb = rng.standard_normal((8, 2, 40, 30))
    terms, ok = classifier_terms(emb, 2, "linear", rng=1)
    d = stratified_mean(terms, ok, 2)
    assert d.mean() < 0.01


# ------------------------------------------------------------------------------- storage and plots
def test_datatree_round_trip_next_to_other_results(tmp_path):
    ds, _ = simulate_outputs(8, 2, 30, seed=16)
    res = pb.dissimilarity(ds, window=2, measure="js", n_draws=100)
    tree = xr.DataTree(name="analysis")
    tree["posterior"] = xr.DataTree(dataset=xr.Dataset({"tau": (("chain", "draw"), np.zeros((2, 5)))}))
    tree["dissimilarity"] = res.to_datatree()
    path = tmp_path / "analysis.nc"
    tree.to_netcdf(path, engine="netcdf4")
    back = DissimilarityResult.from_datatree(xr.open_datatree(path, engine="netcdf4"))
    xr.testing.assert_allclose(back.data, res.data)
    xr.testing.assert_allclose(DissimilarityResult.load(res.save(tmp_path / "dissimilarity.nc")).data, res.data)
    with pytest.raises(pb.OutputExistsError):
        res.save(tmp_path / "dissimilarity.nc")
    assert back.data.attrs["measure"] == "js" and back.data.attrs["units"] == "bits"
    assert back.total_estimator == "exact_likelihood"
    assert list(back.data["order_parameter"].values) == list(res.data["order_parameter"].values)
    df = back.to_dataframe()
    assert set(df["curve"]) == {"total", "identity", "alignment", "parity", "irrelevant", "joint"}
    with pytest.raises(ModelSpecError):
        DissimilarityResult.from_datatree(xr.DataTree(name="empty"))


def test_plots_return_figures():
    import matplotlib.figure

    ds, _ = simulate_outputs(8, 2, 30, seed=17)
    res = pb.dissimilarity(ds, window=2)
    assert isinstance(res.plot(), matplotlib.figure.Figure)
    tau = pd.DataFrame({"mean": [38.0, 41.0], "lower": [30.0, 35.0], "upper": [45.0, 50.0]}, index=["alignment", "identity"])
    assert isinstance(res.plot_transition(tau), matplotlib.figure.Figure)
    with pytest.raises(ModelSpecError):
        res.plot_transition(pd.DataFrame({"mean": [1.0]}))
    assert 0 < res.peak_step() < 70


def test_embeddings_module_offline_model():
    from phasebayes.embeddings import add_embeddings, default_model_path, embed_texts

    assert (default_model_path() / "modules.json").exists()
    emb = embed_texts(["The cat sat on the mat.", "", "A dog slept on the rug."])
    assert emb.shape == (3, 384)
    assert np.all(np.isnan(emb[1])) and np.allclose(np.linalg.norm(emb[[0, 2]], axis=1), 1.0)
    ds, _ = simulate_outputs(4, 1, 3, seed=18, responses=True)
    out = add_embeddings(ds)
    assert out["embedding"].dims == ("step", "prompt", "sample", "embedding_dim")
    res = pb.dissimilarity(out.drop_vars("logp"), window=1)
    assert res.total_estimator == "classifier_lower_bound"
