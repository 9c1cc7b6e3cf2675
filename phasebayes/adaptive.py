"""Adaptive evaluation: judge answers where they narrow the transition step most.

:func:`evaluate_adaptively` starts from a coarse design (a few checkpoints spread over the run, every
prompt, a few answers each), then repeats: fit the exact grid posterior of every order parameter's
transition (:mod:`phasebayes.models.grid_step`, milliseconds), score each checkpoint by the expected
relative reduction of the posterior sd of τ that more answers there would bring (summed over the order
parameters still wider than the target), ask the sampler for answers at the best checkpoints — until
every 94 % interval of τ is narrower than ``target_width`` or ``budget`` answers are spent. The final
result is the full hierarchical change-point model fitted to everything that was asked.

Why the result stays valid: each choice depends only on answers already seen, so the design is
ignorable — the likelihood of the answers is the same as for a fixed design, and so is the posterior
(``docs/adaptive.md`` has the argument and the calibration measured under the adaptive design).

A journal (``state_path``, JSON lines, one line per sampler call, flushed and fsynced) makes the loop
resumable: rerun with the same arguments and every call already in the journal is read back instead of
asked again; a half-written last line (a kill mid-write) is dropped.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats

from .errors import ArgumentError, DiagnosticsWarning, RunDataError
from .intervals import summarize_draws
from .models import grid_step
from .run_build import from_dataframe

Sampler = Callable[[int, str, int], Mapping[str, Sequence[float]]]


class Request(NamedTuple):
    """One sampler call: ``n`` answers of ``prompt`` at checkpoint ``step``; ``first`` is the index of the
    first of them among all answers of that (step, prompt) so far (a sampler can seed on it)."""

    step: int
    prompt: str
    n: int
    first: int


INITIAL_CHECKPOINTS = 5
ANSWERS_PER_PROMPT = 2
CHECKPOINTS_PER_ROUND = 1
"""Each round asks one checkpoint × every prompt × 2 answers: small rounds adapt fastest (bench_adaptive:
7.0× / 3.1× fewer answers than the full grid for sharp / smooth transitions, against 4.4× / 2.6× for
2 checkpoints × 4 answers). Raise them when each round is slow to start (Message Batches)."""
GRID_ANSWERS = 4
"""Answers per prompt of the full grid whose third is the default budget."""
HETEROGENEITY_LEVEL = 0.9
"""Prompts are treated as moving apart when Cochran's Q exceeds this quantile of chi2(prompts − 1)."""
FLOOR_LEVEL = 0.999
"""The loop stops at the prompts' floor only when Cochran's Q exceeds this quantile of chi2(prompts − 1)."""
WIDTH_PROB = 0.94
"""The interval whose width ``target_width`` bounds: the 94 % HDI of τ (the package's default interval)."""


class _Journal:
    """Sampler calls, keyed by (round, step, prompt), kept in memory and (optionally) in a JSON-lines file."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.calls: dict[tuple[int, int, str], dict] = {}
        self.asked: list[tuple[int, int, str]] = []  # this run's calls, in order (journal entries are replayed)
        self.replayed = 0
        if self.path is not None and self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for i, line in enumerate(lines):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # a kill mid-write: the call is asked again
                        break
                    raise RunDataError(f"{self.path}: line {i + 1} is not valid JSON; the adaptive journal is "
                                       "damaged — delete the line (that call is asked again) or the file.") from None
                self.calls[(rec["round"], rec["step"], rec["prompt"])] = rec
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.calls.values()), encoding="utf-8")

    def ask_round(self, sample: Sampler, rnd: int, requests: list[tuple[int, str, int]], ops: list[str] | None) -> None:
        """Ask every ``(step, prompt, n)`` of round ``rnd`` not already in the journal; record the answers.

        A sampler with a ``sample_many(requests)`` method (a list of :class:`Request`, returning one
        mapping per request) gets the whole round at once — a real pipeline then loads each checkpoint
        once and batches generation and judging; any other sampler is called once per request.
        """
        counts: dict[tuple[int, str], int] = {}
        for key in self.asked:
            rec = self.calls[key]
            counts[(rec["step"], rec["prompt"])] = counts.get((rec["step"], rec["prompt"]), 0) + rec["n"]
        todo: list[Request] = []
        for step, prompt, n in requests:
            key = (rnd, step, prompt)
            if key in self.calls:
                self.replayed += 1
            else:
                todo.append(Request(step, prompt, n, counts.get((step, prompt), 0)))
            self.asked.append(key)
            counts[(step, prompt)] = counts.get((step, prompt), 0) + n
        if not todo:
            return
        many = getattr(sample, "sample_many", None)
        if not callable(many):  # one call per request, each recorded as soon as it returns
            for r in todo:
                cost0 = _cost(sample)
                out = sample(r.step, r.prompt, r.n)
                self._record(rnd, [r], [out], None if cost0 is None else _cost(sample) - cost0, ops)
            return
        cost0 = _cost(sample)
        outs = list(many(todo))
        if len(outs) != len(todo):
            raise ArgumentError(f"sample_many returned {len(outs)} results for {len(todo)} requests; return one per request.")
        self._record(rnd, todo, outs, None if cost0 is None else _cost(sample) - cost0, ops)

    def _record(self, rnd: int, requests: list[Request], outs: list, cost: float | None, ops: list[str] | None) -> None:
        """Check the sampler's answers and append them to the journal (flushed and fsynced); ``cost`` is shared evenly."""
        lines = []
        for r, out in zip(requests, outs):
            rec = {"round": rnd, "step": r.step, "prompt": r.prompt, "n": r.n,
                   "scores": _checked_scores(out, r.step, r.prompt, r.n, ops)}
            if cost is not None:
                rec["cost_usd"] = cost / len(requests)
            self.calls[(rnd, r.step, r.prompt)] = rec
            lines.append(json.dumps(rec) + "\n")
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())

    def cost_usd(self) -> float:
        """Judge cost (US dollars) of this run's answers, as the sampler reported it (0 when it does not)."""
        return float(sum(self.calls[k].get("cost_usd", 0.0) for k in self.asked))

    def table(self) -> pd.DataFrame:
        """This run's answers so far as the tidy table of :func:`phasebayes.from_dataframe`."""
        rows, counter = [], {}
        for rec in (self.calls[k] for k in self.asked):
            first = counter.get((rec["step"], rec["prompt"]), 0)
            for op, vals in rec["scores"].items():
                rows += [{"step": rec["step"], "prompt": rec["prompt"], "sample": first + i, "order_parameter": op,
                          "score": np.nan if v is None else v} for i, v in enumerate(vals)]
            counter[(rec["step"], rec["prompt"])] = first + rec["n"]
        return pd.DataFrame(rows)


def _cost(sample) -> float | None:
    """The sampler's judge cost so far (``sample.cost_usd``, US dollars), or None when it does not report one."""
    value = getattr(sample, "cost_usd", None)
    return float(value() if callable(value) else value) if value is not None else None


def _checked_scores(out, step: int, prompt: str, n: int, ops: list[str] | None) -> dict[str, list[float | None]]:
    """The sampler's answer as JSON-ready lists, or a clear error when it is not ``{op: n scores}``."""
    if not isinstance(out, Mapping) or not out:
        raise ArgumentError(f"the sampler returned {type(out).__name__} for step {step}, prompt {prompt!r}; it must "
                            "return {order_parameter: array of n scores}.")
    scores = {}
    for op, values in out.items():
        arr = np.asarray(values, dtype=float).ravel()
        if arr.size != n:
            raise ArgumentError(f"the sampler returned {arr.size} scores of {op!r} for step {step}, prompt {prompt!r} "
                                f"when asked for {n}; return exactly n scores (NaN for a failed judgement).")
        scores[str(op)] = [None if not np.isfinite(v) else float(v) for v in arr]
    if ops is not None and not set(ops) <= set(scores):
        raise ArgumentError(f"the sampler returned order parameters {sorted(scores)}; it must include {ops}.")
    return scores


def _check(steps, prompts, budget, target_width, answers_per_prompt) -> tuple[np.ndarray, list[str]]:
    steps_arr = np.asarray(list(steps))
    if steps_arr.ndim != 1 or steps_arr.size < 3 or not np.all(steps_arr == np.round(steps_arr)) or np.any(steps_arr < 0):
        raise ArgumentError("steps must list at least 3 checkpoint steps (integers ≥ 0), e.g. trainer checkpoint steps.")
    steps_arr = np.unique(steps_arr.astype(int))
    prompt_list = [str(p) for p in prompts]
    if not prompt_list or len(set(prompt_list)) != len(prompt_list):
        raise ArgumentError("prompts must be a non-empty list of distinct prompt ids.")
    if budget is not None and (not float(budget).is_integer() or budget <= 0):
        raise ArgumentError(f"budget is the number of judged answers in all (a positive integer), got {budget!r}.")
    if target_width is not None and not target_width > 0:
        raise ArgumentError(f"target_width is the 94 % interval width of tau in training steps (> 0), got {target_width!r}.")
    if int(answers_per_prompt) < 1:
        raise ArgumentError("answers_per_prompt must be at least 1.")
    return steps_arr, prompt_list


def _sums(rows: pd.DataFrame) -> grid_step.Sums:
    """Per-checkpoint sums of the ``score`` column of ``rows`` (tidy answers table)."""
    return grid_step.sums_by_step({int(s): g["score"].to_numpy(float) for s, g in rows.groupby("step")})


@dataclass
class WorkingPosterior:
    """The in-loop posterior of one order parameter.

    ``sums``, ``logp`` (G_τ, G_w), ``levels`` (G_τ, G_w, 2): the pooled grid posterior; ``tau_draws``
    (D,): the draws that decide widths; ``floor``: the 94 % width (steps) that the between-prompt spread
    of τ alone implies — no number of answers narrows the population τ below it, only more prompts.
    """

    sums: grid_step.Sums
    logp: np.ndarray
    levels: np.ndarray
    tau_draws: np.ndarray
    floor: float = 0.0


def working_posterior(grid: grid_step.Grid, table: pd.DataFrame, op: str, seed: int = 0) -> WorkingPosterior:
    """Working posterior of one order parameter from the answers so far (:class:`WorkingPosterior`).

    The pooled grid posterior (all prompts' answers together) drives the choice of checkpoints. The τ
    draws that decide widths and stopping are the more uncertain of two working models: that pooled
    posterior (right when prompts share τ, and when nothing changes) and a random-effects combination
    of per-prompt grid posteriors (right when prompts move apart): the mean over prompts of a draw
    from each prompt's posterior, plus Normal noise with the between-prompt variance of the prompt
    medians beyond their own posterior variance, divided by the number of prompts (DerSimonian–Laird),
    used when Cochran's Q test finds the prompts' τ differ (level :data:`HETEROGENEITY_LEVEL`).
    """
    rows = table[table["order_parameter"] == op]
    sums = _sums(rows)
    logp, levels = grid_step.log_posterior(grid, sums)
    pooled = grid_step.tau_draws(grid, logp, seed=seed)
    prompt_draws = []
    for k, (_, prows) in enumerate(rows.groupby("prompt", sort=True)):
        lp, _ = grid_step.log_posterior(grid, _sums(prows))
        prompt_draws.append(grid_step.tau_draws(grid, lp, seed=seed + 1 + k))
    if len(prompt_draws) < 2:
        return WorkingPosterior(sums, logp, levels, pooled)
    d = np.stack(prompt_draws)  # (P, D)
    med, var = np.median(d, axis=1), np.maximum(np.var(d, axis=1), 1e-12)
    q = float((((med - np.average(med, weights=1 / var)) ** 2) / var).sum())  # Cochran's Q, chi2(P - 1) if shared
    if q <= stats.chi2.ppf(HETEROGENEITY_LEVEL, len(d) - 1):
        return WorkingPosterior(sums, logp, levels, pooled)
    between = max(float(np.var(med, ddof=1) - np.mean(var)), 0.0)
    rng = np.random.default_rng(seed)
    combined = np.clip(d.mean(0) + rng.normal(0.0, np.sqrt(between / len(d)), d.shape[1]), grid.tau[0], grid.tau[-1])
    # the floor is claimed only on strong evidence of spread (a false floor would stop the loop early)
    strong = q > stats.chi2.ppf(FLOOR_LEVEL, len(d) - 1)
    floor = 2 * stats.norm.ppf(0.5 + WIDTH_PROB / 2) * np.sqrt(between / len(d)) if strong else 0.0
    return WorkingPosterior(sums, logp, levels, combined if np.std(combined) > np.std(pooled) else pooled, floor)


def evaluate_adaptively(
    sample: Sampler,
    steps: Sequence[int],
    prompts: Sequence[str],
    *,
    budget: int | None = None,
    target_width: float | None = None,
    order_parameters: Sequence[str] | None = None,
    seed: int = 0,
    answers_per_prompt: int = ANSWERS_PER_PROMPT,
    checkpoints_per_round: int = CHECKPOINTS_PER_ROUND,
    initial_checkpoints: int = INITIAL_CHECKPOINTS,
    scales: Mapping[str, tuple[float, float] | None] | None = None,
    state_path: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    max_cost_usd: float | None = None,
    final_fit: bool = True,
    fit_kwargs: Mapping | None = None,
    progress: bool = True,
):
    """Judge answers adaptively until τ is known to ``target_width`` steps or ``budget`` answers are spent.

    Parameters
    ----------
    sample
        ``sample(step, prompt, n) -> {order_parameter: array of n scores}`` (NaN: a failed judgement):
        generates and judges ``n`` answers of ``prompt`` at the checkpoint of training step ``step``.
    steps, prompts
        The checkpoints that exist (training steps) and the prompt ids; nothing else is ever asked.
    budget
        Judged answers in all (each answer counts once, whatever the number of order parameters).
        Default: a third of the full grid (every step × every prompt × :data:`GRID_ANSWERS`).
    target_width
        Stop once the 94 % HDI of τ is at most this many training steps for every order parameter
        in ``order_parameters``. Default: none (spend the budget).
    order_parameters
        The order parameters whose τ the design should narrow (default: all that the sampler returns).
    seed
        Seed of the preposterior Monte Carlo (the choices are deterministic given the answers).
    answers_per_prompt, checkpoints_per_round, initial_checkpoints
        Batch shape: each round asks ``checkpoints_per_round`` checkpoints × every prompt ×
        ``answers_per_prompt`` answers; the first round ``initial_checkpoints`` evenly spread ones.
    scales
        Declared score scale per order parameter (as in :func:`phasebayes.from_dataframe`; default 0–100).
    state_path
        A JSON-lines journal of every sampler call; rerunning with it resumes without asking twice.
    max_seconds
        A wall-time budget: no new round starts after this many seconds (the round in flight finishes).
    max_cost_usd
        A judge-cost budget in US dollars: no round starts whose expected cost (the mean cost per
        answer so far × its answers) would take the total past it. Needs a sampler that reports its
        spending as ``sample.cost_usd`` (e.g. :class:`phasebayes.CheckpointSampler` with a Claude judge).
    final_fit, fit_kwargs
        Fit the full :class:`~phasebayes.ChangePointModel` to the answers at the end (``fit_kwargs``:
        ``{"model": {...}, "fit": {...}}`` keyword arguments). With ``final_fit=False`` the result is
        the grid posterior (:class:`AdaptiveGridResult`).

    Returns
    -------
    ``(ds, result)``: the run dataset of every answer asked (only the checkpoints that were asked; the
    design history is in ``ds.attrs["adaptive_design"]`` (JSON: per round the checkpoints, answers,
    widths and expected gains that chose them) and ``ds["design_round"]`` (step,), the round in which
    each checkpoint was first asked) and the change-point result.
    """
    steps_arr, prompt_list = _check(steps, prompts, budget, target_width, answers_per_prompt)
    if max_cost_usd is not None and (_cost(sample) is None or not max_cost_usd > 0):
        raise ArgumentError("max_cost_usd needs a positive number of US dollars and a sampler that reports its judge cost "
                            "as sample.cost_usd (e.g. phasebayes.CheckpointSampler); use budget (answers) otherwise.")
    m, P = int(answers_per_prompt), len(prompt_list)
    budget = int(budget) if budget is not None else max(len(steps_arr) * P * GRID_ANSWERS // 3, P * m)
    first = np.unique(steps_arr[np.round(np.linspace(0, len(steps_arr) - 1, min(initial_checkpoints, len(steps_arr)))).astype(int)])
    if len(first) * P * m > budget:
        raise ArgumentError(f"budget={budget} answers cannot pay for the first design ({len(first)} checkpoints × {P} "
                            f"prompts × {m} answers = {len(first) * P * m}); raise the budget or lower answers_per_prompt.")
    journal = _Journal(state_path)
    ops = list(order_parameters) if order_parameters is not None else None
    grid = grid_step.Grid.over(steps_arr)
    history, used, started = [], 0, time.monotonic()
    bar = _progress(progress, budget)
    plan, reason, rnd = [(int(s), m) for s in first], {"why": "initial design: evenly spread checkpoints"}, 0
    while plan:
        journal.ask_round(sample, rnd, [(step, prompt, n) for step, n in plan for prompt in prompt_list], ops)
        asked = sum(n for _, n in plan) * P
        used += asked
        bar.update(asked)
        table = journal.table()
        ops = ops or sorted(table["order_parameter"].unique())
        fits = {op: working_posterior(grid, table, op) for op in ops}
        widths = {op: _hdi_width(fits[op].tau_draws) for op in ops}
        history.append({"round": rnd, "steps": [s for s, _ in plan], "answers_per_prompt": [n for _, n in plan],
                        "answers_used": used, "cost_usd": round(journal.cost_usd(), 6), "width94": widths, **reason})
        open_ops = [op for op in ops if target_width is None or widths[op] > target_width]
        if not open_ops:
            history[-1]["stop"] = "target width reached"
            break
        floors = {op: round(fits[op].floor, 2) for op in open_ops}
        if target_width is not None and all(f > target_width for f in floors.values()):
            history[-1]["stop"] = f"target width below the floor set by the prompts' spread of tau {floors}"
            warnings.warn(f"adaptive evaluation stopped: the prompts' transition steps differ so much that the "
                          f"population tau cannot get narrower than {floors} steps (94 %) with {P} prompts, whatever "
                          "the answers; add prompts or raise target_width.", DiagnosticsWarning, stacklevel=2)
            break
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            history[-1]["stop"] = f"time budget spent ({max_seconds:g} s)"
            break
        plan, reason = _next_plan(grid, fits, open_ops, steps_arr, budget - used, P, m, checkpoints_per_round, seed + rnd)
        if not plan:
            history[-1]["stop"] = "budget spent"
        elif max_cost_usd is not None:
            spent = journal.cost_usd()
            expected = spent / max(used, 1) * sum(n for _, n in plan) * P
            if spent + expected > max_cost_usd:
                history[-1]["stop"] = f"judge cost budget spent (US${spent:.4f} of {max_cost_usd:g}; the next round ~{expected:.4f})"
                plan = []
        rnd += 1
    bar.close()
    table = journal.table()
    ds = from_dataframe(table, scales=scales, attrs={"adaptive_design": json.dumps(history),
                                                     "adaptive_answers": int(used)})
    first_round = {}
    for h in history:
        for s in h["steps"]:
            first_round.setdefault(int(s), h["round"])
    ds["design_round"] = xr.DataArray([first_round.get(int(s), -1) for s in ds["step"].values], dims="step",
                                      attrs={"description": "adaptive-design round in which the checkpoint was first asked"})
    if not final_fit:
        return ds, AdaptiveGridResult({op: fits[op].tau_draws for op in ops}, history)
    from .models.changepoint import ChangePointModel

    kw = dict(fit_kwargs or {})
    model_kw = dict(kw.get("model", {}))
    # the width prior follows the checkpoints that exist, not the ones the design happened to ask
    model_kw["priors"] = {"width_median_steps": float(np.median(np.diff(steps_arr))), **model_kw.get("priors", {})}
    model = ChangePointModel(ds, order_parameters=ops, **model_kw)
    return ds, model.fit(**{"random_seed": seed, **kw.get("fit", {})})


def _next_plan(grid, fits, open_ops, steps, remaining, P, m, per_round, seed):
    """The next round: ``[(step, answers per prompt), ...]`` and why, or ``[]`` when the budget is spent."""
    if remaining < P:
        return [], {}
    k = max(1, min(per_round, remaining // (P * m)))
    n = min(m, remaining // (P * k))
    gain = np.zeros(len(steps))
    detail = {}
    for op in open_ops:
        sums, logp, levels = fits[op].sums, fits[op].logp, fits[op].levels
        now = float(grid_step.sd(grid, grid_step.tau_marginal(grid, logp)))
        after = grid_step.expected_sd_after(grid, sums, logp, levels, steps.astype(float), n * P, seed=seed)
        gain += (now - after) / max(now, 1e-9)
        detail[op] = now
    order = np.argsort(-gain, kind="stable")[:k]
    plan = [(int(steps[i]), int(n)) for i in sorted(order)]
    return plan, {"why": "largest expected relative reduction of the posterior sd of tau",
                  "expected_gain": {str(steps[i]): round(float(gain[i]), 4) for i in order}, "sd_tau": detail}


def _hdi_width(draws: np.ndarray) -> float:
    row = summarize_draws({"tau": draws}, ci_prob=WIDTH_PROB, ci_kind="hdi").iloc[0]
    return float(row["upper"] - row["lower"])


def _progress(show: bool, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="adaptive evaluation", unit="answer", disable=not show)


class AdaptiveGridResult:
    """The grid posterior of τ at the end of an adaptive evaluation (``final_fit=False``)."""

    def __init__(self, tau_draws: dict[str, np.ndarray], history: list[dict]):
        self.tau_draws = tau_draws
        self.history = history

    def transition_steps(self, ci_prob: float | None = None, ci_kind: str | None = None) -> pd.DataFrame:
        """Grid posterior of τ per order parameter (training steps): mean, median, sd, lower, upper."""
        return summarize_draws(self.tau_draws, ci_prob=ci_prob, ci_kind=ci_kind, units="training steps")
