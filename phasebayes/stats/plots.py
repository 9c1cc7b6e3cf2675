"""Figures of the dissimilarity curves and the decomposition (matplotlib, imported lazily)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import ModelSpecError
from ..plotting import pyplot

__all__ = ["plot_dissimilarity", "plot_fractions", "plot_fraction_curve", "plot_peak_vs_tau", "plot_length_curve"]


def plot_dissimilarity(res, *, ax=None):
    """Total change (± normal band) and per-order-parameter posterior curves (interval bands)."""
    plt = pyplot()

    df = res.to_dataframe()
    fig, axes = (plt.subplots(2, 1, figsize=(7, 6), sharex=True) if ax is None else (ax.figure, [ax, ax]))
    unit = " [bits]" if res.measure == "js" else ""
    for curve, g in df.groupby("curve", sort=False):
        a = axes[0] if curve == "total" else axes[1]
        (line,) = a.plot(g["mid_step"], g["value"], color="k" if curve == "total" else None,
                         label=f"total ({res.total_estimator})" if curve == "total" else str(curve))
        a.fill_between(g["mid_step"], np.clip(g["lower"], 0, None), g["upper"], color=line.get_color(), alpha=0.2)
    if "d_total" in res.data:
        axes[0].axvline(res.peak_step(), color="k", ls=":", lw=1)
    for a, title in zip(axes[:2], ("total change", "order parameters (posterior mean, equal-tailed band)")):
        a.set_ylabel(f"D_{res.measure}{unit}")
        a.set_title(title if ax is None else "", fontsize=9)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    axes[-1].set_xlabel(f"training step (window L={res.data.attrs['window']}, band {df.attrs['ci_prob']:.0%})")
    fig.tight_layout()
    return fig


def plot_fractions(df: pd.DataFrame, *, ax=None, percent: bool = True):
    """Bar chart of a :meth:`DecompositionResult.fractions` table with its intervals."""
    plt = pyplot()

    fig, ax = (plt.subplots(figsize=(1.2 + 0.8 * len(df), 3.5)) if ax is None else (ax.figure, ax))
    f = 100.0 if percent else 1.0
    x = np.arange(len(df))
    med = np.nan_to_num(df["median"].to_numpy(float)) * f
    err = np.vstack([med - df["lower"].to_numpy(float) * f, df["upper"].to_numpy(float) * f - med])
    ax.bar(x, med, color=["tab:blue" if e else "lightgrey" for e in df["estimable"]])
    ax.errorbar(x, med, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="none", color="k", capsize=4)
    for i, e in enumerate(df["estimable"]):
        if not e:
            ax.text(i, 2, "not\nestimable", ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, 1.05 * f)
    ax.set_xticks(x, list(df.index), rotation=30, ha="right")
    ax.set_ylabel("share of total change" + (" [%]" if percent else ""))
    ax.set_title(f"{df.attrs['location']} (step {df.attrs['step']:g}); posterior median, "
                 f"{df.attrs['ci_prob']:.0%} {df.attrs['ci_kind']}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_fraction_curve(res, *, ax=None):
    """Fraction curves ρ_k(step) with interval bands and the peak of the total curve."""
    plt = pyplot()

    d = res.data
    fig, ax = (plt.subplots(figsize=(7, 3.5)) if ax is None else (ax.figure, ax))
    x = d["mid_step"].values
    for op in d["order_parameter"].values:
        (line,) = ax.plot(x, d["rho"].sel(order_parameter=op).values, label=str(op))
        ax.fill_between(x, d["rho_lower"].sel(order_parameter=op).values, d["rho_upper"].sel(order_parameter=op).values,
                        color=line.get_color(), alpha=0.15)
    ax.axvline(res.peak_step, color="k", ls="--", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"fraction ρ ({d.attrs['ci_prob']:.0%} {d.attrs['ci_kind']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_peak_vs_tau(peak: float, tau: pd.DataFrame, *, peak_interval: tuple[float, float] | None = None, ax=None):
    """Horizontal interval plot of τ per order parameter with the peak of the total curve as a line."""
    plt = pyplot()

    if not isinstance(tau, pd.DataFrame) or not {"mean", "lower", "upper"} <= set(tau.columns):
        raise ModelSpecError("tau must be a DataFrame indexed by order parameter with columns mean, lower, upper.")
    fig, ax = (plt.subplots(figsize=(6, 0.5 + 0.5 * len(tau))) if ax is None else (ax.figure, ax))
    y = np.arange(len(tau))
    m = tau["mean"].to_numpy(float)
    ax.errorbar(m, y, xerr=[m - tau["lower"].to_numpy(float), tau["upper"].to_numpy(float) - m], fmt="o", capsize=3,
                label="posterior τ")
    ax.axvline(peak, color="k", ls="--", label="peak of total D")
    if peak_interval is not None:
        ax.axvspan(*peak_interval, color="k", alpha=0.1)
    ax.set_yticks(y, [str(i) for i in tau.index])
    prob = tau.attrs.get("ci_prob")
    ax.set_xlabel("training step" + (f" (τ interval {prob:.0%} {tau.attrs.get('ci_kind', '')})" if prob else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_length_curve(table: pd.DataFrame, *, ax=None):
    """Total change at its peak against the answer prefix length (a :func:`length_curve` table)."""
    plt = pyplot()

    fig, ax = (plt.subplots(figsize=(5, 3.2)) if ax is None else (ax.figure, ax))
    pre = table[table.index >= 0]
    ax.errorbar(pre.index, pre["d_total"], yerr=2 * pre["se"], fmt="o-", capsize=3, label="first m tokens")
    if -1 in table.index:
        whole = table.loc[-1]
        ax.axhline(whole["d_total"], color="k", ls="--", lw=1, label="whole answers")
    ax.set_xlabel("answer prefix m (tokens)")
    ax.set_ylabel(f"D_{table.attrs.get('measure', 'linear')} at its peak")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
