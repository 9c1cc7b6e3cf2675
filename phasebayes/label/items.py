"""Which answers a human rates: a stratified sample of (step, prompt, sample) cells with opaque ids.

The sample is spread over checkpoints and prompts:

* **over checkpoints** in proportion to a weight per step: half uniform, half the posterior probability
  that the transition τ of the rubric's order parameter lies at that step (from the run's
  ``analysis.nc``, when it exists and holds a change-point posterior for an order parameter named like
  the rubric: ``alignment``, ``alignment_claude``, ...). Without an analysis the weight is uniform.
  Rating more answers near the transition is what pins the judge's calibration where it matters.
* **over prompts** evenly: each step takes the prompts rated least so far (ties broken at random), and
  one random sample of that (step, prompt) that has a non-empty answer.

Every item gets a random opaque id (16 hex digits); the plan (id → step, prompt, sample) is stored on
disk next to the ratings and never sent to the page. The presentation order is random.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import ConfigError, RunDataError
from ..storage import atomic_write_text

__all__ = ["ItemPlan", "plan_items", "transition_weights", "load_or_create_plan", "matching_order_parameters"]


@dataclass
class ItemPlan:
    """The items of one rubric: ``ids[i]`` is answer ``(steps[i], prompts[i], samples[i])``, in presentation order."""

    rubric: str
    ids: list[str]
    steps: list[int]
    prompts: list[str]
    samples: list[int]
    weights: dict[int, float]
    weight_source: str
    seed: int

    def __len__(self) -> int:
        return len(self.ids)

    def index(self) -> dict[str, int]:
        """Item id → position in the presentation order."""
        return {i: k for k, i in enumerate(self.ids)}

    def to_json(self) -> str:
        items = [{"id": i, "step": int(t), "prompt": str(p), "sample": int(s)}
                 for i, t, p, s in zip(self.ids, self.steps, self.prompts, self.samples)]
        return json.dumps({"rubric": self.rubric, "seed": self.seed, "weight_source": self.weight_source,
                           "weights": {str(k): v for k, v in self.weights.items()}, "items": items}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "ItemPlan":
        d = json.loads(text)
        it = d["items"]
        return cls(rubric=d["rubric"], ids=[x["id"] for x in it], steps=[int(x["step"]) for x in it],
                   prompts=[str(x["prompt"]) for x in it], samples=[int(x["sample"]) for x in it],
                   weights={int(k): float(v) for k, v in d.get("weights", {}).items()},
                   weight_source=str(d.get("weight_source", "")), seed=int(d.get("seed", 0)))


def matching_order_parameters(ds_or_names, rubric: str) -> list[str]:
    """Order parameters judged with ``rubric``: the name itself or ``<rubric>_<judge>`` (several judges)."""
    names = ds_or_names["order_parameter"].values if isinstance(ds_or_names, xr.Dataset) else ds_or_names
    names = [str(n) for n in names]
    return [n for n in names if n == rubric or n.startswith(rubric + "_")]


def transition_weights(steps: np.ndarray, analysis_path: str | os.PathLike | None, rubric: str) -> tuple[np.ndarray, str]:
    """Sampling weight per checkpoint step (sums to 1) and where it came from.

    ``0.5 / T + 0.5 · P(τ nearest to step)`` with τ draws of the matching order parameters (all order
    parameters when none matches) from ``analysis_path``; uniform when there is no analysis.
    """
    steps = np.asarray(steps, dtype=float)
    uniform = np.full(len(steps), 1.0 / len(steps))
    if analysis_path is None or not Path(analysis_path).exists():
        return uniform, "uniform (no analysis.nc)"
    try:
        with xr.open_datatree(analysis_path, engine="netcdf4") as tree:
            post = tree["changepoint"]["posterior"].to_dataset()
            if "tau" not in post:
                return uniform, "uniform (no tau in the analysis)"
            tau = post["tau"].load()
            cp_ops = [str(o) for o in tau["order_parameter"].values]
    except (OSError, KeyError, ValueError) as err:
        return uniform, f"uniform (analysis unreadable: {type(err).__name__})"
    ops = matching_order_parameters(cp_ops, rubric) or cp_ops
    draws = np.concatenate([tau.isel(order_parameter=cp_ops.index(o)).values.ravel() for o in ops])
    nearest = np.abs(draws[:, None] - steps[None, :]).argmin(axis=1)
    hist = np.bincount(nearest, minlength=len(steps)) / max(len(draws), 1)
    return 0.5 * uniform + 0.5 * hist, f"0.5 uniform + 0.5 posterior of tau ({', '.join(ops)})"


def _allocate(n: int, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Largest-remainder (Hamilton) allocation of ``n`` items over strata, never above ``capacity``;
    what a full stratum cannot take is shared among the others by weight."""
    alloc = np.zeros(len(weights), dtype=int)
    w = np.asarray(weights, dtype=float)
    remaining = int(min(n, capacity.sum()))
    while remaining > 0:
        open_ = alloc < capacity
        w_open = np.where(open_, w, 0.0)
        if w_open.sum() <= 0:
            w_open = open_.astype(float)
        quota = remaining * w_open / w_open.sum()
        add = np.minimum(np.floor(quota).astype(int), capacity - alloc)
        alloc += add
        remaining -= int(add.sum())
        rem = np.where(alloc < capacity, quota - np.floor(quota), -1.0)
        for j in np.argsort(-rem, kind="stable"):
            if remaining == 0 or rem[j] <= 0:
                break
            alloc[j] += 1
            remaining -= 1
    return alloc


def plan_items(ds: xr.Dataset, rubric: str, n: int = 120, *, weights: np.ndarray | None = None,
               weight_source: str = "uniform", seed: int = 0) -> ItemPlan:
    """Draw a stratified sample of ``n`` answers of a run to be rated with ``rubric``.

    ``weights`` (one per step, default uniform) set how many items each checkpoint gets; prompts are
    balanced. Raises :class:`RunDataError` when the run has no answers.
    """
    if "response" not in ds:
        raise RunDataError("the run dataset has no 'response' texts; human rating needs the generated answers "
                           "(run the generate stage, or build the dataset with a 'response' column).")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}.")
    rng = np.random.default_rng(seed)
    steps = ds["step"].values.astype(int)
    prompts = [str(p) for p in ds["prompt"].values]
    resp = ds["response"].transpose("step", "prompt", "sample").values
    has = np.vectorize(lambda x: isinstance(x, str) and x.strip() != "", otypes=[bool])(resp)  # (T, P, S)
    if not has.any():
        raise RunDataError("the run dataset has no non-empty responses to rate.")
    w = np.full(len(steps), 1.0 / len(steps)) if weights is None else np.asarray(weights, dtype=float)
    capacity = has.any(axis=2).sum(axis=1)  # one item per (step, prompt) at most
    per_step = _allocate(n, w, capacity)
    prompt_count = np.zeros(len(prompts))
    chosen = []
    for t in rng.permutation(len(steps)):
        avail = np.flatnonzero(has[t].any(axis=1))
        if per_step[t] == 0:
            continue
        order = avail[np.lexsort((rng.random(len(avail)), prompt_count[avail]))][: per_step[t]]
        for p in order:
            s = int(rng.choice(np.flatnonzero(has[t, p])))
            chosen.append((int(steps[t]), prompts[p], s))
            prompt_count[p] += 1
    perm = rng.permutation(len(chosen))
    chosen = [chosen[i] for i in perm]
    return ItemPlan(rubric=rubric, ids=[secrets.token_hex(8) for _ in chosen], steps=[c[0] for c in chosen],
                    prompts=[c[1] for c in chosen], samples=[c[2] for c in chosen],
                    weights={int(t): float(x) for t, x in zip(steps, w)}, weight_source=weight_source, seed=seed)


def plan_path(ratings_dir: str | os.PathLike, rubric: str) -> Path:
    """File holding the item plan of one rubric (shared by every rater of the run)."""
    return Path(ratings_dir) / f"items-{rubric}.json"


def load_or_create_plan(ds: xr.Dataset, ratings_dir: str | os.PathLike, rubric: str, n: int = 120, *,
                        analysis_path: str | os.PathLike | None = None, seed: int = 0) -> ItemPlan:
    """The rubric's item plan: read from ``ratings_dir`` when it exists (so every rater rates the same
    items in the same order and a restarted server resumes), else drawn and written atomically.

    A larger ``n`` than the stored plan appends new items (drawn with the same weights, avoiding answers
    already in the plan); a smaller one keeps the stored plan.
    """
    path = plan_path(ratings_dir, rubric)
    if path.exists():
        plan = ItemPlan.from_json(path.read_text(encoding="utf-8"))
        if n <= len(plan):
            return plan
        extra = plan_items(ds, rubric, n=len(plan) + 4 * (n - len(plan)), weights=np.array(
            [plan.weights.get(int(t), 0.0) for t in ds["step"].values]) if plan.weights else None,
            weight_source=plan.weight_source, seed=plan.seed + len(plan))
        seen = set(zip(plan.steps, plan.prompts, plan.samples))
        for i, t, p, s in zip(extra.ids, extra.steps, extra.prompts, extra.samples):
            if len(plan) >= n:
                break
            if (t, p, s) not in seen:
                plan.ids.append(i), plan.steps.append(t), plan.prompts.append(p), plan.samples.append(s)
                seen.add((t, p, s))
    else:
        w, source = transition_weights(ds["step"].values, analysis_path, rubric)
        plan = plan_items(ds, rubric, n=n, weights=w, weight_source=source, seed=seed)
    atomic_write_text(path, plan.to_json(), overwrite=True)
    return plan
