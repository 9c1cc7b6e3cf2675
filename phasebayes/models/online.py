"""Online posterior of each order parameter's transition while a fine-tuning run is in progress.

:class:`OnlineTransition` collects the probe scores of each checkpoint as it is saved and answers, at
any time, with the exact grid posterior of :mod:`phasebayes.models.grid_step` (no MCMC, milliseconds):
τ uniform over the whole planned run ``[0, max_step]`` — so the posterior can say the transition has
not happened yet — the levels integrated out. Reported per order parameter: ``p_change``, the
posterior probability (prior 1/2) that it changes at all, from the Bayes factor of the transition model
against one constant level; ``p_transition`` = P(it changes and τ ≤ the latest checkpoint); τ so far
(median, 94 % HDI, given a change) and the lag of τ behind the running peak of the gradient norm. The same data refitted offline give the same numbers (the fit is deterministic
given the scores and the seed), which ``tests/test_monitor.py`` checks. Docs: ``docs/live.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from ..errors import ArgumentError, ConfigError
from ..intervals import summarize_draws
from . import grid_step

LIVE_CI_PROB = 0.94

_RULE = re.compile(r"^\s*P\(\s*transition\s*:\s*([^)]+?)\s*\)\s*(>=|>|<=|<)\s*([0-9]*\.?[0-9]+)\s*$")


def parse_rule(rule: str) -> tuple[str, str, float]:
    """``"P(transition: alignment) > 0.9"`` → ``("alignment", ">", 0.9)``; :class:`ConfigError` otherwise."""
    m = _RULE.match(rule or "")
    if not m or not 0.0 <= float(m.group(3)) <= 1.0:
        raise ConfigError(f"stop rule {rule!r} not understood; write it as 'P(transition: NAME) > 0.9' (NAME an order "
                          "parameter, a probability between 0 and 1, comparison >, >=, < or <=).")
    return m.group(1), m.group(2), float(m.group(3))


def holds(value: float, op: str, threshold: float) -> bool:
    """Whether ``value op threshold`` holds (``op`` one of >, >=, <, <=)."""
    return {">": value > threshold, ">=": value >= threshold, "<": value < threshold, "<=": value <= threshold}[op]


class OnlineTransition:
    """Probe scores per checkpoint and the grid posterior of τ for every order parameter.

    ``max_step``: the last training step of the planned run (the τ prior's upper end).
    """

    def __init__(self, max_step: int, order_parameters: Sequence[str] | None = None, seed: int = 0):
        if max_step < 1:
            raise ArgumentError(f"max_step is the last training step of the run (≥ 1), got {max_step!r}.")
        self.max_step = int(max_step)
        self.order_parameters = list(order_parameters) if order_parameters is not None else None
        self.scores: dict[str, dict[int, list[float]]] = {}
        self.seed = seed
        self.grid = grid_step.Grid(np.linspace(0.0, float(max_step), 401),
                                   np.geomspace(max_step / 400, max_step / 4, 10))

    def add(self, step: int, scores: Mapping[str, Sequence[float]]) -> None:
        """Add the probe scores of the checkpoint at ``step`` (NaN = a failed judgement)."""
        for op, values in scores.items():
            if self.order_parameters is not None and op not in self.order_parameters:
                continue
            self.scores.setdefault(str(op), {}).setdefault(int(step), []).extend(np.asarray(values, float).ravel().tolist())

    @property
    def steps(self) -> list[int]:
        return sorted({s for by_step in self.scores.values() for s in by_step})

    def _sums(self, op: str) -> grid_step.Sums | None:
        """The per-checkpoint sums of ``op`` so far; None with fewer than 2 finite scores (prior only)."""
        sums = grid_step.sums_by_step(self.scores[op])
        return sums if sums.n.sum() >= 2 else None

    def tau_draws(self, op: str, n: int = 4000) -> np.ndarray:
        """Posterior draws of τ (training steps) from the checkpoints seen so far."""
        sums = self._sums(op)
        if sums is None:
            return np.random.default_rng(self.seed).uniform(0, self.max_step, n)  # the prior
        logp, _ = grid_step.log_posterior(self.grid, sums)
        return grid_step.tau_draws(self.grid, logp, n=n, seed=self.seed)

    def p_change(self, op: str) -> float:
        """Posterior probability that the order parameter changes at all in the run (prior 1/2): the Bayes
        factor of the transition model against one constant level, from the checkpoints seen so far."""
        sums = self._sums(op)
        return 0.5 if sums is None else float(special.expit(grid_step.log_bayes_factor(self.grid, sums)))

    def summary(self, grad_norm: pd.Series | None = None) -> pd.DataFrame:
        """One row per order parameter: ``p_transition``, τ median and 94 % HDI, lag to the grad-norm peak.

        ``grad_norm``: the gradient norm logged so far, indexed by training step (the running peak is
        its argmax); the lag is τ − peak step, in training steps, with its 94 % HDI.
        """
        now = max(self.steps) if self.steps else 0
        peak = int(grad_norm.idxmax()) if grad_norm is not None and len(grad_norm.dropna()) else None
        rows = {}
        for op in self.scores:
            draws = self.tau_draws(op)
            tau = summarize_draws({"t": draws}, ci_prob=LIVE_CI_PROB, ci_kind="hdi").iloc[0]
            p_change = self.p_change(op)
            row = {"step": now, "p_transition": p_change * float(np.mean(draws <= now)), "p_change": p_change,
                   "tau_median": float(tau["median"]),
                   "tau_lower": float(tau["lower"]), "tau_upper": float(tau["upper"]),
                   "grad_peak_step": peak, "lag_median": np.nan, "lag_lower": np.nan, "lag_upper": np.nan}
            if peak is not None:
                lag = summarize_draws({"l": draws - peak}, ci_prob=LIVE_CI_PROB, ci_kind="hdi").iloc[0]
                row.update(lag_median=float(lag["median"]), lag_lower=float(lag["lower"]), lag_upper=float(lag["upper"]))
            rows[op] = row
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "order_parameter"
        table.attrs.update(ci_prob=LIVE_CI_PROB, ci_kind="hdi", units="training steps")
        return table

