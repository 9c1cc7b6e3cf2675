"""How far the judge can be trusted: human ratings against the judge and against each other.

:func:`load_ratings` reads every rater's decisions of a run (skips dropped; a rater's latest decision
per item) and joins them to the item plan (step, prompt, sample). :func:`human_agreement` gives, per
rubric and judged order parameter,

* ``human-judge``: units are the rated answers, the two "raters" the human (mean over the people who
  rated it) and the judge; Krippendorff's interval alpha and ICC(A,1) (absolute agreement, so a judge
  that is systematically higher counts as disagreeing);
* ``human-human``: units are the answers rated by ≥ 2 people; interval alpha over all raters (missing
  allowed) and ICC(A,1) over the answers every rater rated;

each with a percentile bootstrap interval over answers (:func:`phasebayes.judge.reliability.agreement`).
:func:`plot_calibration` draws judge score against human rating. :func:`measurement_from_ratings`
turns the ratings into a :class:`~phasebayes.models.measurement.JudgeMeasurement` for the change-point model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..defaults import CI_PROB
from ..judge.reliability import agreement
from .items import ItemPlan, matching_order_parameters, plan_path

__all__ = ["load_ratings", "rated_pairs", "human_agreement", "plot_calibration", "agreement_summary",
           "measurement_from_ratings", "ratings_folder"]


def ratings_folder(run: str | os.PathLike) -> Path:
    """``<run folder>/ratings`` (or ``<x>_ratings`` next to a dataset file ``x.nc``)."""
    from .store import ratings_dir_for

    return ratings_dir_for(run)


def _run_dataset(run: str | os.PathLike) -> Path:
    return Path(run) / "run.nc" if Path(run).is_dir() else Path(run)


def load_ratings(run: str | os.PathLike, rubric: str | None = None) -> pd.DataFrame:
    """All human ratings of a run: columns ``rater, rubric, item, value, step, prompt, sample``.

    Skipped items are left out; when a rater decided an item twice, the latest decision counts.
    Returns an empty table when there are no ratings.
    """
    folder = Path(run) if Path(run).name.endswith("ratings") else ratings_folder(run)
    cols = ["rater", "rubric", "item", "value", "step", "prompt", "sample"]
    if not folder.is_dir():
        return pd.DataFrame(columns=cols)
    plans: dict[str, ItemPlan] = {}
    rows = []
    for f in sorted(folder.glob("*.jsonl")):
        latest: dict[tuple[str, str], dict] = {}
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                latest[(rec.get("rubric", ""), rec.get("item", ""))] = rec
        for (rb, item), rec in latest.items():
            if rec.get("skipped") or rec.get("value") is None or (rubric is not None and rb != rubric):
                continue
            if rb not in plans:
                p = plan_path(folder, rb)
                if not p.exists():
                    continue
                plans[rb] = ItemPlan.from_json(p.read_text(encoding="utf-8"))
            idx = plans[rb].index().get(item)
            if idx is None:
                continue
            pl = plans[rb]
            rows.append((f.stem, rb, item, float(rec["value"]), pl.steps[idx], pl.prompts[idx], pl.samples[idx]))
    return pd.DataFrame(rows, columns=cols)


def rated_pairs(ds: xr.Dataset, ratings: pd.DataFrame, order_parameter: str) -> pd.DataFrame:
    """Ratings joined with the judge's ``score`` of the same answer for ``order_parameter`` (column ``judge``)."""
    sc = ds["score"].sel(order_parameter=order_parameter)
    steps = {int(s): j for j, s in enumerate(ds["step"].values)}
    prompts = {str(p): j for j, p in enumerate(ds["prompt"].values)}
    samples = {int(s): j for j, s in enumerate(ds["sample"].values)}
    arr = sc.transpose("step", "prompt", "sample").values
    judge = [float(arr[steps[int(t)], prompts[str(p)], samples[int(s)]])
             if int(t) in steps and str(p) in prompts and int(s) in samples else np.nan
             for t, p, s in zip(ratings["step"], ratings["prompt"], ratings["sample"])]
    out = ratings.copy()
    out["judge"] = judge
    out["order_parameter"] = order_parameter
    return out[np.isfinite(out["judge"])]


def _row(arr: np.ndarray, n_boot: int, ci_prob: float, seed: int) -> dict:
    a = agreement(arr, method="alpha", n_boot=n_boot, ci_prob=ci_prob, seed=seed)
    complete = arr[np.isfinite(arr).all(axis=1)]
    i = agreement(complete, method="ICC_A1", n_boot=n_boot, ci_prob=ci_prob, seed=seed) if len(complete) >= 3 else \
        {"estimate": np.nan, "lower": np.nan, "upper": np.nan}
    return {"alpha": a["estimate"], "alpha_lower": a["lower"], "alpha_upper": a["upper"],
            "icc": i["estimate"], "icc_lower": i["lower"], "icc_upper": i["upper"], "n_units": a["n_units"],
            "n_raters": arr.shape[1]}


def human_agreement(run: str | os.PathLike, ds: xr.Dataset | None = None, *, ratings: pd.DataFrame | None = None,
                    n_boot: int = 1000, ci_prob: float | None = None, seed: int = 0) -> pd.DataFrame:
    """Agreement per (rubric, order parameter, comparison): alpha and ICC(A,1) with bootstrap intervals.

    ``run``: run folder (its ``run.nc`` is read when ``ds`` is None). Comparisons ``human-judge``
    (for each order parameter judged with the rubric) and ``human-human`` (order parameter ``-``; only
    with ≥ 2 raters sharing ≥ 2 answers). Empty table without ratings. ``attrs``: ``ci_prob``, ``ci_kind``.
    """
    ci_prob = CI_PROB if ci_prob is None else float(ci_prob)
    ratings = load_ratings(run) if ratings is None else ratings
    rows = {}
    if len(ratings):
        if ds is None:
            from ..dataset import open_run

            ds = open_run(_run_dataset(run))
        for rb, r in ratings.groupby("rubric"):
            wide = r.pivot_table(index="item", columns="rater", values="value", aggfunc="last")
            human = wide.mean(axis=1)
            keys = r.drop_duplicates("item").set_index("item")[["step", "prompt", "sample"]]
            for op in matching_order_parameters(ds, str(rb)):
                pairs = rated_pairs(ds, keys.reset_index().assign(value=human.reindex(keys.index).to_numpy()), op)
                if len(pairs) >= 2:
                    rows[(str(rb), op, "human-judge")] = _row(pairs[["value", "judge"]].to_numpy(float), n_boot, ci_prob, seed)
            if wide.shape[1] >= 2 and (wide.notna().sum(axis=1) >= 2).sum() >= 2:
                rows[(str(rb), "-", "human-human")] = _row(wide.to_numpy(float), n_boot, ci_prob, seed)
    cols = ["alpha", "alpha_lower", "alpha_upper", "icc", "icc_lower", "icc_upper", "n_units", "n_raters"]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=cols)
    table.index = pd.MultiIndex.from_tuples(list(rows), names=["rubric", "order_parameter", "comparison"]) if rows else \
        pd.MultiIndex.from_tuples([], names=["rubric", "order_parameter", "comparison"])
    table.attrs.update(ci_prob=ci_prob, ci_kind="bootstrap-percentile",
                       methods="alpha: Krippendorff interval alpha; icc: ICC(A,1), two-way absolute agreement")
    return table


def plot_calibration(run: str | os.PathLike, ds: xr.Dataset | None = None, *, ratings: pd.DataFrame | None = None,
                     ci_prob: float | None = None, seed: int = 0):
    """Judge score (y) against human rating (x) per judged order parameter: answers (dots, jittered),
    mean judge score per human-rating bin with its ``ci_prob`` bootstrap interval, and the identity line.
    Returns a matplotlib Figure (None without ratings)."""
    from ..plotting import pyplot

    ci_prob = CI_PROB if ci_prob is None else float(ci_prob)
    ratings = load_ratings(run) if ratings is None else ratings
    if not len(ratings):
        return None
    if ds is None:
        from ..dataset import open_run

        ds = open_run(_run_dataset(run))
    panels = []
    for rb, r in ratings.groupby("rubric"):
        human = r.groupby("item").agg(value=("value", "mean"), step=("step", "first"), prompt=("prompt", "first"),
                                      sample=("sample", "first")).reset_index()
        for op in matching_order_parameters(ds, str(rb)):
            pairs = rated_pairs(ds, human, op)
            if len(pairs):
                panels.append((op, pairs))
    if not panels:
        return None
    plt = pyplot(headless=True)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (op, pairs) in zip(axes[0], panels):
        x, y = pairs["value"].to_numpy(float), pairs["judge"].to_numpy(float)
        from ..dataset import order_parameter_scale

        lo, hi = order_parameter_scale(ds, op)
        span = hi - lo
        ax.plot(x + rng.uniform(-0.01, 0.01, len(x)) * span, y, "o", ms=3, alpha=0.35, color="tab:gray", label="answers")
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="judge = human")
        edges = np.linspace(lo, hi, 6)
        idx = np.clip(np.digitize(x, edges[1:-1]), 0, len(edges) - 2)
        tail = (1 - ci_prob) / 2
        for b in range(len(edges) - 1):
            yb = y[idx == b]
            if len(yb) == 0:
                continue
            boots = rng.choice(yb, size=(400, len(yb))).mean(1)
            lo_b, hi_b = np.quantile(boots, [tail, 1 - tail])
            xc = x[idx == b].mean()
            ax.errorbar([xc], [yb.mean()], yerr=[[yb.mean() - lo_b], [hi_b - yb.mean()]], fmt="s", color="tab:red",
                        ms=5, capsize=3, label=f"bin mean ({ci_prob:.0%})" if b == 0 else None)
        ax.set_xlim(lo - 0.03 * span, hi + 0.03 * span)
        ax.set_ylim(lo - 0.03 * span, hi + 0.03 * span)
        ax.set_xlabel("human rating")
        ax.set_ylabel("judge score")
        ax.set_title(f"{op} (n = {len(pairs)})", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    return fig


def agreement_summary(run: str | os.PathLike, ds: xr.Dataset | None = None, *, n_boot: int = 1000) -> str:
    """Plain-text lines for the run summary (empty string without ratings)."""
    table = human_agreement(run, ds, n_boot=n_boot)
    if not len(table):
        return ""
    pct = f"{table.attrs['ci_prob']:.0%} bootstrap"
    lines = [f"Human ratings (agreement; intervals: {pct}; alpha = Krippendorff interval, ICC = ICC(A,1))"]
    for (rb, op, comp), r in table.iterrows():
        who = f"{rb}: {comp}" + (f" ({op})" if op != "-" else "")
        lines.append(f"  {who:<40s} alpha {r.alpha:5.2f} [{r.alpha_lower:5.2f}, {r.alpha_upper:5.2f}]  "
                     f"ICC {r.icc:5.2f} [{r.icc_lower:5.2f}, {r.icc_upper:5.2f}]  n = {int(r.n_units)}")
    return "\n".join(lines)


def measurement_from_ratings(run: str | os.PathLike, ds: xr.Dataset, *, link: str = "logit",
                             ratings: pd.DataFrame | None = None):
    """A :class:`~phasebayes.models.measurement.JudgeMeasurement` from a run's ratings: every rating of a
    rubric counts for each order parameter judged with it. Raises when there are no ratings."""
    from ..errors import RunDataError
    from ..models.measurement import JudgeMeasurement

    ratings = load_ratings(run) if ratings is None else ratings
    parts = []
    for rb, r in ratings.groupby("rubric"):
        for op in matching_order_parameters(ds, str(rb)):
            parts.append(r.assign(order_parameter=op)[["order_parameter", "step", "prompt", "value"]])
    if not parts:
        raise RunDataError("no human ratings match an order parameter of this run; rate answers with "
                           "`phasebayes label RUN --rubric NAME` (NAME = an order parameter's rubric).")
    return JudgeMeasurement(pd.concat(parts, ignore_index=True), link=link)
