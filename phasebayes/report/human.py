"""The report's "Human ratings" section: judge-vs-human and human-vs-human agreement and the calibration plot.

Shown only when the run folder holds ratings made with ``phasebayes label``.
"""

from __future__ import annotations

import html
import os
import traceback

__all__ = ["human_ratings_section"]


def human_ratings_section(run_dir: str | os.PathLike, ds=None, *, ci_prob: float | None = None) -> tuple[str, dict[str, bytes]]:
    """HTML of the section and its figure (``{"calibration": png}``); ``("", {})`` without ratings."""
    from ..label.agreement import human_agreement, load_ratings, plot_calibration
    from .html import _fig_png, _table_html
    from .tables import fmt_interval

    ratings = load_ratings(run_dir)
    if not len(ratings) or ds is None:
        return "", {}
    table = human_agreement(run_dir, ds, ratings=ratings, ci_prob=ci_prob)
    prob = table.attrs["ci_prob"]
    rows = table.reset_index()
    shown = rows[["rubric", "order_parameter", "comparison"]].copy()
    shown[f"alpha [{prob:.0%} bootstrap]"] = [fmt_interval(r.alpha, r.alpha_lower, r.alpha_upper) for r in rows.itertuples()]
    shown[f"ICC(A,1) [{prob:.0%} bootstrap]"] = [fmt_interval(r.icc, r.icc_lower, r.icc_upper) for r in rows.itertuples()]
    shown["answers"] = rows["n_units"].astype(int).to_numpy()
    shown["raters"] = rows["n_raters"].astype(int).to_numpy()
    raters = sorted(set(ratings["rater"]))
    parts = ["<h2 id=\"human\">Human ratings</h2>",
             f"<p class=\"caption\">{len(ratings)} ratings of {ratings['item'].nunique()} answers by "
             f"{len(raters)} rater(s) ({html.escape(', '.join(raters))}), made blind to step and judge score with "
             "<code>phasebayes label</code>. human-judge: the mean human rating of each answer against the judge's "
             "score; human-human: people against each other. alpha: Krippendorff's interval alpha; ICC(A,1): two-way "
             "absolute agreement (a judge that is systematically higher or lower counts as disagreeing).</p>",
             _table_html(shown, f"Agreement with {prob:.0%} percentile-bootstrap intervals over answers.")]
    pngs = {}
    try:
        fig = plot_calibration(run_dir, ds, ratings=ratings, ci_prob=prob)
        if fig is not None:
            pngs["calibration"] = _fig_png(fig)
    except Exception as err:  # noqa: BLE001 - a broken figure must not lose the report
        traceback.print_exc()
        parts.append(f"<div class=\"warn\">The calibration plot could not be drawn: {html.escape(str(err))}</div>")
    if pngs:
        import base64

        b64 = base64.b64encode(pngs["calibration"]).decode("ascii")
        parts.append(f'<figure id="fig-calibration"><img alt="calibration" src="data:image/png;base64,{b64}">'
                     f'<figcaption class="caption">Judge score against human rating per answer (grey), mean judge score '
                     f'per human-rating bin with its {prob:.0%} bootstrap interval (red), and judge = human (dashed).'
                     '</figcaption></figure>')
    return "\n".join(parts), pngs
