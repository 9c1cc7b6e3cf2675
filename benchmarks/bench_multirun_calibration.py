"""Benchmark: calibration of the multi-run model's population-tau interval on simulated studies.

Each study: 4 runs (seeds) of one order parameter, run taus drawn around a population tau (sd 40 steps),
12 checkpoints x 3 prompts x 12 samples per run (0-100 scores, sigmoid width 30 steps, prompt tau sd 5,
prompt level sd 0.2 logit, concentration 6); the population tau is drawn uniformly in [300, 700] of a
1000-step run. Every study is fitted with ``ChangePointModel(runs).fit(chains=2, draws, tune)`` and the
HDI of the population tau (and of each run's tau) at 50 / 80 / 94 % is checked against the known truth. Coverage near the
nominal level (within the binomial sd sqrt(p(1-p)/n)) says the interval means what it says.

    .venv/bin/python benchmarks/bench_multirun_calibration.py [--studies 60] [--draws 400] [--tune 500]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from tqdm import tqdm

import phasebayes as pb

SMALL = dict(n_steps=12, n_prompts=3, n_samples=12, width=30.0, prompt_tau_sd=5.0, prompt_level_sd=0.2,
             concentration=6.0, n_grad_spikes=0)
PROBS = (0.5, 0.8, 0.94)


def one_study(i: int, *, seed0: int, draws: int, tune: int, n_runs: int = 4, sampler: str = "nutpie") -> dict:
    """Simulate and fit study ``i``; return hits per probability, interval widths, diagnostics."""
    rng = np.random.default_rng(seed0 + i)
    tau = float(rng.uniform(300, 700))
    runs, truth = pb.simulate_study(n_runs=n_runs, order_parameters=["a"], tau={"a": tau}, run_tau_sd=40.0,
                                seed=seed0 + i, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pb.ChangePointModel(runs).fit(random_seed=i, draws=draws, tune=tune, chains=2, progressbar=False,
                                            warn=False, sampler=sampler)
    out = {"div": res.n_divergences, "tau": tau}
    for p in PROBS:
        row = res.transition_steps(ci_prob=p).loc["a"]
        out[p] = (bool(row["lower"] <= tau <= row["upper"]), float(row["upper"] - row["lower"]))
        per_run = res.run_transition_steps(ci_prob=p)
        lo, hi = per_run["lower"].to_numpy(), per_run["upper"].to_numpy()
        true_run = truth.run_tau["a"]  # the runs' taus (each run's prompt taus scatter around it, sd 5 steps)
        out[("run", p)] = (list((lo <= true_run) & (true_run <= hi)), list(hi - lo))
    out["median_err"] = float(res.transition_steps().loc["a", "median"] - tau)
    out["run_err"] = list(res.run_transition_steps()["median"].to_numpy() - truth.run_tau["a"])
    out["rhat"] = float(res.diagnostics()["r_hat"].max())
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=60)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--seed0", type=int, default=1000)
    parser.add_argument("--sampler", default="nutpie", choices=["pymc", "nutpie"], help="NUTS implementation")
    args = parser.parse_args()
    t = time.perf_counter()
    rows = []
    for i in tqdm(range(args.studies), desc="studies"):
        rows.append(one_study(i, seed0=args.seed0, draws=args.draws, tune=args.tune, sampler=args.sampler))
        if (i + 1) % 10 == 0:  # running coverage, so that an interrupted run still says something
            cov = "  ".join(f"{p:.0%}: {np.mean([r[p][0] for r in rows]):.2f}" for p in PROBS)
            cov += "  per run " + "  ".join(f"{p:.0%}: {np.mean(np.concatenate([r[('run', p)][0] for r in rows])):.2f}"
                                             for p in PROBS)
            tqdm.write(f"after {i + 1} studies: coverage {cov}")
    n = len(rows)
    print(f"{n} simulated studies (4 runs x 12 checkpoints x 3 prompts x 12 samples, run tau sd 40 steps), "
          f"2 chains x {args.draws} draws after {args.tune} tuning steps ({args.sampler}); {time.perf_counter() - t:.0f} s")
    print(f"{'interval':>14s} {'coverage':>9s} {'binomial sd':>11s} {'mean width (steps)':>19s}")
    for p in PROBS:
        hits = np.array([r[p][0] for r in rows])
        width = np.mean([r[p][1] for r in rows])
        print(f"{f'{p:.0%} HDI':>14s} {hits.mean():9.3f} {np.sqrt(p * (1 - p) / n):11.3f} {width:19.1f}")
    print("per-run tau (each of the 4 runs of every study):")
    for p in PROBS:
        hits = np.concatenate([r[("run", p)][0] for r in rows])
        width = np.mean(np.concatenate([r[("run", p)][1] for r in rows]))
        print(f"{f'{p:.0%} HDI':>14s} {hits.mean():9.3f} {np.sqrt(p * (1 - p) / len(hits)):11.3f} {width:19.1f}")
    run_err = np.concatenate([r["run_err"] for r in rows])
    print(f"per-run posterior median - truth: mean {run_err.mean():.1f}, rms {np.sqrt(np.mean(run_err ** 2)):.1f} steps; "
          f"max R-hat over studies {max(r['rhat'] for r in rows):.3f}")
    err = np.array([r["median_err"] for r in rows])
    print(f"posterior median - truth: mean {err.mean():.1f}, rms {np.sqrt(np.mean(err ** 2)):.1f} steps; "
          f"fits with divergences: {sum(r['div'] > 0 for r in rows)} of {n}")


if __name__ == "__main__":
    main()
