"""Human ratings: a blind local labelling page, rating storage, and judge-vs-human agreement.

* :func:`serve` / :class:`LabelSession` — ``phasebayes label RUN --rubric NAME``: a page on 127.0.0.1
  showing one answer at a time, blind to checkpoint, step and judge score; every decision is written
  atomically to ``<run folder>/ratings/<rater>.jsonl``.
* :func:`plan_items` — the stratified sample of answers to rate (more near the transition).
* :func:`load_ratings`, :func:`human_agreement`, :func:`plot_calibration` — agreement of humans with
  the judge and with each other (Krippendorff's alpha, ICC, bootstrap intervals) and the calibration plot.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "LabelSession": "phasebayes.label.server",
    "serve": "phasebayes.label.server",
    "start_server": "phasebayes.label.server",
    "resolve_run": "phasebayes.label.server",
    "ItemPlan": "phasebayes.label.items",
    "plan_items": "phasebayes.label.items",
    "load_or_create_plan": "phasebayes.label.items",
    "transition_weights": "phasebayes.label.items",
    "RatingStore": "phasebayes.label.store",
    "load_ratings": "phasebayes.label.agreement",
    "rated_pairs": "phasebayes.label.agreement",
    "human_agreement": "phasebayes.label.agreement",
    "plot_calibration": "phasebayes.label.agreement",
    "agreement_summary": "phasebayes.label.agreement",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phasebayes.label' has no attribute {name!r}")
