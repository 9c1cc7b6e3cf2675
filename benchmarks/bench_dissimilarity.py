"""Benchmark: dissimilarity curves and decomposition on 100 checkpoints × 8 prompts × 50 samples.

Run with ``python benchmarks/bench_dissimilarity.py`` (``--quick`` skips the hierarchical fit).
Prints wall times (best of ``--repeat`` runs for the curves) for window 5 and all three measures, the
Bayesian-bootstrap decomposition and the hierarchical (PyMC) fit, plus a check against the exact truth.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import phasebayes as pb
from phasebayes.simulate_outputs import simulate_outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the hierarchical PyMC fit")
    args = ap.parse_args()

    t0 = time.perf_counter()
    ds, truth = simulate_outputs(args.steps, args.prompts, args.samples, seed=0, step_spacing=10, tau_spread=20.0,
                                 logp_offset=-3000.0, logp_offset_sd=500.0)
    print(f"grid: {args.steps} checkpoints x {args.prompts} prompts x {args.samples} samples, window {args.window}, "
          f"{ds.sizes['order_parameter']} order parameters (+ joint); logp array {ds['logp'].nbytes / 1e6:.0f} MB; "
          f"simulated in {time.perf_counter() - t0:.2f} s")

    from phasebayes.dissimilarity import likelihood_terms

    lp = ds["logp"].transpose("step", "prompt", "sample", "ref_step").values
    for measure in ("linear", "tv", "js"):
        best_total, best_all = np.inf, np.inf
        for _ in range(args.repeat):
            t = time.perf_counter()
            likelihood_terms(lp, args.window, measure)
            best_total = min(best_total, time.perf_counter() - t)
            t = time.perf_counter()
            res = pb.dissimilarity(ds, window=args.window, measure=measure)
            best_all = min(best_all, time.perf_counter() - t)
        true = truth.dissimilarity(args.window, measure)["total"].mean(1)
        err = np.max(np.abs(res.total.values - true))
        print(f"dissimilarity measure={measure:6s}: total (exact likelihood) {best_total:6.3f} s; "
              f"full call incl. {ds.sizes['order_parameter'] + 1} order-parameter curves "
              f"({res.data.attrs['bias_correction']} correction, bootstrap SEs) {best_all:6.3f} s; "
              f"max |total - truth| = {err:.4f}")

    t = time.perf_counter()
    dec = pb.decompose(ds, window=args.window)
    t_setup = time.perf_counter() - t
    t = time.perf_counter()
    res = dec.fit(method="bootstrap", n_draws=400)
    t_boot = time.perf_counter() - t
    print(f"decompose setup {t_setup:.2f} s; fit(method='bootstrap', n_draws=400) {t_boot:.2f} s")
    print(res.fractions()[["mean", "lower", "upper", "estimate"]].round(3).to_string())
    b = int(np.argmin(np.abs(res.data["mid_step"].values - res.peak_step)))
    print("true ratio of prompt-averaged D's at the peak:",
          {k: round(v["ratio_of_means"], 3) for k, v in truth.fractions(args.window, boundary=b).items()})
    if not args.quick:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = dec.fit(n_draws=400, draws=1000, tune=1000, chains=2, cores=2)
        t_h = time.perf_counter() - t
        post = res.posterior.attrs
        print(f"fit(method='hierarchical', 2 chains x 1000 draws, nuts_sampler='pymc') {t_h:.2f} s "
              f"(divergences {post['divergences']}, max R-hat {post['max_rhat_mu']:.3f})")
        print(res.fractions()[["mean", "lower", "upper", "sd_prompt"]].round(3).to_string())
    b = int(np.argmin(np.abs(res.data["mid_step"].values - res.peak_step)))
    print("true mean over prompts of per-prompt fractions at the peak:", {k: round(v["mean_of_ratios"], 3) for k, v in truth.fractions(args.window, boundary=b).items()})


if __name__ == "__main__":
    main()
