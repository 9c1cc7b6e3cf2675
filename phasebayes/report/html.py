"""The self-contained HTML report (figures embedded as base64 PNG; no external files, scripts or fonts)."""

from __future__ import annotations

import base64
import html
import io
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..plotting import pyplot
from ..storage import atomic_write_text
from ..texts import has_texts, responses
from .figures import report_figures
from .tables import latex_table, markdown_table, report_tables

__all__ = ["render_html", "write_report", "example_responses"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} .caption{color:#555;font-size:.9em;margin:.2em 0 .8em} figure{margin:1em 0} img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em} .resp{white-space:pre-wrap;font-size:.88em;max-width:460px}
.warn{background:#fff4e5;border-left:4px solid #f0a000;padding:.5em .8em} .ok{background:#eef8ee;border-left:4px solid #3a3;padding:.5em .8em}
.meta{color:#666;font-size:.85em}
"""


def _fig_png(fig, dpi: int = 110) -> bytes:
    plt = pyplot(headless=True)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _table_html(df, caption: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{cap}"


def example_responses(analysis, ds, n_examples: int = 2) -> list[dict]:
    """Example responses before and after each order parameter's transition.

    For each order parameter: the last checkpoint before the lower end of τ's interval and the first one
    after its upper end (the first/last checkpoint if none), and ``n_examples`` prompts (the ones whose
    score changed most between the two); returns dicts with the prompt, both responses and their scores.
    """
    if not has_texts(ds) or n_examples <= 0:
        return []
    ts = analysis.transition_steps()
    steps = np.asarray(ds["step"].values)
    prompts = [str(p) for p in ds["prompt"].values]
    texts = [str(t) for t in ds["prompt_text"].values] if "prompt_text" in ds.coords or "prompt_text" in ds else prompts
    out = []
    for op in analysis.order_parameters:
        if op not in ts.index or "score" not in ds or op not in [str(o) for o in ds["order_parameter"].values]:
            continue
        lo, hi = float(ts.loc[op, "lower"]), float(ts.loc[op, "upper"])
        before = steps[steps < lo]
        after = steps[steps > hi]
        s_b = int(before[-1]) if before.size else int(steps[0])
        s_a = int(after[0]) if after.size else int(steps[-1])
        sc = ds["score"].sel(order_parameter=op)
        diff = (sc.sel(step=s_a).mean("sample") - sc.sel(step=s_b).mean("sample")).values
        order = np.argsort(-np.nan_to_num(np.abs(diff), nan=-1.0))[:n_examples]
        for j in order:
            p = prompts[j]
            first = int(ds["sample"].values[0])
            rb, ra = (responses(ds, steps=s, prompts=p, samples=first).item() for s in (s_b, s_a))
            rb, ra = ("(no response)" if t is None else t for t in (rb, ra))
            out.append({"order_parameter": op, "prompt": texts[j], "step_before": s_b, "step_after": s_a,
                        "before": rb, "after": ra,
                        "score_before": float(sc.sel(step=s_b, prompt=p).isel(sample=0).values),
                        "score_after": float(sc.sel(step=s_a, prompt=p).isel(sample=0).values)})
    return out


def render_html(analysis, *, ds=None, title: str = "phasebayes report", n_examples: int = 2, max_prompts: int = 6,
                figures: dict[str, bytes] | None = None, config_text: str | None = None, progress: bool = False,
                run_dir: str | os.PathLike | None = None) -> tuple[str, dict[str, bytes]]:
    """The report page as one HTML string, and the PNG bytes of its figures (``name -> bytes``).

    ``run_dir``: the run folder; when it holds human ratings the page gets a "Human ratings" section.
    """
    a = analysis
    ci = f"{a.ci_prob:.0%} {a.ci_kind.upper()}"
    pngs: dict[str, bytes] = dict(figures or {})
    failures: list[str] = []
    specs = report_figures(a, max_prompts=max_prompts)
    names = [n for n in specs if n not in pngs]
    if progress:
        from tqdm.auto import tqdm

        names = tqdm(names, desc="report figures", unit="fig")
    for name in names:
        try:
            pngs[name] = _fig_png(specs[name][1]())
        except Exception as err:  # noqa: BLE001 - one broken figure must not lose the report
            failures.append(f"{name}: {type(err).__name__}: {err}")
            traceback.print_exc()

    def fig(name: str) -> str:
        if name not in pngs:
            return ""
        b64 = base64.b64encode(pngs[name]).decode("ascii")
        cap = html.escape(specs[name][0]) if name in specs else ""
        return (f'<figure id="fig-{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">'
                f'<figcaption class="caption">{cap}</figcaption></figure>')

    tables = report_tables(a)
    summary_caption, summary_df = tables["summary"]
    problems = a.changepoint.check_diagnostics(warn=False)
    peak_problems = a.peak.check_diagnostics(warn=False) if a.peak is not None else []
    diag_caption, diag_df = tables["diagnostics"]
    s = []
    s.append(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>")
    from ..version import __version__

    s.append(f"<h1>{html.escape(title)}</h1><p class=\"meta\">phasebayes {__version__} · {time.strftime('%Y-%m-%d %H:%M')} · "
             f"intervals: {ci} (posterior median and highest-density interval unless stated) · steps are training steps</p>")
    s.append("<h2 id=\"summary\">Summary</h2>")
    s.append(_table_html(summary_df, summary_caption))
    s.append("<p class=\"caption\">P(transition): pseudo-BMA+ weight of the transition model against a no-transition "
             "model (PSIS-LOO over step × prompt cells). Lag: τ − gradient-norm peak; P(later) = P(τ &gt; peak). "
             "Fraction: D(order parameter) / D(full output distribution) at the peak of the total change (posterior "
             "median, equal-tailed interval).</p>")
    s.append("<h2 id=\"trajectories\">Score trajectories and transition steps</h2>" + fig("trajectories") + fig("tau"))
    if "gradient_peak" in pngs:
        s.append("<h2 id=\"gradient\">Gradient norm and its peak</h2>" + fig("gradient_peak"))
    if "reference_lags" in tables:
        rc, rdf = tables["reference_lags"]
        s.append("<h2 id=\"references\">Lags to every reference signal</h2>" + _table_html(rdf, rc)
                 + "".join(fig(f"reference_{name}") for name in a.references))
    s.append("<h2 id=\"dissimilarity\">Distributional change</h2>" + fig("dissimilarity") + fig("peak_vs_tau"))
    if "fractions" in tables:
        fc, fdf = tables["fractions"]
        s.append("<h2 id=\"decomposition\">Decomposition of the total change</h2>" + fig("fractions") + _table_html(fdf, fc)
                 + fig("fraction_curve") + (fig("length") if "length" in pngs else ""))
    s.append("<h2 id=\"diagnostics\">Diagnostics</h2>")
    if problems or peak_problems:
        s.append("<div class=\"warn\"><b>Check before trusting the intervals:</b><ul>"
                 + "".join(f"<li>change-point model: {html.escape(p)}</li>" for p in problems)
                 + "".join(f"<li>gradient-peak model: {html.escape(p)}</li>" for p in peak_problems) + "</ul></div>")
    else:
        s.append("<div class=\"ok\">R-hat ≤ 1.01, bulk and tail ESS ≥ 400 and no divergences in both models.</div>")
    s.append(_table_html(diag_df, diag_caption))
    s.append(fig("ppc"))
    ex = example_responses(a, ds, n_examples=n_examples)
    if ex:
        s.append("<h2 id=\"examples\">Example responses before and after the transition</h2>"
                 "<p class=\"caption\">Sample 0 of the prompts whose score changed most, at the last checkpoint before "
                 f"τ's {ci} and the first one after it.</p>")
        rows = "".join(
            f"<tr><td>{html.escape(e['order_parameter'])}</td><td class=\"resp\">{html.escape(e['prompt'])}</td>"
            f"<td class=\"resp\"><b>step {e['step_before']}</b> (score {e['score_before']:.3g})<br>{html.escape(e['before'])}</td>"
            f"<td class=\"resp\"><b>step {e['step_after']}</b> (score {e['score_after']:.3g})<br>{html.escape(e['after'])}</td></tr>"
            for e in ex)
        s.append(f"<table><thead><tr><th>order parameter</th><th>prompt</th><th>before</th><th>after</th></tr></thead><tbody>{rows}</tbody></table>")
    if run_dir is not None:
        from .human import human_ratings_section

        section, extra = human_ratings_section(run_dir, ds, ci_prob=a.ci_prob)
        s.append(section)
        pngs.update(extra)
    if failures:
        s.append("<div class=\"warn\"><b>Figures that could not be drawn:</b><ul>"
                 + "".join(f"<li>{html.escape(f)}</li>" for f in failures) + "</ul></div>")
    settings = {k: v for k, v in a.settings.items() if k != "timings"}
    s.append("<h2 id=\"settings\">Settings</h2><pre>" + html.escape("\n".join(f"{k} = {v}" for k, v in settings.items())) + "</pre>")
    if config_text:
        s.append("<details><summary>Run config</summary><pre>" + html.escape(config_text) + "</pre></details>")
    s.append("</body></html>")
    return "\n".join(s), pngs


def write_report(analysis, out_dir: str | os.PathLike, *, ds=None, formats: Sequence[str] = ("html", "md", "tex"),
                 n_examples: int = 2, max_prompts: int = 6, title: str = "phasebayes report",
                 config_text: str | None = None, progress: bool = True, run_dir: str | os.PathLike | None = None) -> Path:
    """Write ``report.html`` (self-contained), ``tables.md``, ``tables.tex`` and ``figures/*.png`` to ``out_dir``.

    Returns the path of the HTML page (or of the first file written when ``"html"`` is not in ``formats``).
    """
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    page, pngs = render_html(analysis, ds=ds, title=title, n_examples=n_examples, max_prompts=max_prompts,
                             config_text=config_text, progress=progress, run_dir=run_dir)
    for name, data in pngs.items():
        (out / "figures" / f"{name}.png").write_bytes(data)
    written = []
    tables = report_tables(analysis)
    if "html" in formats:
        written.append(atomic_write_text(out / "report.html", page, overwrite=True))
    if "md" in formats:
        md = "\n".join(markdown_table(df, cap) for cap, df in tables.values())
        written.append(atomic_write_text(out / "tables.md", md, overwrite=True))
    if "tex" in formats:
        tex = "% phasebayes tables; needs \\usepackage{booktabs}\n" + "\n".join(
            latex_table(df, cap, label=f"tab:phasebayes-{name}") for name, (cap, df) in tables.items())
        written.append(atomic_write_text(out / "tables.tex", tex, overwrite=True))
    return written[0] if written else out
