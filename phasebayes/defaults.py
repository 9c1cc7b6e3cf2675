"""Global defaults, in one place (like ``arviz.rcParams``).

``CI_PROB`` and ``CI_KIND`` are used by every summary table unless a call overrides them; every table
records the values it used in ``DataFrame.attrs`` so that no interval is ever unlabeled.
"""

from __future__ import annotations

CI_PROB: float = 0.94
"""Default probability mass of credible intervals."""

CI_KIND: str = "hdi"
"""Default interval kind: ``"hdi"`` (highest density) or ``"eti"`` (equal tailed)."""

RHAT_MAX: float = 1.01
"""R-hat above this triggers a :class:`~phasebayes.errors.DiagnosticsWarning`."""

ESS_MIN: float = 400.0
"""Bulk or tail ESS below this triggers a :class:`~phasebayes.errors.DiagnosticsWarning`."""

DEFAULT_SCALE: tuple[float, float] = (0.0, 100.0)
"""Scale assumed for an order parameter whose scale is not declared (plain 0–100 judge scores)."""
