"""Benchmark: ChangePointModel vs a naive per-observation PyMC change-point model (run by hand).

Paper-scale data: 100 checkpoints × 8 prompts × 50 samples × 3 order parameters (120,000 judged
scores). Prints wall time, ESS/s of tau (min over order parameters), divergences and R-hat for

- phasebayes sigmoid (sufficient statistics, partial pooling; 4 chains × 1000 draws),
- phasebayes step (exact marginalisation; 4 chains × 1000 draws),
- naive: one Beta likelihood term per observation and a discrete switchpoint per order parameter
  sampled by Metropolis next to NUTS — the way PyMC's coal-mining change-point example is written,
- phasebayes sigmoid again with 100 samples per cell (cost should not grow with samples),

and the ratios against the naive model measured in the same run.

    .venv/bin/python benchmarks/bench_changepoint.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import arviz as az
import numpy as np

import phasebayes as pb


def tau_ess(draws: np.ndarray) -> tuple[float, float]:
    """min bulk ESS and max R-hat over order parameters; draws (chain, draw, K)."""
    ess = [float(az.ess(draws[..., k], method="bulk")) for k in range(draws.shape[-1])]
    rhat = [float(az.rhat(draws[..., k])) for k in range(draws.shape[-1])]
    return min(ess), max(rhat)


def run_phasebayes(ds, transition, draws, tune):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pb.ChangePointModel(ds, transition=transition).fit(draws=draws, tune=tune, chains=4, random_seed=0,
                                                                 progressbar=False, warn=False)
    wall = time.perf_counter() - t
    ess, rhat = tau_ess(res.posterior["tau"].transpose("chain", "draw", "order_parameter").values)
    out = {"wall_s": wall, "ess": ess, "rhat": rhat, "div": res.n_divergences}
    lv = [tau_ess(res.posterior[v].transpose("chain", "draw", "order_parameter").values) for v in ("before", "after")]
    out["ess_all"] = min([ess] + [e for e, _ in lv])
    out["rhat_all"] = max([rhat] + [r for _, r in lv])
    return out


def run_naive(ds, draws, tune, chains):
    import pymc as pm

    y = ds["score"].values  # (K, T, P, N)
    K, T, P, N = y.shape
    steps = ds["step"].values
    x = np.clip(y / 100.0, 0.005, 0.995)
    t_obs = np.broadcast_to(np.arange(T)[:, None, None], (T, P, N)).ravel()
    with pm.Model() as model:
        for k in range(K):
            switch = pm.DiscreteUniform(f"switch_{k}", lower=1, upper=T - 1)
            early = pm.Beta(f"early_{k}", 1, 1)
            late = pm.Beta(f"late_{k}", 1, 1)
            phi = pm.LogNormal(f"phi_{k}", np.log(5), 1.5)
            mu = pm.math.switch(switch > t_obs, early, late)
            pm.Beta(f"obs_{k}", alpha=mu * phi, beta=(1 - mu) * phi, observed=x[k].ravel())
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = pm.sample(draws=draws, tune=tune, chains=chains, cores=min(chains, os.cpu_count() or 1),
                              random_seed=0, progressbar=False, compute_convergence_checks=False, nuts_sampler="pymc")
        wall = time.perf_counter() - t
    post = idata["posterior"]
    sw = np.stack([steps[post[f"switch_{k}"].values] for k in range(K)], axis=-1).astype(float)
    ess, rhat = tau_ess(sw)
    div = int(idata["sample_stats"]["diverging"].values.sum())
    lv = [tau_ess(np.stack([post[f"{v}_{k}"].values for k in range(K)], axis=-1)) for v in ("early", "late")]
    return {"wall_s": wall, "ess": ess, "rhat": rhat, "div": div,
            "ess_all": min([ess] + [e for e, _ in lv]), "rhat_all": max([rhat] + [r for _, r in lv])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run (30 checkpoints) for a smoke check")
    args = parser.parse_args()
    n_steps = 30 if args.quick else 100
    common = dict(n_steps=n_steps, n_prompts=8, order_parameters=["alignment", "coherence", "verbosity"],
                  prompt_tau_sd=15.0, prompt_level_sd=0.2, concentration=4.0, width=40.0, seed=0)
    ds50, _ = pb.simulate_run(n_samples=50, **common)
    ds100, _ = pb.simulate_run(n_samples=100, **common)
    print(f"data: {n_steps} checkpoints x 8 prompts x 50 samples x 3 order parameters = {ds50['score'].size:,} scores")

    rows = {}
    rows["phasebayes sigmoid (4x1000)"] = run_phasebayes(ds50, "sigmoid", 1000, 1000)
    rows["phasebayes step (4x1000)"] = run_phasebayes(ds50, "step", 1000, 1000)
    rows["phasebayes sigmoid, 100 samples/cell"] = run_phasebayes(ds100, "sigmoid", 1000, 1000)
    rows["naive per-observation (4x500)"] = run_naive(ds50, 500, 500, 4)

    naive = rows["naive per-observation (4x500)"]
    naive_rate = naive["ess"] / naive["wall_s"]
    naive_all = naive["ess_all"] / naive["wall_s"]
    print("\nESS: bulk ESS of tau (min over order parameters); 'all' also covers the before/after levels.")
    print("A tau posterior concentrated on one grid step has no variance: its ESS is the draw count and R-hat NaN.")
    print(f"\n{'model':40s} {'wall s':>7s} {'ESS tau':>8s} {'ESS/s':>7s} {'vs naive':>8s} {'ESS all':>8s} "
          f"{'ESS/s':>7s} {'vs naive':>8s} {'R-hat':>7s} {'div':>4s}")
    for name, r in rows.items():
        rate = r["ess"] / r["wall_s"]
        rate_all = r["ess_all"] / r["wall_s"]
        print(f"{name:40s} {r['wall_s']:7.1f} {r['ess']:8.0f} {rate:7.1f} {rate / naive_rate:7.1f}x {r['ess_all']:8.0f} "
              f"{rate_all:7.1f} {rate_all / naive_all:7.1f}x {r['rhat_all']:7.4f} {r['div']:4d}")
    s50 = rows["phasebayes sigmoid (4x1000)"]["wall_s"]
    s100 = rows["phasebayes sigmoid, 100 samples/cell"]["wall_s"]
    print(f"\ntime ratio 100 vs 50 samples per cell (sigmoid): {s100 / s50:.2f}")
    print("wall times include model compilation; other processes on this 2-core machine add noise.")


if __name__ == "__main__":
    main()
