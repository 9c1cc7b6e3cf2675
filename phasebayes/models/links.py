"""Link functions shared by the change-point model and its results (numpy and PyTensor)."""

from __future__ import annotations

import numpy as np

from ..dataset import order_parameter_scale

_EPS = 1e-9


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _inv_link(family: str, x, pt=None):
    if family in ("beta", "binomial"):
        return (pt.sigmoid(x) if pt is not None else _logistic(x))
    if family in ("poisson", "negative_binomial"):
        return (pt.exp(x) if pt is not None else np.exp(x))
    return x


class _ScoreScale:
    """Convert a model mean (observation scale) of order parameter k into score units."""

    def __init__(self, model, k: int):
        op = model.order_parameters[k]
        self.family = model.config.likelihood[op]
        self.lo, self.hi = order_parameter_scale(model.ds, op)
        self.n = max(int(model.n_finite[k]), 2)

    def __call__(self, mean):
        if self.family == "beta":
            unit = (mean * self.n - 0.5) / (self.n - 1)  # undo the squeeze
            return self.lo + (self.hi - self.lo) * unit
        if self.family == "ordinal":  # category index -> score
            return self.lo + mean
        return mean
