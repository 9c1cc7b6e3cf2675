"""A simulated sampler for adaptive evaluation: ``sample(step, prompt, n) -> {order parameter: scores}``.

:class:`SimulatedSampler` plays the part of "generate n answers at this checkpoint and judge them" with
a known truth, so that :func:`phasebayes.evaluate_adaptively` can be tested and benchmarked (and tried
by a user before spending a judge budget). Conventions follow :func:`phasebayes.simulate_run`: 0–100
judge scores with beta noise of concentration ``concentration``, a sigmoid transition of ``width``
steps between ``levels`` (before, after), prompt offsets of both levels on the logit scale (zero-sum,
so the population levels are the prompt averages). Prompt transition steps are
``tau + Normal(0, prompt_tau_sd)`` drawn independently per prompt (``tau`` is the population value a
new prompt would scatter around).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.special import expit, logit

from .errors import ArgumentError
from .simulate import _zero_sum, transition_curve


class SimulatedSampler:
    """Callable ``sample(step, prompt, n)`` with a known truth; ``calls`` lists every (step, prompt, n) asked.

    Parameters: ``tau`` (population transition step per order parameter, training steps), ``prompts``
    (ids), ``width`` (steps), ``levels`` ((before, after) expected 0–100 score), ``concentration``
    (beta φ: sd ≈ 100·sqrt(μ(1 − μ)/(1 + φ))), ``prompt_level_sd`` (logit scale), ``prompt_tau_sd``
    (steps), ``seed``.
    """

    def __init__(self, tau: Mapping[str, float], prompts: Sequence[str], *, width: float = 10.0,
                 levels: tuple[float, float] = (80.0, 30.0), concentration: float = 20.0,
                 prompt_level_sd: float = 0.3, prompt_tau_sd: float = 0.0, seed: int = 0):
        if not tau or not prompts:
            raise ArgumentError("SimulatedSampler needs at least one order parameter in tau and one prompt.")
        if not 0 < levels[0] < 100 or not 0 < levels[1] < 100:
            raise ArgumentError(f"levels are expected 0–100 scores strictly inside (0, 100), got {levels}.")
        self.rng = np.random.default_rng(seed)
        self.tau = {str(k): float(v) for k, v in tau.items()}
        self.prompts = [str(p) for p in prompts]
        self.width, self.concentration = float(width), float(concentration)
        P = len(self.prompts)
        self.before = {op: expit(logit(levels[0] / 100) + _zero_sum(self.rng.normal(0, prompt_level_sd, P))) for op in self.tau}
        self.after = {op: expit(logit(levels[1] / 100) + _zero_sum(self.rng.normal(0, prompt_level_sd, P))) for op in self.tau}
        self.prompt_tau = {op: t + self.rng.normal(0, prompt_tau_sd, P) for op, t in self.tau.items()}
        self.calls: list[tuple[int, str, int]] = []

    def __call__(self, step: int, prompt: str, n: int) -> dict[str, np.ndarray]:
        """``n`` simulated 0–100 scores per order parameter for ``prompt`` at training step ``step``."""
        if prompt not in self.prompts:
            raise ArgumentError(f"unknown prompt {prompt!r}; the simulator knows {self.prompts[:5]}...")
        self.calls.append((int(step), prompt, int(n)))
        j = self.prompts.index(prompt)
        out = {}
        for op in self.tau:
            mu = float(transition_curve(np.array([float(step)]), self.prompt_tau[op][j], self.width,
                                        self.before[op][j], self.after[op][j])[0])
            phi = self.concentration
            out[op] = 100 * self.rng.beta(mu * phi, (1 - mu) * phi, int(n))
        return out
