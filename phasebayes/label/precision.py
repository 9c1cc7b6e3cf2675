"""How many human ratings are needed: precision of judge-vs-human agreement by simulation.

:func:`agreement_precision` simulates a human and a judge who both measure the same answers with
independent noise (true score ~ Normal(50, 25) on a 0-100 scale; noise set so that the true
reliability — the correlation of the two measurements, which is what interval alpha and ICC(A,1)
estimate for unbiased raters — is ``alpha``), estimates Krippendorff's interval alpha with its
percentile-bootstrap interval (:func:`phasebayes.judge.reliability.agreement`) for ``n`` rated
answers, and reports the median half-width of the interval and its coverage of the truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..defaults import CI_PROB
from ..judge.reliability import agreement

__all__ = ["agreement_precision"]


def agreement_precision(n_ratings=(30, 60, 120, 240, 480), alphas=(0.5, 0.7, 0.9), *, n_rep: int = 200,
                        n_boot: int = 500, ci_prob: float | None = None, method: str = "alpha", seed: int = 0) -> pd.DataFrame:
    """Median half-width and coverage of the ``ci_prob`` bootstrap interval of agreement, per (n, true alpha).

    Returns a DataFrame indexed by ``(n_ratings, alpha)`` with ``half_width`` (median over ``n_rep``
    simulated studies), ``coverage`` (share of intervals containing the true value) and
    ``mean_estimate``; ``attrs`` hold ``ci_prob``, ``n_rep`` and the method.
    """
    ci_prob = CI_PROB if ci_prob is None else float(ci_prob)
    rng = np.random.default_rng(seed)
    rows = {}
    for n in n_ratings:
        for a in alphas:
            sd_noise = 25.0 * np.sqrt((1 - a) / a)
            hw, hit, est = [], [], []
            for _ in range(n_rep):
                truth = rng.normal(50, 25, n)
                data = truth[:, None] + rng.normal(0, sd_noise, (n, 2))
                r = agreement(data, method=method, n_boot=n_boot, ci_prob=ci_prob, seed=int(rng.integers(2**31)))
                hw.append((r["upper"] - r["lower"]) / 2)
                hit.append(r["lower"] <= a <= r["upper"])
                est.append(r["estimate"])
            rows[(int(n), float(a))] = {"half_width": float(np.median(hw)), "coverage": float(np.mean(hit)),
                                        "mean_estimate": float(np.mean(est))}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(list(rows), names=["n_ratings", "alpha"])
    table.attrs.update(ci_prob=ci_prob, ci_kind="bootstrap-percentile", n_rep=n_rep, method=method)
    return table
