"""Paper tables: the analysis' result tables as Markdown and LaTeX (no extra dependencies).

Every table states its interval convention (e.g. "94% HDI") in its caption; τ and lags are in
training steps, fractions in percent of the total change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

__all__ = ["report_tables", "run_tables", "markdown_table", "latex_table", "fmt_interval"]


def _num(x, digits: int = 1, pct: bool = False, sign: bool = False) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return "–"
    if pct:
        return f"{100 * x:.0f}%"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_interval(mid, lo, hi, *, digits: int = 1, pct: bool = False, sign: bool = False) -> str:
    """``"12.3 [10.1, 14.2]"`` (or percentages); a dash for missing values."""
    if not all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in (mid, lo, hi)):
        return "–"
    return f"{_num(mid, digits, pct, sign)} [{_num(lo, digits, pct, sign)}, {_num(hi, digits, pct, sign)}]"


def report_tables(analysis) -> dict[str, tuple[str, pd.DataFrame]]:
    """The report's tables as ``name -> (caption, DataFrame of formatted strings)``.

    ``summary`` (one row per order parameter: τ, P(transition), lag, P(later), fraction),
    ``diagnostics`` (R-hat, ESS of the change-point model's quantities), ``fractions`` (incl. ``joint``).
    """
    a = analysis
    ci = f"{a.ci_prob:.0%} {a.ci_kind.upper()}"
    t = a.summary_table()
    rows = []
    for op, r in t.iterrows():
        rows.append({
            "order parameter": str(op),
            "likelihood": str(r.get("likelihood", "")),
            f"τ (steps) [{ci}]": fmt_interval(r.tau_median, r.tau_lower, r.tau_upper),
            "P(transition)": _num(r.p_transition, 2),
            f"lag to grad-norm peak [{ci}]": fmt_interval(r.lag_median, r.lag_lower, r.lag_upper, sign=True),
            "P(later)": _num(r.p_later, 2),
            f"fraction of total change [{a.ci_prob:.0%} ETI]": fmt_interval(r.fraction_median, r.fraction_lower,
                                                                            r.fraction_upper, pct=True),
        })
    summary = pd.DataFrame(rows)
    notes = [f"τ: posterior median and {ci} in training steps"]
    if "grad_peak_median" in t.attrs:
        notes.append(f"gradient-norm peak at step {t.attrs['grad_peak_median']:.1f} (posterior median)")
    if "total_change_peak_step" in t.attrs:
        notes.append(f"fractions (posterior median, equal-tailed interval) at the peak of the total change "
                     f"(step {t.attrs['total_change_peak_step']:.1f})")
    out = {"summary": ("Behavioural transitions per order parameter; " + "; ".join(notes) + ".", summary)}

    fr = a.fractions()
    if fr is not None:
        from ..analysis import fraction_note

        eti = f"{fr.attrs['ci_prob']:.0%} {fr.attrs['ci_kind'].upper()}"
        frows = [{"order parameter": str(op),
                  "median": _num(r["median"], pct=True) if r["estimable"] else "not estimable",
                  f"interval [{eti}]": fmt_interval(r["median"], r["lower"], r["upper"], pct=True).split(" ", 1)[-1]
                  if r["estimable"] else "–",
                  "P(ρ = 0)": _num(r["p_zero"], 2), "P(ρ = 1)": _num(r["p_one"], 2)} for op, r in fr.iterrows()]
        joint_note = str(fr.loc["joint", "note"]) if "joint" in fr.index else ""
        out["fractions"] = (f"Share of the total distributional change captured by each order parameter "
                            f"(and jointly) at {fr.attrs.get('location', 'the peak')} (step {fr.attrs.get('step', float('nan')):g}); "
                            f"posterior median and {eti} interval (equal-tailed: a fraction has point masses at 0 and 1); "
                            + fraction_note({"answer_length": fr.attrs["answer_length"], "joint_note": joint_note}) + ".",
                            pd.DataFrame(frows))
    lags = a.reference_lags() if getattr(a, "references", None) else None
    if lags is not None:  # every order parameter against every reference signal (grad norm, weight-space signals)
        lrows = [{"reference signal": str(ref) + (" (trough)" if r["kind"] == "trough" else ""), "order parameter": str(op),
                  f"peak step (median)": _num(r["peak_median"]),
                  f"lag τ − peak [{ci}]": fmt_interval(r["lag_median"], r["lag_lower"], r["lag_upper"], sign=True),
                  "P(later)": _num(r["p_later"], 2)} for (ref, op), r in lags.iterrows()]
        out["reference_lags"] = (f"Lag of each order parameter's τ to the peak of every reference signal, in training steps; "
                                 f"{ci}; P(later) = P(τ > peak).", pd.DataFrame(lrows))
    d = a.changepoint.diagnostics()
    drows = [{"quantity": str(k), "R-hat": _num(r["r_hat"], 3), "ESS bulk": _num(r["ess_bulk"], 0),
              "ESS tail": _num(r["ess_tail"], 0)} for k, r in d.iterrows()]
    out["diagnostics"] = (f"MCMC diagnostics of the change-point model ({d.attrs.get('draws', '?')} draws, "
                          f"{d.attrs.get('divergences', 0)} divergences).", pd.DataFrame(drows))
    if getattr(a, "multirun", None) is not None:  # several runs fitted together
        out.update(run_tables(a.multirun, ci_prob=a.ci_prob, ci_kind=a.ci_kind, lag=getattr(a, "multirun_lag", None)))
    return out


def run_tables(result, *, ci_prob: float | None = None, ci_kind: str | None = None,
               lag: pd.DataFrame | None = None) -> dict[str, tuple[str, pd.DataFrame]]:
    """Tables of a multi-run fit (:class:`~phasebayes.MultiRunResult`): ``runs`` -> (caption, DataFrame).

    One row per order parameter and run (τ, and with ``lag`` = ``result.compare_to_peaks()`` the lag to
    the run's own gradient-norm peak), then per order parameter the population τ and the seed-to-seed sd.
    """
    ts = result.run_transition_steps(ci_prob, ci_kind)
    ci = f"{ts.attrs['ci_prob']:.0%} {str(ts.attrs['ci_kind']).upper()}"
    pop = result.transition_steps(ci_prob, ci_kind)
    spread = result.seed_spread(ci_prob, ci_kind)
    rows = []
    for op in result.order_parameters:
        for run in result.runs:
            r = ts.loc[(op, run)]
            row = {"order parameter": op, "run": run, f"τ (steps) [{ci}]": fmt_interval(r["median"], r["lower"], r["upper"])}
            if lag is not None:
                g = lag.loc[(op, run)]
                row[f"lag to grad-norm peak [{ci}]"] = fmt_interval(g["lag_median"], g["lag_lower"], g["lag_upper"], sign=True)
                row["P(later)"] = _num(g["p_later"], 2)
            rows.append(row)
        p, sd = pop.loc[op], spread.loc[(op, "seed_sd")]
        rows.append({"order parameter": op, "run": "population",
                     f"τ (steps) [{ci}]": fmt_interval(p["median"], p["lower"], p["upper"])
                     + f"; seed sd {fmt_interval(sd['median'], sd['lower'], sd['upper'])}"})
    caption = (f"Transition step per run and across runs (population τ and the seed-to-seed sd of τ), "
               f"posterior median and {ci} in training steps.")
    return {"runs": (caption, pd.DataFrame(rows).fillna(""))}


def markdown_table(df: pd.DataFrame, caption: str = "") -> str:
    """A GitHub-flavoured Markdown table (cells as given), with the caption as an italic line above."""
    cols = [str(c) for c in df.columns]
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = [f"*{caption}*", ""] if caption else []
    lines.append("| " + " | ".join(esc(c) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(esc(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "τ": r"$\tau$", "–": "--"}


def _tex(s) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def latex_table(df: pd.DataFrame, caption: str = "", label: str = "", align: Sequence[str] | None = None) -> str:
    """A ``table`` environment with a ``booktabs`` tabular (needs ``\\usepackage{booktabs}``)."""
    cols = [str(c) for c in df.columns]
    align = align or ["l"] + ["r"] * (len(cols) - 1)
    lines = [r"\begin{table}[ht]", r"\centering", r"\begin{tabular}{" + "".join(align) + "}", r"\toprule",
             " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    for _, row in df.iterrows():
        lines.append(" & ".join(_tex(v) for v in row.values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
