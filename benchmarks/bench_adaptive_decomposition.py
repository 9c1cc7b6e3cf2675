"""Benchmark the decomposition rounds of adaptive evaluation (answers added where the total change peaks)
against spreading the same answers evenly (the baseline, measured in the same run).

Simulated runs with exact log-probabilities (:func:`phasebayes.simulate_outputs`, categorical family: 30
checkpoints 10 steps apart, 4 prompts, a transition in the middle; a pool of 96 answers per cell). Every
design starts from the same base: every third checkpoint × every prompt × 4 answers (what a τ loop
might have asked). Then the same number of extra answers is spent

* **adaptive**: by :func:`phasebayes.adaptive_sampler.add_where_total_change_peaks` (rounds of 4 answers
  per prompt at the two checkpoints around the boundary with the largest upper bound of the total change);
* **even** (the baseline a careful user would choose without the rule): the same answers spread evenly
  over the asked checkpoints.

Reported per design: the width of the 94 % interval of the fractions ρ of ``alignment`` and ``parity``
at the peak of the total change (``decompose(...).fit().fractions("peak")``), medians over replicates,
and the ratio even / adaptive (> 1: the rule narrows the fractions more).

Run::

    .venv/bin/python benchmarks/bench_adaptive_decomposition.py [--reps 10] [--extra 192]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phasebayes.adaptive import Request  # noqa: E402
from phasebayes.adaptive_sampler import add_where_total_change_peaks  # noqa: E402
from phasebayes.simulate_outputs import simulate_outputs  # noqa: E402
from phasebayes.stats.decomposition import decompose  # noqa: E402

POOL, BASE, OPS = 96, 4, ("alignment", "parity")


class PoolSampler:
    """Answers drawn from a simulated pool: asking n answers of (step, prompt) takes the next n of its pool.

    Implements what :func:`add_where_total_change_peaks` uses of a CheckpointSampler (``prompts``,
    ``answers``, ``sample_many``, ``log_probs``, ``dataset``) with the pool's exact log-probabilities."""

    def __init__(self, pool: xr.Dataset):
        self.pool = pool
        self.prompts = {str(p): {"id": str(p), "text": str(p)} for p in pool["prompt"].values}
        self.answers: dict[tuple[int, str, int], dict] = {}

    def sample_many(self, requests):
        for r in requests:
            self.answers[(r.step, r.prompt, r.first)] = {"text": ["x"] * r.n}
        return [{} for _ in requests]

    def _cells(self, keys):
        steps = sorted({k[0] for k in keys})
        width = max(k[2] + len(self.answers[k]["text"]) for k in keys)
        mask = np.zeros((len(steps), len(self.prompts), width), dtype=bool)
        for s, p, f in keys:
            mask[steps.index(s), list(self.prompts).index(p), f:f + len(self.answers[(s, p, f)]["text"])] = True
        return steps, width, mask

    def log_probs(self, keys, folder=None):
        steps, width, mask = self._cells(keys)
        lp = self.pool["logp"].sel(step=steps, ref_step=steps).isel(sample=slice(0, width)).values.copy()
        lp[~mask] = np.nan
        return lp

    def dataset(self, keys, logp=None):
        steps, width, mask = self._cells(keys)
        ds = self.pool.sel(step=steps, ref_step=steps).isel(sample=slice(0, width)).copy()
        ds["score"] = ds["score"].where(xr.DataArray(mask, dims=("step", "prompt", "sample")))
        ds["logp"] = (("step", "prompt", "sample", "ref_step"), self.log_probs(keys) if logp is None else logp)
        return ds


def base_design(sampler: PoolSampler, steps) -> list[tuple[int, str, int]]:
    keys = [(int(s), p, 0) for s in steps for p in sampler.prompts]
    sampler.sample_many([Request(s, p, BASE, 0) for s, p, _ in keys])
    return keys


def widths(sampler: PoolSampler, keys) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = decompose(sampler.dataset(keys), window=1, on_missing="drop").fit(curve=False, random_seed=0)
    fr = res.fractions("peak")
    return {op: float(fr.loc[op, "upper"] - fr.loc[op, "lower"]) for op in OPS}


def one(seed: int, extra: int) -> dict:
    pool, _ = simulate_outputs(n_steps=30, n_prompts=4, n_samples=POOL, seed=seed, width=15.0)
    asked_steps = pool["step"].values[::3]
    P = pool.sizes["prompt"]
    # adaptive: the rule
    a = PoolSampler(pool)
    keys_a = base_design(a, asked_steps)
    add_where_total_change_peaks(a, keys_a, extra, BASE)
    # even: the same extra answers over every asked checkpoint and prompt
    e = PoolSampler(pool)
    keys_e = base_design(e, asked_steps)
    per_cell = extra // (len(asked_steps) * P)
    e.sample_many([Request(int(s), p, per_cell, BASE) for s in asked_steps for p in e.prompts])
    keys_e += [(int(s), p, BASE) for s in asked_steps for p in e.prompts]
    wa, we = widths(a, keys_a), widths(e, keys_e)
    return {"seed": seed, **{f"adaptive_{k}": v for k, v in wa.items()}, **{f"even_{k}": v for k, v in we.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--extra", type=int, default=160, help="extra judged answers (multiple of 10 checkpoints x 4 prompts)")
    args = ap.parse_args()
    t0, rows = time.perf_counter(), []
    for r in range(args.reps):
        rows.append(one(9000 + r, args.extra))
    df = pd.DataFrame(rows)
    print(f"30 checkpoints x 4 prompts; base: 10 checkpoints x 4 prompts x {BASE} answers = 160; extra answers: "
          f"{args.extra}; {args.reps} replicates ({time.perf_counter() - t0:.0f} s)\n")
    print("| order parameter | 94 % width of rho at the peak: even (median) | adaptive (median) | even / adaptive "
          "(median of per-run ratios) | runs where adaptive is narrower |")
    print("|---|---|---|---|---|")
    for op in OPS:
        ratio = df[f"even_{op}"] / df[f"adaptive_{op}"]
        print(f"| {op} | {df[f'even_{op}'].median():.3f} | {df[f'adaptive_{op}'].median():.3f} | {ratio.median():.2f}× | "
              f"{int((ratio > 1).sum())}/{len(df)} |")


if __name__ == "__main__":
    main()
