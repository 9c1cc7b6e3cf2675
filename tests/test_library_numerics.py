"""The library replacements of hand-written numerics give the numbers the hand code gave (issue 15)."""

from __future__ import annotations

import numpy as np

from phasebayes.intervals import interval_along
from phasebayes.simulate import transition_curve


def test_eti_matches_nanquantile_and_ignores_nan():
    x = np.random.default_rng(1).normal(size=(4, 3, 500))
    x[1, 1, :50] = np.nan
    x[0, 0] = np.nan
    lo, hi = interval_along(x, 0.9, "eti")
    rest = np.ones(x.shape[:2], bool)
    rest[0, 0] = False
    np.testing.assert_allclose(lo[rest], np.nanquantile(x[rest], 0.05, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(hi[rest], np.nanquantile(x[rest], 0.95, axis=-1), rtol=1e-12)
    assert np.isnan(lo[0, 0]) and np.isnan(hi[0, 0])


def test_hdi_is_the_shortest_interval_of_ceil_prob_n_draws():
    x = np.random.default_rng(2).gamma(2.0, size=1000)
    lo, hi = interval_along(x, 0.94, "hdi")
    xs = np.sort(x)
    k = int(np.ceil(0.94 * x.size))
    j = int(np.argmin(xs[k - 1:] - xs[: x.size - k + 1]))
    assert (float(lo), float(hi)) == (xs[j], xs[j + k - 1])
    assert np.mean((x >= lo) & (x <= hi)) >= 0.94


def test_transition_curve_logistic_matches_hand_formula():
    t = np.linspace(0, 100, 41)
    hand = 2.0 + (7.0 - 2.0) / (1.0 + np.exp(-(t - 40.0) / 5.0))
    np.testing.assert_allclose(transition_curve(t, 40.0, 5.0, 2.0, 7.0), hand, rtol=1e-12)
