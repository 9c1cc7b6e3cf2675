"""The library replacements of hand-written numerics give the numbers the hand code gave."""

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


def test_hdi_is_arviz_shortest_interval_of_floor_prob_n_plus_one_draws():
    """arviz-stats' HDI (ArviZ's convention): the shortest interval holding floor(prob n) + 1 draws."""
    x = np.random.default_rng(2).gamma(2.0, size=(3, 1000))
    x[1, :7] = np.nan  # NaN draws are skipped
    lo, hi = interval_along(x, 0.94, "hdi")
    for row, a, b in zip(x, lo, hi):
        xs = np.sort(row[np.isfinite(row)])
        k = int(np.floor(0.94 * xs.size)) + 1
        j = int(np.argmin(xs[k - 1:] - xs[: xs.size - k + 1]))
        assert (float(a), float(b)) == (xs[j], xs[j + k - 1])
        assert np.mean((xs >= a) & (xs <= b)) >= 0.94


def test_transition_curve_logistic_matches_hand_formula():
    t = np.linspace(0, 100, 41)
    hand = 2.0 + (7.0 - 2.0) / (1.0 + np.exp(-(t - 40.0) / 5.0))
    np.testing.assert_allclose(transition_curve(t, 40.0, 5.0, 2.0, 7.0), hand, rtol=1e-12)
