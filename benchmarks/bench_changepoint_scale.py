"""Benchmark: how the change-point model's cost grows with study size.

One factor at a time around a base of 1 order parameter x 8 prompts x 100 checkpoints x 1 run x 50
samples per cell (0-100 judge scores, sigmoid transition, default geometry):

- order parameters 1 -> 3 -> 10, prompts 8 -> 32 -> 64, checkpoints 20 -> 100 -> 500, runs 1 -> 4 -> 8
  (several runs: the multi-run model), samples per cell 10 -> 50 -> 200 (cost should not change).

Each configuration runs in its own process and reports: ``prep s`` (data -> sufficient statistics),
``grad us`` (one log-density + gradient evaluation of the compiled PyMC model, microseconds, median of
200), ``fit s`` (wall time of ``fit(chains=2, draws, tune)``, compilation included), ``leapfrog/draw``
and ``peak MB`` (peak resident memory of the process, which includes Python + PyMC, ~400 MB).
The baseline for the samples-per-cell rows is the same model at 10 samples per cell (ratio column).

    .venv/bin/python benchmarks/bench_changepoint_scale.py [--draws 300] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

import numpy as np

BASE = {"K": 1, "P": 8, "T": 100, "R": 1, "N": 50}
GRID = {"K": [3, 10], "P": [32, 64], "T": [20, 500], "R": [4, 8], "N": [10, 200]}


def one(cfg: dict, draws: int, fit: bool = True) -> dict:
    """Fit one configuration in this process and return its measurements."""
    import phasebayes as pb

    ops = [f"op{k}" for k in range(cfg["K"])]
    kw = dict(n_steps=cfg["T"], n_prompts=cfg["P"], n_samples=cfg["N"], order_parameters=ops, width=40.0,
              prompt_level_sd=0.3, concentration=4.0, n_grad_spikes=0)
    if cfg["R"] > 1:
        data, _ = pb.simulate_study(n_runs=cfg["R"], run_tau_sd=40.0, seed=0, **kw)
    else:
        data, _ = pb.simulate_run(seed=0, **kw)
    t = time.perf_counter()
    model = pb.ChangePointModel(data)
    prep = time.perf_counter() - t
    pm_model = model.build()
    fn = pm_model.compile_logp_dlogp() if hasattr(pm_model, "compile_logp_dlogp") else None
    if fn is None:
        logp, dlogp = pm_model.compile_logp(), pm_model.compile_dlogp()
        fn = lambda p: (logp(p), dlogp(p))  # noqa: E731
    point = pm_model.initial_point()
    fn(point)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        fn(point)
        times.append(time.perf_counter() - t)
    if not fit:
        return {"prep_s": prep, "grad_us": 1e6 * float(np.median(times)), "fit_s": float("nan"),
                "leapfrog": float("nan"), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "div": -1}
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(draws=draws, tune=draws, chains=2, random_seed=0, progressbar=False, warn=False)
    fit = time.perf_counter() - t
    steps = float(res.sample_stats["n_steps"].mean()) if "n_steps" in res.sample_stats else float("nan")
    return {"prep_s": prep, "grad_us": 1e6 * float(np.median(times)), "fit_s": fit, "leapfrog": steps,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "div": res.n_divergences}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=300, help="draws (and tuning steps) per chain, 2 chains")
    parser.add_argument("--quick", action="store_true", help="only the base and the largest value of each factor")
    parser.add_argument("--grad-only", action="store_true", help="no fit: data prep, gradient cost and memory only")
    parser.add_argument("--factors", default=",".join(GRID), help="comma-separated factors to vary (K,P,T,R,N)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one), args.draws, fit=not args.grad_only)))
        return
    configs = [dict(BASE)]
    for factor, values in ((f, GRID[f]) for f in args.factors.split(",")):
        for v in (values[-1:] if args.quick else values):
            configs.append({**BASE, factor: v})
    rows = []
    for cfg in configs:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg), "--draws", str(args.draws)]
                             + (["--grad-only"] if args.grad_only else []),
                             capture_output=True, text=True)
        if out.returncode:
            print(f"{cfg} failed:\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((cfg, r))
        print(f"  done {cfg}: fit {r['fit_s']:.1f} s", flush=True)
    base_grad = {r["grad_us"] for c, r in rows if c == BASE}
    base_grad = base_grad.pop() if base_grad else float("nan")
    print(f"\n2 chains x {args.draws} draws after {args.draws} tuning steps; cells = K x R x T x P.")
    print(f"{'K':>3s} {'P':>3s} {'T':>4s} {'R':>2s} {'N':>4s} {'cells':>7s} {'scores':>9s} {'prep s':>7s} {'grad us':>8s} "
          f"{'x base':>7s} {'fit s':>7s} {'leapfrog/draw':>13s} {'peak MB':>8s} {'div':>4s}")
    for c, r in rows:
        cells = c["K"] * c["R"] * c["T"] * c["P"]
        print(f"{c['K']:3d} {c['P']:3d} {c['T']:4d} {c['R']:2d} {c['N']:4d} {cells:7d} {cells * c['N']:9d} {r['prep_s']:7.2f} "
              f"{r['grad_us']:8.0f} {r['grad_us'] / base_grad:6.1f}x {r['fit_s']:7.1f} {r['leapfrog']:13.1f} "
              f"{r['peak_mb']:8.0f} {r['div']:4d}")
    print("\nSamples per cell change only 'prep s' (computing the statistics) and memory for the raw scores; the "
          "gradient cost depends on cells only. JAX samplers (numpyro/blackjax) were not measured: not installed.")


if __name__ == "__main__":
    main()
