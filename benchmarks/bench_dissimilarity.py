"""Benchmark: dissimilarity curves and the decomposition on 100 checkpoints × 8 prompts × 50 samples.

Run with ``python benchmarks/bench_dissimilarity.py``. Prints wall times for window 5 and all three
measures: the exact-likelihood total alone, the full call with the histogram posterior of every order
parameter at every boundary, and the decomposition at the peak only (``curve=False``) and with the
whole curve; plus the error against the exact truth, next to the plain binned plug-in a careful user
would compute from the same samples (the baseline: biased upwards, no interval).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import phasebayes as pb
from phasebayes.dissimilarity import discrete_divergence, likelihood_terms
from phasebayes.simulate_outputs import simulate_outputs
from phasebayes.stats.dissimilarity import prepare
from phasebayes.stats.score_bins import window_counts


def plugin(ds, window: int, measure: str) -> dict[str, np.ndarray]:
    """Baseline: per-prompt plug-in D of each order parameter's binned histogram, prompt-averaged."""
    prep = prepare(ds, window, measure)
    nl, nr = window_counts(prep.bins.joint_codes, prep.bins.n_joint, window)
    out = {}
    for k, name in enumerate(prep.bins.names + ["joint"]):
        M = prep.bins.marginal_matrix(k) if name != "joint" else np.eye(prep.bins.n_joint)
        pl, pr = nl @ M, nr @ M
        with np.errstate(invalid="ignore"):
            out[name] = np.nanmean(discrete_divergence(pl / pl.sum(-1, keepdims=True), pr / pr.sum(-1, keepdims=True), measure), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--window", type=int, default=5)
    args = ap.parse_args()
    t0 = time.perf_counter()
    ds, truth = simulate_outputs(args.steps, args.prompts, args.samples, seed=0, step_spacing=10, tau_spread=20.0,
                                 logp_offset=-3000.0, logp_offset_sd=500.0)
    print(f"grid: {args.steps} checkpoints x {args.prompts} prompts x {args.samples} samples, window {args.window}; "
          f"simulated in {time.perf_counter() - t0:.2f} s")
    lp = ds["logp"].transpose("step", "prompt", "sample", "ref_step").values
    for measure in ("linear", "tv", "js"):
        t = time.perf_counter()
        likelihood_terms(lp, args.window, measure)
        t_total = time.perf_counter() - t
        t = time.perf_counter()
        res = pb.dissimilarity(ds, window=args.window, measure=measure, n_draws=200)
        t_all = time.perf_counter() - t
        true = truth.dissimilarity(args.window, measure)
        base = plugin(ds, args.window, measure)
        err = {n: float(np.max(np.abs(res.data["d_op"].sel(order_parameter=n).values - true[n].mean(1)))) for n in base}
        err_base = {n: float(np.max(np.abs(base[n] - true[n].mean(1)))) for n in base}
        print(f"measure={measure:6s}: total {t_total:6.3f} s; full call (histogram posterior, {len(base)} curves, 200 draws) "
              f"{t_all:6.1f} s; max |total - truth| = {np.max(np.abs(res.total.values - true['total'].mean(1))):.4f}")
        for n in base:
            print(f"    {n:11s} max error: posterior mean {err[n]:.3f}  plug-in {err_base[n]:.3f}  "
                  f"(ratio {err_base[n] / max(err[n], 1e-9):.1f}x)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        peak = pb.decompose(ds, window=args.window).fit(curve=False)
        t_peak = time.perf_counter() - t
        t = time.perf_counter()
        pb.decompose(ds, window=args.window).fit(n_draws=300)
        t_curve = time.perf_counter() - t
    print(f"decompose: at the peak only {t_peak:.1f} s; whole fraction curve (300 draws) {t_curve:.1f} s")
    print(peak.fractions()[["median", "lower", "upper", "p_zero", "p_one"]].round(3).to_string())
    b = int(np.argmin(np.abs(peak.data["mid_step"].values - peak.peak_step)))
    print("true ratio of prompt-averaged D's at the peak:",
          {k: round(v["ratio_of_means"], 3) for k, v in truth.fractions(args.window, boundary=b).items()})


if __name__ == "__main__":
    main()
