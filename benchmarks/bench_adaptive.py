"""Benchmark adaptive evaluation against the full grid of judged answers (the baseline, measured in the same run).

Simulated runs: 120 checkpoints (steps 0–1190) × 8 prompts, 3 order parameters with different tau
(drawn per replicate in 250–950), beta judge noise (concentration 20), prompt level offsets; regimes:
sharp transitions (width 10 steps), smooth ones (width 30), prompts moving apart (prompt tau sd 30).
The full grid asks every checkpoint × prompt × 4 answers = 3,840 judged answers. Per replicate:

1. **same width**: the full grid's widest 94 % tau interval (working posterior, the same one the loop
   uses) is the target; the adaptive loop runs until every order parameter reaches it (cap: the full
   grid's answers). Reported: the answers it needed, and the ratio full grid / adaptive (goal ≥ 3×).
2. **same budget** (a third of the grid, 1,280 answers): the median 94 % width reached by the adaptive
   loop and by a fixed design of every third checkpoint (a careful user's way to spend the same budget).
3. **coverage** of the true tau by the 94 % intervals of each design.

Run::

    .venv/bin/python benchmarks/bench_adaptive.py [--reps 10] [--regimes sharp,smooth,apart]
"""

from __future__ import annotations

import argparse
import json
import warnings
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import phasebayes as pb  # noqa: E402
from phasebayes.adaptive import working_posterior  # noqa: E402
from phasebayes.intervals import summarize_draws  # noqa: E402
from phasebayes.models import grid_step  # noqa: E402

STEPS = np.arange(0, 1200, 10)
PROMPTS = [f"p{i}" for i in range(8)]
OPS = ("alignment", "coherence", "verbosity")
ANSWERS = 4
REGIMES = {"sharp": {"width": 10.0}, "smooth": {"width": 30.0}, "apart": {"width": 10.0, "prompt_tau_sd": 30.0}}


def interval(draws: np.ndarray) -> tuple[float, float]:
    row = summarize_draws({"t": draws}, ci_prob=0.94, ci_kind="hdi").iloc[0]
    return float(row["lower"]), float(row["upper"])


def fixed_design(sampler, steps) -> dict[str, tuple[float, float]]:
    """Every prompt × ANSWERS answers at ``steps``; the working posterior's 94 % interval per order parameter."""
    rows = []
    for s in steps:
        for p in PROMPTS:
            for op, ys in sampler(int(s), p, ANSWERS).items():
                rows += [{"step": int(s), "prompt": p, "order_parameter": op, "score": y} for y in ys]
    table, grid = pd.DataFrame(rows), grid_step.Grid.over(STEPS)
    return {op: interval(working_posterior(grid, table, op).tau_draws) for op in OPS}


def replicate(regime: dict, r: int, per_round: int | None = None, answers: int | None = None) -> dict:
    tau = dict(zip(OPS, np.random.default_rng(500 + r).uniform(250, 950, len(OPS))))
    make = lambda: pb.SimulatedSampler(tau, PROMPTS, seed=r, **regime)  # noqa: E731
    full = fixed_design(make(), STEPS)
    third = fixed_design(make(), STEPS[::3])
    target = max(hi - lo for lo, hi in full.values())
    sim = make()
    warnings.simplefilter("ignore", pb.DiagnosticsWarning)
    shape = {k: v for k, v in (("checkpoints_per_round", per_round), ("answers_per_prompt", answers)) if v is not None}
    ds, at_target = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=len(STEPS) * len(PROMPTS) * ANSWERS,
                                           target_width=target, final_fit=False, progress=False, seed=r, **shape)
    t_table = at_target.transition_steps()
    stop = json.loads(ds.attrs["adaptive_design"])[-1].get("stop", "")
    same_width = {"answers": int(ds.attrs["adaptive_answers"]), "reached": stop == "target width reached",
                  "floor": stop.startswith("target width below the floor")}
    _, res = pb.evaluate_adaptively(make(), STEPS, PROMPTS, budget=len(STEPS) * len(PROMPTS) * ANSWERS // 3,
                                    final_fit=False, progress=False, seed=r, **shape)
    table = res.transition_steps()
    adaptive = {op: (float(table.loc[op, "lower"]), float(table.loc[op, "upper"])) for op in OPS}
    cover = lambda iv: [iv[op][0] <= tau[op] <= iv[op][1] for op in OPS]  # noqa: E731
    width = lambda iv: [iv[op][1] - iv[op][0] for op in OPS]  # noqa: E731
    return {"target": target, **same_width, "cover_full": cover(full), "cover_third": cover(third),
            "cover_target": cover({op: (float(t_table.loc[op, "lower"]), float(t_table.loc[op, "upper"])) for op in OPS}),
            "cover_adaptive": cover(adaptive), "w_third": width(third), "w_adaptive": width(adaptive),
            "w_full": width(full)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--regimes", default="sharp,smooth,apart")
    ap.add_argument("--checkpoints-per-round", type=int, default=None, help="default: evaluate_adaptively's")
    ap.add_argument("--answers-per-prompt", type=int, default=None, help="per round; default: evaluate_adaptively's")
    args = ap.parse_args()
    full_n = len(STEPS) * len(PROMPTS) * ANSWERS
    print(f"full grid: {len(STEPS)} checkpoints x {len(PROMPTS)} prompts x {ANSWERS} answers = {full_n} judged answers; "
          f"{len(OPS)} order parameters; {args.reps} replicates per regime\n")
    print("| regime | full-grid width (median) | answers to reach it, adaptive (median, range) | ratio | reached (floor stops) | "
          "width at 1/3 budget: adaptive / every 3rd ckpt | 94 % coverage: full / every 3rd / adaptive at 1/3 / "
          "adaptive at target | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.regimes.split(","):
        t0 = time.time()
        out = [replicate(REGIMES[name], r, args.checkpoints_per_round, args.answers_per_prompt) for r in range(args.reps)]
        answers = np.array([o["answers"] for o in out])
        cov = {k: np.mean(np.concatenate([o[k] for o in out]))
               for k in ("cover_full", "cover_third", "cover_adaptive", "cover_target")}
        print(f"| {name} | {np.median([o['target'] for o in out]):.1f} | {np.median(answers):.0f} "
              f"({answers.min()}–{answers.max()}) | {full_n / np.median(answers):.1f}× | "
              f"{sum(o['reached'] for o in out)}/{len(out)} ({sum(o['floor'] for o in out)}) | "
              f"{np.median(np.concatenate([o['w_adaptive'] for o in out])):.1f} / "
              f"{np.median(np.concatenate([o['w_third'] for o in out])):.1f} | "
              f"{cov['cover_full']:.2f} / {cov['cover_third']:.2f} / {cov['cover_adaptive']:.2f} / "
              f"{cov['cover_target']:.2f} "
              f"(n={len(out) * len(OPS)}) | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
