"""The self-updating HTML page of live monitoring (``<run>/live.html``).

Plain HTML with a ``<meta http-equiv="refresh">`` (no server, no script): the latest checkpoint, per
order parameter P(the transition has happened), τ so far with its 94 % HDI, the lag behind the
gradient-norm peak, the probe cost, any rule that fired, and an inline SVG of P(transition) and the
mean probe score over the checkpoints seen. Every text is escaped; written atomically.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage import atomic_write_text

REFRESH_SECONDS = 10
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _svg_lines(series: dict[str, tuple[list[float], list[float]]], x_max: float, y_range: tuple[float, float],
               title: str) -> str:
    """A small line chart: ``series`` name → (x, y), x in [0, x_max], y in ``y_range``."""
    w, h, pad = 420, 160, 30
    lo, hi = y_range
    hi = hi if hi > lo else lo + 1.0

    def xy(x, y):
        return pad + (w - 2 * pad) * x / max(x_max, 1), h - pad - (h - 2 * pad) * (y - lo) / (hi - lo)

    parts = [f'<svg width="{w}" height="{h}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{pad}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#999"/>',
             f'<text x="{w - pad}" y="{h - 8}" font-size="10" text-anchor="end">step {x_max:g}</text>']
    for i, (name, (xs, ys)) in enumerate(series.items()):
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in (xy(x, y) for x, y in zip(xs, ys) if np.isfinite(y)))
        colour = _COLOURS[i % len(_COLOURS)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - pad}" y="{28 + 12 * i}" font-size="10" fill="{colour}" text-anchor="end">'
                     f"{html.escape(name)}</text>")
    return "".join(parts) + "</svg>"


def write_live_page(path: str | Path, history: pd.DataFrame, means: pd.DataFrame, *, max_step: int,
                    probe_seconds: float, alerts: list[str], finished: bool = False) -> Path:
    """Write the page. ``history``: one row per (checkpoint, order parameter) of the online summary
    (columns ``step``, ``order_parameter``, ``p_transition``, ``tau_*``, ``lag_*``); ``means``: mean probe
    score, index step × columns order parameters."""
    latest = history[history["step"] == history["step"].max()] if len(history) else history
    rows = "".join(
        f"<tr><td>{html.escape(str(r.order_parameter))}</td><td>{r.p_transition:.2f}</td>"
        f"<td>{r.tau_median:.0f} [{r.tau_lower:.0f}, {r.tau_upper:.0f}]</td>"
        f"<td>{'' if not np.isfinite(r.lag_median) else f'{r.lag_median:.0f} [{r.lag_lower:.0f}, {r.lag_upper:.0f}]'}</td></tr>"
        for r in latest.itertuples())
    p_series = {op: (list(g["step"]), list(g["p_transition"])) for op, g in history.groupby("order_parameter")}
    m_series = {op: (list(means.index), list(means[op])) for op in means.columns}
    finite = means.to_numpy(float)[np.isfinite(means.to_numpy(float))] if len(means) else np.array([0.0, 1.0])
    step = int(history["step"].max()) if len(history) else 0
    refresh = "" if finished else f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
    alert_html = "".join(f'<p class="alert">{html.escape(a)}</p>' for a in alerts)
    body = f"""<!doctype html><html><head><meta charset="utf-8">{refresh}<title>phasebayes live: step {step}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 10px;text-align:left}}.alert{{color:#b00;font-weight:bold}}</style>
</head><body><h1>Live transition monitor</h1>
<p id="latest">latest checkpoint: step <b>{step}</b> of {max_step} · probe cost {probe_seconds:.1f} s per checkpoint
{'· training finished' if finished else f'· this page reloads every {REFRESH_SECONDS} s'}</p>{alert_html}
<table><tr><th>order parameter</th><th>P(transition by now)</th><th>τ so far, median [94 % HDI]</th>
<th>lag to grad-norm peak [94 % HDI]</th></tr>{rows}</table>
{_svg_lines(p_series, max_step, (0.0, 1.0), "P(transition by now)")}
{_svg_lines(m_series, max_step, (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0), "mean probe score")}
<p>Online grid posterior (phasebayes/models/online.py); the final report uses the full model (docs/live.md).</p>
</body></html>"""
    return atomic_write_text(path, body, overwrite=True)
