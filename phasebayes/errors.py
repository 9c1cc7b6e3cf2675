"""Exceptions raised by phasebayes.

Every error a user can cause by passing bad input is a :class:`PhasebayesError`, whose message names
the problem and the fix. Catch ``PhasebayesError`` to handle all of them.
"""

from __future__ import annotations


class PhasebayesError(Exception):
    """Base class of every error phasebayes raises on purpose."""


class RunDataError(PhasebayesError, ValueError):
    """The run dataset (or the table it is built from) breaks the run-dataset contract (``docs/storage.md``)."""


class ModelSpecError(PhasebayesError, ValueError):
    """A model was asked for with options that do not fit together or do not fit the data."""


class OutputExistsError(PhasebayesError, FileExistsError):
    """Writing would overwrite an existing output; pass ``overwrite=True`` to replace it."""


class ConfigError(PhasebayesError, ValueError):
    """A run configuration is invalid (unknown key, missing file, invalid value)."""


class ArgumentError(PhasebayesError, ValueError):
    """A function argument has a value the function cannot use (wrong length, out of range, unknown option)."""


class UnsupportedModelError(PhasebayesError, RuntimeError):
    """The language model cannot do what was asked of it (e.g. it returns no key/value cache)."""


class DiagnosticsWarning(UserWarning):
    """MCMC diagnostics are bad (R-hat, ESS or divergences): do not trust the result as it is."""


class DPIViolationWarning(UserWarning):
    """The order parameters' change exceeds the total change (data-processing inequality): the
    estimators or the data are inconsistent (e.g. ``logp`` not at the sampling temperature)."""


class JudgeCostWarning(UserWarning):
    """A judge setting costs more than it has to (e.g. a rubric prefix too short for prompt caching)."""


class TrainingLogWarning(UserWarning):
    """The training log and the checkpoints disagree (steps beyond the last checkpoint, missing signals)."""
