"""Public import path of the decomposition; the implementation lives in :mod:`phasebayes.stats`."""

from .errors import DPIViolationWarning
from .stats.decomposition import Decomposition, DecompositionResult, decompose

__all__ = ["decompose", "Decomposition", "DecompositionResult", "DPIViolationWarning"]
