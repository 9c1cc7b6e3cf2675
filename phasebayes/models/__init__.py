"""Bayesian models: change points in judged scores, and the gradient-norm peak (no torch, no judge)."""

from .changepoint import ChangePointModel, ChangePointResult, load_result
from .gradient_peak import GradientPeak, GradientPeakResult

__all__ = ["ChangePointModel", "ChangePointResult", "GradientPeak", "GradientPeakResult", "load_result"]
