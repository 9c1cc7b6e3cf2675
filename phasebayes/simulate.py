"""Synthetic runs with known truth, for tests, calibration and benchmarks.

:func:`simulate_run` draws a run dataset from the generative model that
:class:`~phasebayes.ChangePointModel` fits (``docs/changepoint-models.md``) plus a gradient-norm trace with a known
peak (§2.3), and returns the truth next to the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
import pandas as pd
import xarray as xr
from scipy.special import expit

from .dataset import STATUS, assemble_run, training_log_dataset
from .errors import ModelSpecError
from .models.families import FAMILIES as _FAMILY_OBJECTS
from .models.families import get_family

__all__ = ["simulate_run", "simulate_study", "SimulationTruth", "StudyTruth", "FAMILIES", "transition_curve"]

FAMILIES = tuple(_FAMILY_OBJECTS)

# Default levels (before, after) of the expected score, in score units (each family's ``default_levels``).
_DEFAULT_LEVELS = {name: f.default_levels for name, f in _FAMILY_OBJECTS.items()}


def transition_curve(t: np.ndarray, tau: float, width: float, before: float, after: float, kind: str = "sigmoid") -> np.ndarray:
    """Expected score at steps ``t``: ``before + (after - before) * s((t - tau) / width)``.

    ``s`` is the logistic function (``kind="sigmoid"``) or the unit step (``kind="step"``: ``t >= tau``
    is after). ``tau`` is the step where the expected score is halfway between the levels.
    """
    t = np.asarray(t, dtype=float)
    if kind == "step":
        s = (t >= tau).astype(float)
    else:
        s = expit((t - tau) / width)
    return before + (after - before) * s


@dataclass
class SimulationTruth:
    """The parameters a simulated run was drawn from (all steps in training-step units)."""

    likelihood: dict[str, str]
    transition: str
    tau: dict[str, float]
    width: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    prompt_tau: dict[str, np.ndarray]
    prompt_before: dict[str, np.ndarray]
    prompt_after: dict[str, np.ndarray]
    nuisance: dict[str, float]
    grad_peak: float | None
    grad_spike_steps: list[int] = field(default_factory=list)

    def cell_mean(self, order_parameter: str, steps: np.ndarray) -> np.ndarray:
        """Expected score per (step, prompt), shape ``(len(steps), n_prompts)``."""
        kind = self.transition
        w = self.width[order_parameter]
        return np.stack(
            [
                transition_curve(steps, tau_p, w, b, a, kind)
                for tau_p, b, a in zip(
                    self.prompt_tau[order_parameter],
                    self.prompt_before[order_parameter],
                    self.prompt_after[order_parameter],
                )
            ],
            axis=1,
        )


def _per_op(value, ops: list[str], default, name: str):
    if value is None:
        return {op: default(i, op) for i, op in enumerate(ops)}
    if isinstance(value, Mapping):
        missing = set(ops) - set(value)
        if missing:
            raise ModelSpecError(f"{name} lacks order parameter(s) {sorted(missing)}.")
        return {op: value[op] for op in ops}
    if isinstance(value, (str, float, int, np.floating, np.integer)) or (
        isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], (tuple, list))
    ):
        return {op: value for op in ops}
    if isinstance(value, Sequence) and len(value) == len(ops):
        return dict(zip(ops, value))
    raise ModelSpecError(f"{name} must be a scalar, one value per order parameter, or a dict; got {value!r}.")


def _link(family: str):
    fam = get_family(family)
    return fam.link_fn, fam.inv_link


def _family_options(concentration: float, noise_sd: float, dispersion: float, extra: Mapping | None) -> dict:
    """Nuisance values and other options of every family for the simulator (``family_options`` overrides)."""
    opts = {k: v for f in _FAMILY_OBJECTS.values() for k, v in f.sim_defaults.items()}
    unknown = set(extra or {}) - set(opts)
    if unknown:
        raise ModelSpecError(f"unknown family_options {sorted(unknown)}; known: {sorted(opts)}.")
    return {**opts, "concentration": concentration, "noise_sd": noise_sd, "dispersion": dispersion, **(extra or {})}


def _ordinal_link(cuts: np.ndarray):
    """(expected score on 1..C -> latent logit level, latent level -> expected score) for cut points."""
    from scipy.optimize import brentq

    def inv(eta):
        eta = np.asarray(eta, dtype=float)
        cdf = expit(cuts - eta[..., None])
        return 1.0 + (1.0 - cdf).sum(-1)  # E[score] = 1 + Σ_c P(y > c)

    def link(mean):
        return brentq(lambda e: float(inv(e)) - mean, -30.0, 30.0)

    return link, inv


def _zero_sum(x: np.ndarray) -> np.ndarray:
    return x - x.mean() if x.size > 1 else np.zeros_like(x)


def simulate_run(
    *,
    n_steps: int = 25,
    n_prompts: int = 6,
    n_samples: int = 20,
    order_parameters: Sequence[str] | None = None,
    likelihood: str | Mapping[str, str] = "beta",
    transition: str = "sigmoid",
    tau: float | Sequence[float] | Mapping[str, float] | None = None,
    width: float | Sequence[float] | Mapping[str, float] | None = None,
    levels: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
    prompt_tau_sd: float = 0.0,
    prompt_level_sd: float = 0.0,
    concentration: float = 8.0,
    noise_sd: float = 1.0,
    dispersion: float = 5.0,
    n_categories: int | Mapping[str, int] = 5,
    cutpoints: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    family_options: Mapping[str, float] | None = None,
    missing_fraction: float = 0.0,
    max_step: int = 1000,
    uneven_steps: bool = False,
    integer_scores: bool = True,
    grad_peak: float | None = None,
    grad_noise: float = 0.15,
    n_grad_spikes: int = 2,
    seed: int | np.random.Generator | None = 0,
) -> tuple[xr.Dataset, SimulationTruth]:
    """Simulate a run with known transitions per order parameter.

    Parameters
    ----------
    n_steps, n_prompts, n_samples
        Checkpoints, prompts and samples per (checkpoint, prompt).
    order_parameters
        Names (default ``["alignment", "coherence", "verbosity"][:3]``).
    likelihood
        Score family per order parameter: ``"beta"`` (0–100 judge scores; small ``concentration``
        gives bimodal scores with mass at 0 and 100), ``"binomial"`` (0/1 indicators), ``"normal"``,
        ``"poisson"``, ``"negative_binomial"`` (counts).
    transition
        ``"sigmoid"`` (logistic of width ``width`` steps) or ``"step"``.
    tau, width, levels
        Population transition step, width (steps) and (before, after) expected score per order
        parameter; defaults spread τ over the middle of the run, width 2.5 % of the run, levels from
        ``_DEFAULT_LEVELS``.
    prompt_tau_sd, prompt_level_sd
        Prompt-level deviations: τ in steps, levels on the link scale (logit/log/identity);
        deviations are zero-sum across prompts, so the population values are the prompt means.
    concentration, noise_sd, dispersion
        Beta φ, normal σ, negative-binomial α (variance μ + μ²/α).
    family_options
        Options of the other families by name (each family's ``sim_defaults``), e.g.
        ``{"zero_inflation": 0.3, "n_trials": 10}`` for ``zero_inflated_binomial``.
    n_categories, cutpoints
        ``ordinal``: scores 1..n_categories (Likert; one value or a dict per order parameter) from a cumulative-logit model with these cut
        points (default evenly spaced from -2 to 2); ``levels`` are expected scores, prompt level
        offsets are on the latent logit scale, and during the transition a score comes from the after
        distribution with probability s(t) (the mixture :class:`~phasebayes.ChangePointModel` fits).
    missing_fraction
        Fraction of scores set to NaN (status ``missing`` / ``api_error`` / ``refusal``).
    max_step, uneven_steps
        Last checkpoint step; uneven spacing puts more checkpoints early in training.
    grad_peak, grad_noise, n_grad_spikes
        Gradient-norm trace over every optimiser step 1..max_step: a smooth bump at ``grad_peak``
        (default 10 % of the run before the earliest τ) on a decaying baseline, log-normal noise of
        sd ``grad_noise`` and ``n_grad_spikes`` isolated spikes (×6–10).
    seed
        Seed or Generator; the same seed gives the same run.

    Returns
    -------
    (run dataset, :class:`SimulationTruth`)
    """
    rng = np.random.default_rng(seed)
    ops = list(order_parameters) if order_parameters is not None else ["alignment", "coherence", "verbosity"]
    fam = _per_op(likelihood, ops, lambda i, op: "beta", "likelihood")
    for op, f in fam.items():
        if f not in FAMILIES:
            raise ModelSpecError(f"unknown likelihood {f!r} for '{op}'; choose one of {FAMILIES}.")
    if transition not in ("sigmoid", "step"):
        raise ModelSpecError(f"transition must be 'sigmoid' or 'step', got {transition!r}.")
    if n_steps < 3:
        raise ModelSpecError("n_steps must be at least 3.")
    opts = _family_options(concentration, noise_sd, dispersion, family_options)

    if uneven_steps:
        u = np.linspace(0.0, 1.0, n_steps)
        steps = np.unique(np.round(max_step * u**1.6).astype(int))
        while len(steps) < n_steps:  # rounding collisions at the dense end
            steps = np.unique(np.concatenate([steps, rng.integers(1, max_step, n_steps - len(steps))]))
    else:
        steps = np.unique(np.round(np.linspace(0, max_step, n_steps)).astype(int))
    lo_t, hi_t = float(steps[0]), float(steps[-1])
    span = hi_t - lo_t

    taus = _per_op(tau, ops, lambda i, op: lo_t + span * (0.35 + 0.3 * i / max(1, len(ops) - 1)), "tau")
    widths = _per_op(width, ops, lambda i, op: 0.025 * span, "width")
    lv = _per_op(levels, ops, lambda i, op: _DEFAULT_LEVELS[fam[op]], "levels")

    score = np.full((len(ops), len(steps), n_prompts, n_samples), np.nan)
    prompt_tau, prompt_before, prompt_after, scales = {}, {}, {}, []
    for k, op in enumerate(ops):
        f = fam[op]
        link, inv = _link(f)
        if get_family(f).has_cut_points:
            n_cat = int(n_categories[op] if isinstance(n_categories, Mapping) else n_categories)
            cp = cutpoints[op] if isinstance(cutpoints, Mapping) else cutpoints
            cuts = np.asarray(cp if cp is not None else np.linspace(-2, 2, n_cat - 1), dtype=float)
            link, inv = _ordinal_link(cuts)
        before, after = (float(x) for x in lv[op])
        frac = get_family(f).score_unit(opts)
        b_link = link(before / frac) + _zero_sum(rng.normal(0.0, prompt_level_sd, n_prompts))
        a_link = link(after / frac) + _zero_sum(rng.normal(0.0, prompt_level_sd, n_prompts))
        # population level = inverse link of the mean prompt link level (what the model estimates)
        prompt_before[op] = inv(b_link) * frac
        prompt_after[op] = inv(a_link) * frac
        prompt_tau[op] = float(taus[op]) + _zero_sum(rng.normal(0.0, prompt_tau_sd, n_prompts))
        if get_family(f).has_cut_points:
            weight = np.stack([transition_curve(steps, prompt_tau[op][p], float(widths[op]), 0.0, 1.0, transition)
                               for p in range(n_prompts)], axis=1)  # (T, P): probability of the after level
            use_after = rng.random((len(steps), n_prompts, n_samples)) < weight[..., None]
            eta = np.where(use_after, a_link[None, :, None], b_link[None, :, None])
            cdf = expit(cuts - eta[..., None])
            score[k] = 1.0 + (rng.random(eta.shape)[..., None] > cdf).sum(-1)
            scales.append((1.0, float(n_cat)))
            continue
        mean = np.stack(
            [
                transition_curve(steps, prompt_tau[op][p], float(widths[op]), prompt_before[op][p], prompt_after[op][p], transition)
                for p in range(n_prompts)
            ],
            axis=1,
        )[..., None] * np.ones(n_samples)
        F = get_family(f)
        m = np.clip(mean / frac, 1e-6, 1 - 1e-6) if F.unit_mean else mean / frac
        x = F.draw(rng, m, opts.get(F.nuisance), opts.get("n_trials"))
        score[k] = F.sim_scores(x, opts, integer_scores)
        scales.append(F.sim_scale(opts))

    status = np.full(score.shape, STATUS["ok"], dtype=np.int16)
    if missing_fraction > 0:
        drop = rng.random(score.shape) < missing_fraction
        reasons = rng.choice([STATUS["missing"], STATUS["api_error"], STATUS["refusal"]], size=score.shape)
        status = np.where(drop, reasons, status).astype(np.int16)
        score = np.where(drop, np.nan, score)

    ds = assemble_run(
        score,
        status,
        order_parameters=ops,
        steps=steps,
        prompts=[f"p{p:02d}" for p in range(n_prompts)],
        samples=np.arange(n_samples),
        scales=scales,
        prompt_text=[f"Simulated prompt {p}" for p in range(n_prompts)],
        validate_result=False,
    )

    # gradient-norm trace
    train_steps = np.arange(1, int(hi_t) + 1)
    if grad_peak is None:
        grad_peak = max(lo_t + 0.05 * span, min(taus.values()) - 0.1 * span)
    bump_sd = 0.04 * span
    baseline = 1.0 + 1.5 * np.exp(-train_steps / (0.05 * span + 1))
    signal = baseline + 3.0 * np.exp(-0.5 * ((train_steps - grad_peak) / bump_sd) ** 2)
    grad = signal * np.exp(rng.normal(0.0, grad_noise, train_steps.size))
    spike_steps: list[int] = []
    if n_grad_spikes:
        far = np.abs(train_steps - grad_peak) > 4 * bump_sd
        spike_steps = sorted(int(s) for s in rng.choice(train_steps[far], size=n_grad_spikes, replace=False))
        grad[np.searchsorted(train_steps, spike_steps)] *= rng.uniform(6, 10, n_grad_spikes)
    loss = 2.0 * np.exp(-train_steps / (0.3 * span)) + 0.5 + rng.normal(0, 0.05, train_steps.size)
    log = pd.DataFrame({"step": train_steps, "grad_norm": grad, "loss": loss, "learning_rate": np.full(train_steps.size, 1e-4)})
    ds = ds.merge(training_log_dataset(log))
    ds.attrs.update({"source": "phasebayes.simulate_run", "transition": transition})

    truth = SimulationTruth(
        likelihood=fam,
        transition=transition,
        tau={op: float(taus[op]) for op in ops},
        width={op: float(widths[op]) for op in ops},
        before={op: float(lv[op][0]) for op in ops},
        after={op: float(lv[op][1]) for op in ops},
        prompt_tau=prompt_tau,
        prompt_before=prompt_before,
        prompt_after=prompt_after,
        nuisance={k: float(v) for k, v in opts.items()},
        grad_peak=float(grad_peak),
        grad_spike_steps=spike_steps,
    )
    from .dataset import validate

    return validate(ds), truth


@dataclass
class StudyTruth:
    """Truth of a simulated study: population and per-run transition steps (training steps)."""

    tau: dict[str, float]
    run_tau: dict[str, np.ndarray]
    run_tau_sd: float
    runs: list[SimulationTruth]


def simulate_study(
    *,
    n_runs: int = 4,
    tau: float | Mapping[str, float] | None = None,
    run_tau_sd: float = 30.0,
    run_level_sd: float = 0.2,
    order_parameters: Sequence[str] | None = None,
    likelihood: str | Mapping[str, str] = "beta",
    levels: tuple[float, float] | Mapping[str, tuple[float, float]] | None = None,
    max_step: int = 1000,
    seed: int | None = 0,
    **run_kwargs,
) -> tuple[dict[str, xr.Dataset], StudyTruth]:
    """Simulate several runs (seeds) of one study with known truth.

    Each run's transition step is ``tau + run_tau_sd * N(0, 1)`` (steps) and its levels are the
    population levels shifted by ``run_level_sd * N(0, 1)`` on the link scale (logit/log/identity);
    everything else (prompts, samples, gradient trace with a peak before the run's tau) is
    :func:`simulate_run` with ``run_kwargs``. Returns ``({"seed0": ds, ...}, StudyTruth)``.
    """
    if n_runs < 1:
        raise ModelSpecError("n_runs must be at least 1.")
    rng = np.random.default_rng(seed)
    ops = list(order_parameters) if order_parameters is not None else ["alignment", "coherence", "verbosity"]
    fam = _per_op(likelihood, ops, lambda i, op: "beta", "likelihood")
    taus = _per_op(tau, ops, lambda i, op: max_step * (0.35 + 0.3 * i / max(1, len(ops) - 1)), "tau")
    lv = _per_op(levels, ops, lambda i, op: _DEFAULT_LEVELS[fam[op]], "levels")
    runs, truths = {}, []
    run_tau = {op: np.empty(n_runs) for op in ops}
    for r in range(n_runs):
        tau_r, lv_r = {}, {}
        for op in ops:
            tau_r[op] = float(taus[op]) + run_tau_sd * rng.normal()
            run_tau[op][r] = tau_r[op]
            cut_points = get_family(fam[op]).has_cut_points  # latent levels have no link-scale run shift
            link, inv = _link(fam[op]) if not cut_points else (lambda m: m, lambda x: x)
            frac = get_family(fam[op]).score_unit(_family_options(0, 0, 0, run_kwargs.get("family_options")))
            shift = run_level_sd * rng.normal() if not cut_points else 0.0
            lv_r[op] = tuple(float(inv(link(v / frac) + shift)) * frac for v in lv[op])
        ds, truth = simulate_run(order_parameters=ops, likelihood=fam, tau=tau_r, levels=lv_r, max_step=max_step,
                                 seed=int(rng.integers(2**31)), **run_kwargs)
        runs[f"seed{r}"] = ds
        truths.append(truth)
    return runs, StudyTruth(tau={op: float(taus[op]) for op in ops}, run_tau=run_tau, run_tau_sd=run_tau_sd, runs=truths)
