"""Ordinal (Likert) likelihood: category-count statistics, automatic choice, recovery of tau and levels."""

import numpy as np
import pytest

import phasebayes as pb
from phasebayes.models.families import prepare_scores, sufficient_statistics
from phasebayes.models.ordinal import category_probs, expected_category, ordinal_loglik

FAST = dict(draws=400, tune=400, chains=2, progressbar=False)


def test_category_counts_give_the_per_observation_loglik():
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 5, size=(1, 4, 3, 30)).astype(float)
    obs[rng.random(obs.shape) < 0.2] = np.nan
    st = sufficient_statistics("ordinal", obs, np.array([5]))
    assert st.counts.shape == (1, 4, 3, 5)
    np.testing.assert_array_equal(st.counts.sum(-1), st.n)
    eta = rng.normal(0, 1, (4, 3))
    cuts = np.array([-1.5, -0.2, 0.4, 1.8])
    probs = category_probs(eta, cuts)
    np.testing.assert_allclose(probs.sum(-1), 1.0)
    assert (probs > 0).all()
    want = np.zeros((4, 3))
    for t in range(4):
        for p in range(3):
            y = obs[0, t, p][np.isfinite(obs[0, t, p])].astype(int)
            cdf = 1 / (1 + np.exp(-(cuts - eta[t, p])))  # P(y <= c)
            pc = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
            want[t, p] = np.log(pc[y]).sum()
    np.testing.assert_allclose(ordinal_loglik(st.counts[0], probs), want, rtol=1e-10)
    import pytensor.tensor as pt

    graph = ordinal_loglik(st.counts[0], category_probs(pt.as_tensor(eta), pt.as_tensor(cuts), pt), pt)
    np.testing.assert_allclose(graph.eval(), want, rtol=1e-10)
    # expected category = Σ_c P(y > c)
    np.testing.assert_allclose(expected_category(eta, cuts), (1 - 1 / (1 + np.exp(-(cuts - eta[..., None])))).sum(-1))


def test_prepare_and_auto_choice():
    x = prepare_scores("ordinal", np.array([1.0, 3.0, 5.0, np.nan]), (1, 5))
    np.testing.assert_array_equal(x[:3], [0, 2, 4])
    with pytest.raises(pb.ModelSpecError, match="integer scores between"):
        prepare_scores("ordinal", np.array([1.5]), (1, 5))
    with pytest.raises(pb.ModelSpecError, match="integer scores between"):
        prepare_scores("ordinal", np.array([6.0]), (1, 5))
    with pytest.raises(pb.ModelSpecError, match="bounded scale"):
        prepare_scores("ordinal", np.array([1.0]), (np.nan, np.nan))
    ds, _ = pb.simulate_run(n_steps=6, n_prompts=2, n_samples=5, order_parameters=["likert", "judge", "ten"],
                            likelihood={"likert": "ordinal", "judge": "beta", "ten": "ordinal"},
                            n_categories={"likert": 5, "ten": 10}, levels={"likert": (4.0, 2.0), "judge": (80.0, 30.0),
                                                                           "ten": (3.0, 8.0)}, seed=1)
    m = pb.ChangePointModel(ds)
    assert m.config.likelihood == {"likert": "ordinal", "judge": "beta", "ten": "ordinal"}
    np.testing.assert_array_equal(m.n_cat, [5, 0, 10])


@pytest.mark.parametrize("transition", [pytest.param("sigmoid", marks=pytest.mark.slow), "step"])
def test_ordinal_recovery(transition):
    taus = {"likert": 350.0, "ten": 650.0}
    ds, truth = pb.simulate_run(n_steps=16, n_prompts=4, n_samples=25, order_parameters=list(taus),
                                likelihood="ordinal", n_categories={"likert": 5, "ten": 10}, transition=transition,
                                tau=taus, width=25.0, levels={"likert": (4.2, 2.0), "ten": (3.0, 7.5)},
                                prompt_level_sd=0.3, missing_fraction=0.05, seed=5)
    res = pb.ChangePointModel(ds, transition=transition).fit(random_seed=2, **FAST, warn=False)
    table = res.transition_steps(ci_prob=0.99)
    steps = ds["step"].values
    for op, tau in taus.items():
        target = tau if transition == "sigmoid" else steps[np.searchsorted(steps, tau)]
        row = table.loc[op]
        assert row["lower"] - 1e-9 <= target <= row["upper"] + 1e-9, (op, row.to_dict())
        assert abs(row["median"] - target) < 30, op
    lv = res.levels()
    for op in taus:
        for q, true in (("before", truth.before[op]), ("after", truth.after[op])):
            got = lv.loc[(op, q), "median"]
            assert abs(got - true) < 0.12 * abs(truth.after[op] - truth.before[op]), (op, q, got, true)
    assert res.n_divergences <= 8
    ppc = res.posterior_predictive(n_draws=40)
    lo, hi = ppc["cell_mean"].quantile([0.005, 0.995], "draw")
    assert float(((ppc["observed"] >= lo) & (ppc["observed"] <= hi)).mean()) > 0.85
    assert set(np.unique(ds["score"].sel(order_parameter="likert").values[np.isfinite(ds["score"].sel(order_parameter="likert").values)])) <= {1, 2, 3, 4, 5}
