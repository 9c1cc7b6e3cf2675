"""Bayesian models: change points in judged scores, and the gradient-norm peak (no torch, no judge)."""

from .changepoint import ChangePointModel, ChangePointResult, load_result
from .gradient_peak import GradientPeak, GradientPeakResult
from .multirun import MultiRunChangePointModel
from .multirun_result import MultiRunResult

__all__ = ["ChangePointModel", "ChangePointResult", "GradientPeak", "GradientPeakResult", "load_result",
           "MultiRunChangePointModel", "MultiRunResult"]
