"""Tests of phasebayes.decomposition: bounds and ordering per draw, closed forms, runs with known truth."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import beta as beta_dist
from scipy.stats import betabinom, norm

import phasebayes as pb
from phasebayes import defaults
from phasebayes.decomposition import DecompositionResult, DPIViolationWarning
from phasebayes.errors import ModelSpecError, PhasebayesError, RunDataError
from phasebayes.intervals import interval_along as interval
from phasebayes.simulate_outputs import simulate_outputs
from phasebayes.stats import histogram_posterior as hp
from phasebayes.stats.fractions import fraction_draws
from phasebayes.stats.score_bins import coarsen_scores

ROOT = Path(__file__).resolve().parents[1]


def _peak_boundary(res: DecompositionResult) -> int:
    return int(np.argmin(np.abs(res.data["mid_step"].values - res.peak_step)))


def _fit(ds, window=1, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pb.decompose(ds, window=window).fit(**{"n_draws": 300, **kw})


def test_interval_hdi_and_eti():
    x = np.random.default_rng(0).exponential(size=20000)
    lo, hi = interval(x, 0.9, "eti")
    assert lo == pytest.approx(-np.log(0.95), abs=0.01) and hi == pytest.approx(-np.log(0.05), rel=0.03)
    lo, hi = interval(x, 0.9, "hdi")  # shortest interval of an exponential starts at 0
    assert lo == pytest.approx(0.0, abs=0.01) and hi == pytest.approx(-np.log(0.1), rel=0.03)
    with pytest.raises(ModelSpecError):
        interval(x, 1.5)


# ------------------------------------------------------------------------------------------ closed forms
def test_split_likelihood_matches_scipy_and_quadrature():
    """A split's likelihood is the beta-binomial of an ordered sample, integrated over the prompt's centre."""
    from scipy.integrate import quad
    from scipy.special import comb

    from phasebayes.stats import split_model as sm

    for k, n, a, b in [(2, 5, 0.7, 1.3), (0, 4, 3.0, 2.0), (6, 6, 0.5, 0.5)]:
        assert sm._log_bb(np.array(k), np.array(n), np.array(a), np.array(b)) == pytest.approx(
            betabinom.logpmf(k, n, a, b) - np.log(comb(n, k)), abs=1e-10)
    # 'unchanged' integrated over the centre on the logit grid equals direct integration over the centre
    kl, nl, kr, nr, share = np.array([3.0]), np.array([4.0]), np.array([1.0]), np.array([4.0]), 0.3
    t = sm._terms(kl, nl, kr, nr, share, 0.0)
    grid = np.logaddexp.reduce(t["same"][0, 0, 0])
    a, c, bb = sm.ALPHA_GRID[0] * share, sm.ALPHA_GRID[0] * (1 - share), sm.BETA_GRID[0]
    f = lambda m: beta_dist.pdf(m, a, c) * np.exp(sm._log_bb(4.0, 8.0, bb * m, bb * (1 - m)))  # noqa: E731
    assert grid == pytest.approx(np.log(quad(f, 0, 1)[0]), abs=2e-3)


def test_fraction_draws_closed_form():
    """Fixed histogram draws: ρ_k = D_k / D_full, and P(Δ = 0) is the closed-form posterior of the point mass."""
    n = 4000
    d = np.tile(np.array([0.1, 0.25, 0.3])[None, :], (n, 1))  # two order parameters and the joint, no uncertainty
    hat, se = 0.4, 0.05
    fr = fraction_draws(d, np.array(hat), np.array(se), rng=0, p_complete=0.5)
    zero = 0.5 * norm.pdf(hat, 0.3, se)
    pos = 0.5 * (norm.cdf((hat - 0.3) / se) - norm.cdf((hat - 1.0) / se)) / 0.7
    assert float(fr.p_complete) == pytest.approx(zero / (zero + pos), abs=1e-9)
    assert np.mean(fr.rho[:, 2] == 1.0) == pytest.approx(zero / (zero + pos), abs=0.03)
    # every draw: D_full = D_joint + Δ >= D_joint, and ρ_k = D_k / D_full
    np.testing.assert_allclose(fr.rho[:, 0] * fr.d_full, 0.1)
    assert (fr.d_full >= 0.3 - 1e-12).all() and (fr.rho <= 1.0).all() and (fr.rho >= 0.0).all()
    # a total far above the joint: no mass at Δ = 0, ρ_joint ≈ D_joint / D̂
    fr = fraction_draws(d, np.array(0.9), np.array(0.01), rng=0)
    assert float(fr.p_complete) < 1e-6
    assert np.median(fr.rho[:, 2]) == pytest.approx(0.3 / 0.9, rel=0.02)


def test_score_bins_defaults():
    rng = np.random.default_rng(2)
    score = np.stack([rng.integers(1, 6, (4, 3, 5)).astype(float), rng.uniform(0, 100, (4, 3, 5))])
    score[1, 0, 0, 0] = np.nan
    sb = coarsen_scores(score, ["likert", "judge"])
    assert sb.n_bins == [5, 3]  # one bin per Likert level; three quantile bins of a continuous score
    assert sb.joint_codes[0, 0, 0] == -1 and (sb.codes[0] >= 0).all()
    assert sb.n_joint == len(np.unique(sb.joint_codes[sb.joint_codes >= 0]))
    np.testing.assert_array_equal(sb.marginal_matrix(0).sum(1), 1.0)
    with pytest.raises(ModelSpecError, match="outside"):
        coarsen_scores(score, ["likert", "judge"], bins={"judge": [0, 10]})


def test_split_tree_covers_every_cell():
    keys = np.array([[0, 0], [0, 1], [1, 0], [2, 1], [2, 0]])
    nodes = hp._split_tree(keys)
    assert len(nodes) == len(keys) - 1  # a binary tree over 5 leaves
    # the product of the children's indicator along each path identifies every leaf
    depth = sum(M.sum(1) for M in nodes)
    assert (depth >= 1).all() and all(M.sum() <= len(keys) for M in nodes)


# ---------------------------------------------------------------------------------------- known truth
def test_bounds_and_ordering_hold_in_every_draw():
    ds, _ = simulate_outputs(8, 12, 8, n_a=3, width=2.0, weak_flip=0.35, seed=3)
    res = _fit(ds, window=1, n_draws=200)
    rho = res.data["rho_draws"].values  # (draw, K+1, mid_step)
    ok = np.isfinite(rho)
    assert ok.any()
    assert (rho[ok] >= 0).all() and (rho[ok] <= 1).all()
    joint = rho[:, -1:]
    assert (np.where(ok[:, :-1], rho[:, :-1] <= joint + 1e-12, True)).all()
    f = res.fractions()
    assert (f[["mean", "median", "lower", "upper"]].to_numpy() >= 0).all()
    assert (f[["mean", "median", "lower", "upper"]].to_numpy() <= 1).all()
    d = res.dissimilarity.data
    assert (d["d_op_lower"] >= 0).all() and (d["d_op_upper"] <= 1).all()
    assert f.attrs["ci_kind"] == "eti" and f.attrs["ci_prob"] == defaults.CI_PROB
    assert "equal-tailed" in f.attrs["interval_note"]


def test_bijection_and_irrelevant_at_fifty_samples():
    ds, truth = simulate_outputs(10, 12, 50, n_a=3, width=2.0, seed=4)
    res = _fit(ds, window=1)
    f = res.fractions()
    true = truth.fractions(1, boundary=_peak_boundary(res))
    assert f.loc["identity", "upper"] == 1.0 and f.loc["joint", "upper"] == 1.0  # ρ = 1 is inside
    assert f.loc["identity", "p_one"] > 0.1
    assert f.loc["irrelevant", "lower"] == 0.0 and f.loc["irrelevant", "median"] < 0.05
    for op in ("alignment", "parity"):
        t = true[op]["ratio_of_means"]
        assert f.loc[op, "lower"] - 0.05 <= t <= f.loc[op, "upper"] + 0.05, (op, t)


def test_no_change_anywhere_gives_zero_fractions_not_negative_ones():
    ds, _ = simulate_outputs(8, 12, 8, strength=0.0, seed=5)
    res = _fit(ds, window=1, curve=False)
    f = res.fractions()
    assert (f["lower"].fillna(0) >= 0).all()
    assert (f.loc[["alignment", "parity", "irrelevant"], "p_zero"] > 0.3).all()
    assert f.attrs["p_no_total_change"] > 0.5  # nothing changes at all: most draws leave ρ undefined


def test_reduced_calibration_runs_in_ci():
    """A reduced version of benchmarks/bench_decomposition_calibration.py (8 samples, window 1)."""
    spec = importlib.util.spec_from_file_location("calib", ROOT / "benchmarks" / "bench_decomposition_calibration.py")
    calib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calib)
    rows = []
    for seed in range(6):
        rows += calib.one_replicate(8, 1, seed=seed, n_draws=300)
    df = pd.DataFrame(rows)
    assert df["ordered"].all()  # 0 <= ρ_k <= ρ_joint <= 1 in every draw of every replicate
    mid = df[df["class"].isin(["0.2-0.5", "0.5-1"]) & (df["order_parameter"].isin(["alignment", "parity"]))]
    assert mid["cov94"].mean() >= 0.7
    zero = df[df["class"] == "0"]
    assert zero["cov94"].mean() >= 0.7


# -------------------------------------------------------------------------------------- API and storage
def test_locations_tables_and_storage(tmp_path):
    ds, _ = simulate_outputs(10, 6, 20, n_a=3, width=2.0, seed=6)
    res = _fit(ds, window=1, at=[42.0])
    f = res.fractions()
    assert list(f.index) == ["identity", "alignment", "parity", "irrelevant", "joint"]
    assert set(f.columns) >= {"mean", "median", "lower", "upper", "p_zero", "p_one", "estimable", "note"}
    assert "prompt-averaged" in f.attrs["estimand"] and f.attrs["step"] == res.peak_step
    g = res.fractions(42.0)
    assert g.attrs["requested_step"] == 42.0 and abs(g.attrs["step"] - 42.0) <= 5.0
    narrow = res.fractions(ci_prob=0.5)
    assert np.all(narrow["upper"] - narrow["lower"] <= f["upper"] - f["lower"] + 1e-12)
    per_prompt = res.fractions(per_prompt=True)
    assert per_prompt.shape[0] == 5 * 6 and (per_prompt[["lower", "upper"]].to_numpy() <= 1).all()
    with pytest.raises(ModelSpecError, match="location"):
        res.fractions("nowhere")
    with pytest.raises(ModelSpecError, match="fit"):
        res.fractions(3.0)
    curve = res.curve()
    assert set(curve["order_parameter"]) == set(f.index) and curve.attrs["ci_kind"] == "eti"
    tree = xr.DataTree(name="analysis")
    tree["decomposition"] = res.to_datatree()
    path = tmp_path / "analysis.nc"
    tree.to_netcdf(path, engine="netcdf4")
    back = DecompositionResult.from_datatree(xr.open_datatree(path, engine="netcdf4"))
    pd.testing.assert_frame_equal(back.fractions(), f)
    pd.testing.assert_frame_equal(back.fractions(42.0), g)
    alone = DecompositionResult.load(res.save(tmp_path / "decomposition.nc"))  # the shared save/load
    pd.testing.assert_frame_equal(alone.fractions(), f)


def test_named_locations_from_transition_table_and_plots():
    import matplotlib.figure

    ds, _ = simulate_outputs(10, 4, 20, seed=8)
    tau = pd.DataFrame({"mean": [44.0, 71.0], "lower": [40.0, 60.0], "upper": [50.0, 80.0]}, index=["alignment", "parity"])
    res = _fit(ds, window=2, at=tau, n_draws=100)
    assert list(res.data["location"].values) == ["peak", "tau alignment", "tau parity"]
    assert res.fractions("tau parity").attrs["requested_step"] == 71.0
    lo, hi = res.peak_interval()
    assert lo <= res.peak_step <= hi
    for fig in (res.plot_fractions(), res.plot_curve(), res.plot_transition(tau), res.plot_dissimilarity()):
        assert isinstance(fig, matplotlib.figure.Figure)
    with pytest.raises(ModelSpecError, match="unique"):
        pb.decompose(ds, window=2).fit(n_draws=50, at={"peak": 30})


def test_broken_total_is_reported_as_a_dpi_conflict():
    """log-probs not at the sampling temperature (shrunk) understate D(full): a DPIViolationWarning, never ρ > 1."""
    ds, _ = simulate_outputs(10, 6, 60, n_a=3, width=2.0, seed=9)
    bad = ds.assign(logp=ds["logp"] * 0.05)
    with pytest.warns(DPIViolationWarning, match="data-processing inequality"):
        res = pb.decompose(bad, window=1).fit(n_draws=200, curve=False)
    assert (res.fractions()[["lower", "upper"]].to_numpy() <= 1.0).all()


def test_bad_inputs():
    ds, _ = simulate_outputs(8, 2, 20, seed=7)
    cases = [
        (lambda: pb.decompose(ds.drop_vars("logp"), window=2), RunDataError, "total change"),
        (lambda: pb.decompose(ds, window=9), ModelSpecError, "larger than the grid"),
        (lambda: pb.decompose(ds, window=2).fit(n_draws=3), ModelSpecError, "n_draws"),
        (lambda: pb.decompose(ds, window=2).fit(ci_prob=2.0), ModelSpecError, "ci_prob"),
        (lambda: pb.decompose(ds, window=2).fit(p_complete=1.0), ModelSpecError, "p_complete"),
        (lambda: pb.decompose(ds, window=2).fit(at=[np.nan]), ModelSpecError, "finite"),
        (lambda: pb.decompose(ds, window=2, prefix_tokens=8), RunDataError, "logp_prefix"),
        (lambda: pb.decompose(ds.drop_vars(["score", "score_status", "scale_min", "scale_max"]), window=2), RunDataError,
         "score"),
    ]
    for call, err, msg in cases:
        with pytest.raises(err, match=msg) as info:
            call()
        assert isinstance(info.value, PhasebayesError)
    with pytest.raises(ModelSpecError):
        DecompositionResult.from_datatree(xr.DataTree(name="x"))


def test_demo_example_run_fractions_are_printable():
    """The shipped demo run: no negative fraction, joint >= every order parameter or reported not estimable."""
    ds = pb.open_run(ROOT / "data" / "example_run.nc")
    res = _fit(ds, window=1, curve=False)
    f = res.fractions()
    est = f[f["estimable"]]
    assert (est[["mean", "lower", "upper"]].to_numpy() >= 0).all() and (est[["upper"]].to_numpy() <= 1).all()
    if f.loc["joint", "estimable"]:
        assert (f["median"].drop("joint") <= f.loc["joint", "median"] + 1e-12).all()
    else:
        assert "not estimable" in f.loc["joint", "note"] and "joint cell" in f.loc["joint", "note"]
    assert f.loc["bold_phrase", "lower"] > 0.02  # the phrase's change is a real share of the total
    length = __import__("json").loads(f.attrs["answer_length"])
    assert length["max_new_tokens"] == 40 and 0 < length["mean_answer_tokens"] <= 40
