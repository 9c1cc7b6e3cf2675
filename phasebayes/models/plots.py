"""Matplotlib figures for change-point and gradient-peak results (each function returns a Figure)."""

from __future__ import annotations

import numpy as np

from ..intervals import interval, resolve_ci
from ..plotting import pyplot


def plot_trajectories(result, ci_prob: float | None = None, max_prompts: int = 8):
    """Observed cell means (dots), fitted per-prompt curves (thin), population curve with band, tau band."""
    plt = pyplot()
    prob, _ = resolve_ci(ci_prob, None)
    model = result.model
    pred = result.predict()
    ppc = result.posterior_predictive(n_draws=2)
    ops = model.order_parameters
    fig, axes = plt.subplots(len(ops), 1, figsize=(8, 2.8 * len(ops)), squeeze=False, sharex=True)
    colors = plt.get_cmap("tab10")
    tau_table = result.transition_steps(prob) if result.config.transition != "none" else None
    for k, op in enumerate(ops):
        ax = axes[k, 0]
        obs = ppc["observed"].sel(order_parameter=op)
        for j, p in enumerate(model.prompts[:max_prompts]):
            c = colors(j % 10)
            ax.plot(model.steps, obs.sel(prompt=p), "o", ms=3, color=c, alpha=0.6)
            ax.plot(pred["step"], pred["mean_prompt"].sel(order_parameter=op, prompt=p).median("draw"), "-", lw=0.8, color=c, alpha=0.7)
        pop = pred["mean_population"].sel(order_parameter=op).values
        lo = np.quantile(pop, (1 - prob) / 2, axis=0)
        hi = np.quantile(pop, 1 - (1 - prob) / 2, axis=0)
        ax.fill_between(pred["step"], lo, hi, color="k", alpha=0.2, lw=0)
        ax.plot(pred["step"], np.median(pop, axis=0), "k-", lw=2, label="population curve")
        if tau_table is not None:
            row = tau_table.loc[op]
            ax.axvspan(row["lower"], row["upper"], color="tab:red", alpha=0.15,
                       label=f"τ {prob:.0%} {tau_table.attrs['ci_kind'].upper()}")
            ax.axvline(row["median"], color="tab:red", lw=1.5)
        ax.set_ylabel(op)
        ax.legend(loc="best", fontsize=7)
    axes[-1, 0].set_xlabel("training step")
    fig.suptitle("Scores per checkpoint: observed prompt means, fitted curves, transition τ")
    fig.tight_layout()
    return fig


def plot_tau(result, ci_prob: float | None = None):
    """Histogram of the tau posterior per order parameter, with its credible interval."""
    plt = pyplot()
    prob, kind = resolve_ci(ci_prob, None)
    tau = result.draws("tau")
    ops = result.order_parameters
    fig, ax = plt.subplots(figsize=(8, 3))
    for k, op in enumerate(ops):
        ax.hist(tau[:, k], bins=60, alpha=0.5, density=True, label=op)
        lo, hi = interval(tau[:, k], prob, kind)
        ax.plot([lo, hi], [-0.02 * (k + 1)] * 2, lw=3, color=f"C{k}")
    ax.set_xlabel("transition step τ (training steps)")
    ax.set_ylabel("posterior density")
    ax.set_title(f"Posterior of τ (bars: {prob:.0%} {kind.upper()})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_gradient_peak(result, ci_prob: float | None = None):
    """Training signal, fitted smooth curve with band, and the peak's credible interval."""
    plt = pyplot()
    prob, kind = resolve_ci(ci_prob, None)
    fig, ax = plt.subplots(figsize=(8, 3))
    y = -result.y if getattr(result, "kind", "peak") == "trough" else result.y  # a trough is fitted negated
    y = np.exp(y) if result.log_scale else y
    ax.plot(result.steps, y, ".", ms=2, color="0.5", label=result.signal)
    curve = result.curve().values
    ax.fill_between(result.steps, np.quantile(curve, 0.03, 0), np.quantile(curve, 0.97, 0), color="tab:blue", alpha=0.3, lw=0)
    ax.plot(result.steps, np.median(curve, 0), color="tab:blue", label="fitted bump + trend")
    lo, hi = interval(result.peak_draws(), prob, kind)
    ax.axvspan(lo, hi, color="tab:orange", alpha=0.3, label=f"peak {prob:.0%} {kind.upper()}")
    if result.log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(result.signal)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
