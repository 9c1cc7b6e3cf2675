"""phasebayes — Bayesian analysis of behavioural phase transitions during LLM fine-tuning.

Pipeline: train → generate → judge → run dataset → analysis → report. The statistics
(:mod:`phasebayes.models`, :mod:`phasebayes.dissimilarity`, :mod:`phasebayes.decomposition`) never
import torch or the judges. Public names are imported lazily so that ``import phasebayes`` is fast.
"""

from __future__ import annotations

import importlib

from .version import __version__

from .dataset import STATUS, from_dataframe, open_run, save_run, validate  # noqa: E402
from .errors import (  # noqa: E402
    ArgumentError,
    ConfigError,
    DiagnosticsWarning,
    ModelSpecError,
    OutputExistsError,
    PhasebayesError,
    RunDataError,
)
from .simulate import SimulationTruth, simulate_run  # noqa: E402

# Imported eagerly: the module and the function share a name, and a lazy import would let the module
# object shadow the function once any code imports ``phasebayes.dissimilarity``.
from .dissimilarity import dissimilarity  # noqa: E402

_LAZY = {
    "ChangePointModel": "phasebayes.models.changepoint",
    "ChangePointResult": "phasebayes.models.changepoint",
    "GradientPeak": "phasebayes.models.gradient_peak",
    "GradientPeakResult": "phasebayes.models.gradient_peak",
    "load_result": "phasebayes.models.changepoint",
    "judge_run": "phasebayes.judge",
    "decompose": "phasebayes.decomposition",
    "analyze": "phasebayes.analysis",
    "Analysis": "phasebayes.analysis",
    "migrate_run": "phasebayes.dataset",
    "responses": "phasebayes.texts",
    "iter_responses": "phasebayes.texts",
    "from_counts": "phasebayes.readers.aggregated",
    "from_summaries": "phasebayes.readers.aggregated",
    "read_training_log": "phasebayes.readers.training_logs",
    "read_trainer_state": "phasebayes.readers.trainer_state",
    "read_judged_folder": "phasebayes.readers.judged",
    "lora_weight_signals": "phasebayes.readers.weights",
    "JudgeMeasurement": "phasebayes.models.measurement",
    "MultiRunChangePointModel": "phasebayes.models.multirun",
    "MultiRunResult": "phasebayes.models.multirun_result",
    "simulate_study": "phasebayes.simulate",
    "StudyTruth": "phasebayes.simulate",
    "evaluate_adaptively": "phasebayes.adaptive",
    "SimulatedSampler": "phasebayes.simulate_sampler",
    "CheckpointSampler": "phasebayes.adaptive_sampler",
    "TransitionMonitor": "phasebayes.monitor",
}

__all__ = [
    "__version__",
    "STATUS",
    "from_dataframe",
    "open_run",
    "save_run",
    "validate",
    "simulate_run",
    "SimulationTruth",
    "PhasebayesError",
    "RunDataError",
    "ModelSpecError",
    "OutputExistsError",
    "ConfigError",
    "ArgumentError",
    "DiagnosticsWarning",
    "dissimilarity",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phasebayes' has no attribute {name!r}")
