"""Benchmark: how the change-point model's cost grows with study size, and which NUTS sampler is cheapest.

One factor at a time around a base of 1 order parameter x 8 prompts x 100 checkpoints x 1 run x 50
samples per cell (0-100 judge scores, sigmoid transition, default geometry):

- order parameters 1 -> 3 -> 10, prompts 8 -> 32 -> 64, checkpoints 20 -> 100 -> 500, runs 1 -> 4 -> 8
  (several runs: the multi-run model), samples per cell 10 -> 50 -> 200 (cost should not change).

Each configuration (and sampler) runs in its own process. Two modes:

``--grad-only``: ``prep s`` (data -> sufficient statistics), ``grad us`` (one log-density + gradient
evaluation of the compiled PyMC model, microseconds, median of 200) and ``peak MB`` (peak resident memory
of the process, which includes Python + PyMC, ~400 MB).

Full fits (default): ``fit(draws, tune, chains)`` with each ``--sampler`` (nutpie, numpyro, blackjax,
pymc) on the same rows; reports ``wall s`` and ``CPU s`` (user + system time of the process's threads and
child processes, compilation / JIT included), the smallest bulk ESS over the tau quantities, ``ESS/CPU-s``,
the largest R-hat of ``result.diagnostics()``, divergences, leapfrog steps per draw and ``peak MB``; the
``x nutpie`` column is ESS/CPU-s against nutpie on the same row in the same invocation.

    .venv/bin/python benchmarks/bench_changepoint_scale.py --grad-only
    .venv/bin/python benchmarks/bench_changepoint_scale.py --quick --draws 1000 --tune 1000 --chains 4 \
        --sampler nutpie,numpyro,blackjax [--factors T] [--no-base]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# import the phasebayes of the checkout this script lives in, not an editable install of another one
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BASE = {"K": 1, "P": 8, "T": 100, "R": 1, "N": 50}
GRID = {"K": [3, 10], "P": [32, 64], "T": [20, 500], "R": [4, 8], "N": [10, 200]}


def _data(cfg: dict):
    import phasebayes as pb

    ops = [f"op{k}" for k in range(cfg["K"])]
    kw = dict(n_steps=cfg["T"], n_prompts=cfg["P"], n_samples=cfg["N"], order_parameters=ops, width=40.0,
              prompt_level_sd=0.3, concentration=4.0, n_grad_spikes=0)
    if cfg["R"] > 1:
        return pb.simulate_study(n_runs=cfg["R"], run_tau_sd=40.0, seed=0, **kw)[0]
    return pb.simulate_run(seed=0, **kw)[0]


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # ru_maxrss is in KiB on Linux


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def grad_only(cfg: dict) -> dict:
    """Data prep, one compiled log-density + gradient evaluation and peak memory for one configuration."""
    import phasebayes as pb

    data = _data(cfg)
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
    return {"prep_s": prep, "grad_us": 1e6 * float(np.median(times)), "peak_mb": _peak_mb()}


def full_fit(cfg: dict, sampler: str, draws: int, tune: int, chains: int) -> dict:
    """Fit one configuration with one sampler in this process and return its measurements."""
    import phasebayes as pb

    model = pb.ChangePointModel(_data(cfg))
    wall, cpu = time.perf_counter(), _cpu_s()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit(draws=draws, tune=tune, chains=chains, random_seed=0, sampler=sampler,
                        progressbar=False, warn=False)
    wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
    diag = res.diagnostics()
    tau_rows = diag[[str(i).startswith("tau") for i in diag.index]]
    ess = float(tau_rows["ess_bulk"].min())
    steps = float(res.sample_stats["n_steps"].mean()) if "n_steps" in res.sample_stats else float("nan")
    return {"wall_s": wall, "cpu_s": cpu, "ess_tau": ess, "ess_per_cpu_s": ess / cpu,
            "max_rhat": float(diag["r_hat"].max()), "div": res.n_divergences, "leapfrog": steps,
            "peak_mb": _peak_mb()}


def _run_one(cfg: dict, args, sampler: str | None) -> dict | None:
    cmd = [sys.executable, __file__, "--one", json.dumps(cfg), "--draws", str(args.draws), "--tune", str(args.tune),
           "--chains", str(args.chains)] + (["--grad-only"] if sampler is None else ["--sampler", sampler])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        print(f"{cfg} {sampler or ''} failed:\n{out.stderr[-2000:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cells(c: dict) -> int:
    return c["K"] * c["R"] * c["T"] * c["P"]


def _print_grad(rows):
    base = [r["grad_us"] for c, r in rows if c == BASE]
    base_grad = base[0] if base else float("nan")
    print(f"{'K':>3s} {'P':>3s} {'T':>4s} {'R':>2s} {'N':>4s} {'cells':>7s} {'prep s':>7s} {'grad us':>8s} "
          f"{'x base':>7s} {'peak MB':>8s}")
    for c, r in rows:
        print(f"{c['K']:3d} {c['P']:3d} {c['T']:4d} {c['R']:2d} {c['N']:4d} {_cells(c):7d} {r['prep_s']:7.2f} "
              f"{r['grad_us']:8.0f} {r['grad_us'] / base_grad:6.1f}x {r['peak_mb']:8.0f}")


def _print_fits(rows, args):
    print(f"\n{args.chains} chains x {args.draws} draws after {args.tune} tuning steps, random_seed=0; "
          f"cells = K x R x T x P; CPU s = user + system of all threads and child processes.")
    print(f"{'K':>3s} {'P':>3s} {'T':>4s} {'R':>2s} {'N':>4s} {'cells':>6s} {'sampler':>8s} {'wall s':>7s} "
          f"{'CPU s':>7s} {'ESS tau':>8s} {'ESS/CPU-s':>9s} {'x nutpie':>8s} {'max R-hat':>9s} {'div':>4s} "
          f"{'leapfrog':>8s} {'peak MB':>8s}")
    for c, s, r in rows:
        ref = [r2 for c2, s2, r2 in rows if c2 == c and s2 == "nutpie"]
        ratio = r["ess_per_cpu_s"] / ref[0]["ess_per_cpu_s"] if ref else float("nan")
        print(f"{c['K']:3d} {c['P']:3d} {c['T']:4d} {c['R']:2d} {c['N']:4d} {_cells(c):6d} {s:>8s} {r['wall_s']:7.1f} "
              f"{r['cpu_s']:7.1f} {r['ess_tau']:8.0f} {r['ess_per_cpu_s']:9.2f} {ratio:7.2f}x {r['max_rhat']:9.3f} "
              f"{r['div']:4d} {r['leapfrog']:8.1f} {r['peak_mb']:8.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=1000, help="draws per chain (full fits)")
    parser.add_argument("--tune", type=int, default=1000, help="tuning steps per chain (full fits)")
    parser.add_argument("--chains", type=int, default=4, help="chains (full fits)")
    parser.add_argument("--sampler", default="nutpie",
                        help="comma-separated samplers to compare on every row: nutpie,numpyro,blackjax,pymc")
    parser.add_argument("--quick", action="store_true", help="only the base and the largest value of each factor")
    parser.add_argument("--no-base", action="store_true", help="skip the base row")
    parser.add_argument("--grad-only", action="store_true", help="no fit: data prep, gradient cost and memory only")
    parser.add_argument("--factors", default=",".join(GRID), help="comma-separated factors to vary (K,P,T,R,N)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        cfg = json.loads(args.one)
        out = grad_only(cfg) if args.grad_only else full_fit(cfg, args.sampler, args.draws, args.tune, args.chains)
        print(json.dumps(out))
        return
    configs = [] if args.no_base else [dict(BASE)]
    for factor, values in ((f, GRID[f]) for f in args.factors.split(",") if f):
        for v in (values[-1:] if args.quick else values):
            configs.append({**BASE, factor: v})
    samplers = [None] if args.grad_only else args.sampler.split(",")
    rows = []
    for cfg in configs:
        for sampler in samplers:
            r = _run_one(cfg, args, sampler)
            if r is not None:
                rows.append((cfg, sampler, r))
                print(f"  done {cfg} {sampler or 'grad'}: {json.dumps(r)}", flush=True)
    if args.grad_only:
        _print_grad([(c, r) for c, _, r in rows])
    else:
        _print_fits(rows, args)


if __name__ == "__main__":
    main()
