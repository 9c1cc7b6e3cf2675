"""The report's figures (each a matplotlib Figure; Agg backend, no display needed)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ..plotting import pyplot

__all__ = ["report_figures", "plot_ppc"]


def plot_ppc(changepoint, ci_prob: float = 0.94, n_draws: int = 200):
    """Posterior predictive check: prompt-averaged observed means (dots) against the replicated ones
    (median line and ``ci_prob`` band) per order parameter; the title gives the share of (step, prompt)
    cells whose observed mean falls inside its predictive interval."""
    plt = pyplot(headless=True)
    pp = changepoint.posterior_predictive(n_draws=n_draws)
    ops = [str(o) for o in pp["order_parameter"].values]
    fig, axes = plt.subplots(1, len(ops), figsize=(3.2 * len(ops), 2.8), squeeze=False)
    lo_q, hi_q = (1 - ci_prob) / 2, 1 - (1 - ci_prob) / 2
    steps = pp["step"].values
    for k, op in enumerate(ops):
        ax = axes[0, k]
        rep = pp["cell_mean"].sel(order_parameter=op)
        obs = pp["observed"].sel(order_parameter=op)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rep_avg = rep.mean("prompt").values  # (draw, step)
            ax.fill_between(steps, np.nanquantile(rep_avg, lo_q, axis=0), np.nanquantile(rep_avg, hi_q, axis=0),
                            color="tab:blue", alpha=0.25, lw=0, label=f"replicated {ci_prob:.0%}")
            ax.plot(steps, np.nanmedian(rep_avg, axis=0), color="tab:blue", lw=1)
            ax.plot(steps, obs.mean("prompt").values, "ko", ms=3, label="observed")
            lo = rep.quantile(lo_q, dim="draw").values
            hi = rep.quantile(hi_q, dim="draw").values
            o = obs.values
            ok = np.isfinite(o)
            inside = float(np.mean((o[ok] >= lo[ok] - 1e-9) & (o[ok] <= hi[ok] + 1e-9))) if ok.any() else float("nan")
        ax.set_title(f"{op}: {inside:.0%} of cells inside", fontsize=9)
        ax.set_xlabel("training step")
        if k == 0:
            ax.set_ylabel("mean score (prompt average)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def report_figures(analysis, max_prompts: int = 6) -> dict[str, tuple[str, Callable[[], object]]]:
    """Figure builders of the report: ``name -> (caption, function returning a Figure)``.

    Built lazily so that one failing figure does not stop the report (the page says what failed).
    """
    a = analysis
    ci = f"{a.ci_prob:.0%} {a.ci_kind.upper()}"
    cp = a.changepoint
    figs: dict[str, tuple[str, Callable[[], object]]] = {
        "trajectories": (f"Score trajectories: observed cell means per prompt (dots), fitted prompt curves (thin), "
                         f"population curve with its {a.ci_prob:.0%} band (black) and the posterior τ (red line and {ci} band).",
                         lambda: cp.plot_trajectories(ci_prob=a.ci_prob, max_prompts=max_prompts)),
        "tau": (f"Posterior of the transition step τ per order parameter ({ci} marked).",
                lambda: cp.plot_tau(ci_prob=a.ci_prob)),
    }
    if a.peak is not None:
        figs["gradient_peak"] = (f"Training signal ({a.peak.signal}) with the fitted smooth curve and the posterior of its peak ({ci}).",
                                 lambda: a.peak.plot(ci_prob=a.ci_prob))
    for name, res in (getattr(a, "references", None) or {}).items():
        figs[f"reference_{name}"] = (f"Reference signal {name} with the fitted smooth curve and the posterior of its "
                                     f"{getattr(res, 'kind', 'peak')} ({ci}).", lambda res=res: res.plot(ci_prob=a.ci_prob))
    if a.dissimilarity is not None:
        figs["dissimilarity"] = ("Dissimilarity between the left and right windows at each checkpoint boundary: total change "
                                 "of the output distribution (top, exact-likelihood estimate with its normal band) and per order "
                                 "parameter (bottom: posterior mean of the histogram model with its equal-tailed band).",
                                 lambda: a.dissimilarity.plot())
    if a.decomposition is not None:
        figs["fractions"] = (f"Decomposition: share of the total change captured by each order parameter (and jointly) at the "
                             f"peak of the total change, posterior median with {a.ci_prob:.0%} equal-tailed intervals (grey: "
                             "not estimable).", lambda: a.decomposition.plot_fractions())
        figs["fraction_curve"] = ("Fractions ρ_k along training, posterior median with equal-tailed bands; dashed line: peak of "
                                  "the total change.", lambda: a.decomposition.plot_curve())
        figs["peak_vs_tau"] = (f"Peak of the total change (with its interval) against the posterior τ of each order parameter ({ci}).",
                               lambda: a.decomposition.plot_transition(a.transition_steps()))
    if getattr(a, "length", None) is not None:
        from ..stats.plots import plot_length_curve

        figs["length"] = ("Total change at its peak when answers are cut to their first m tokens (± 2 SE), and for whole "
                          "answers (dashed): fractions of the total change hold at one answer length.",
                          lambda: plot_length_curve(a.length))
    figs["ppc"] = (f"Posterior predictive check: observed prompt-averaged means (dots) against replicated data ({ci} band).",
                   lambda: plot_ppc(cp, ci_prob=a.ci_prob))
    return figs
