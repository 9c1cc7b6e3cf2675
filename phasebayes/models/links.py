"""Link functions shared by the change-point model and its results (numpy and PyTensor)."""

from __future__ import annotations

from scipy import special

from ..dataset import order_parameter_scale
from .family_base import EPS as _EPS  # noqa: F401  (re-exported)
from .families import get_family

_logistic = special.expit


def _inv_link(family: str, x, pt=None):
    """Linear predictor -> mean of ``family`` (numpy, or PyTensor given the module ``pt``)."""
    return get_family(family).inv_link(x, pt)


class _ScoreScale:
    """Convert a model mean (observation scale) of order parameter k into score units."""

    def __init__(self, model, k: int):
        op = model.order_parameters[k]
        self.family = get_family(model.config.likelihood[op])
        self.lo, self.hi = order_parameter_scale(model.ds, op)
        self.n = max(int(model.n_finite[k]), 2)

    def __call__(self, mean):
        return self.family.to_score(mean, self.lo, self.hi, self.n)
