"""Agreement of human ratings with the judge and between people: published worked examples, the plot, the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _label_run import make_run
from phasebayes import open_run
from phasebayes.judge.reliability import icc, krippendorff_alpha
from phasebayes.label import RatingStore, human_agreement, load_or_create_plan, load_ratings, plot_calibration
from phasebayes.label.agreement import agreement_summary, measurement_from_ratings

N = np.nan
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers x 12 units, values 1-5, missing
KRIPP = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
                  [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]).T
# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(1,1) = .17, ICC(2,1) = ICC(A,1) = .29
SHROUT = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def _rate(run, rubric, matrix, scale):
    ds = open_run(run / "run.nc")
    plan = load_or_create_plan(ds, run / "ratings", rubric, n=matrix.shape[0], seed=3)
    for j, rater in enumerate(["ann", "bob", "cy", "dee"]):
        store = RatingStore(run / "ratings", rater)
        for i, item in enumerate(plan.ids):
            if np.isfinite(matrix[i, j]):
                store.add(item, rubric, float(matrix[i, j]) * scale)
        store.add(plan.ids[-1], rubric, None)  # a skip (or a later decision) replaces an earlier one
    return plan


@pytest.fixture()
def rated(tmp_path):
    run = make_run(tmp_path / "run", n_prompts=4, n_samples=3, ops=("alignment_claude", "coherence"))
    _rate(run, "alignment", KRIPP[:11], 20.0)  # unit 12 has one value only (not pairable); drop it
    _rate(run, "coherence", SHROUT, 10.0)
    return run


def test_published_examples_through_the_rating_files(rated):
    table = human_agreement(rated, n_boot=200)
    hh = table.loc[("alignment", "-", "human-human")]
    # the last unit of each plan was skipped by everyone (latest decision), so compare on the rest
    assert hh["alpha"] == pytest.approx(krippendorff_alpha(KRIPP[:10]), abs=1e-9)
    assert krippendorff_alpha(KRIPP) == pytest.approx(0.849, abs=1e-3)
    sh = table.loc[("coherence", "-", "human-human")]
    assert sh["icc"] == pytest.approx(icc(SHROUT[:5], kind="ICC_A1"), abs=1e-9)
    assert icc(SHROUT, kind="ICC_A1") == pytest.approx(0.29, abs=0.005)
    assert icc(SHROUT, kind="ICC1") == pytest.approx(0.17, abs=0.005)
    assert hh["alpha_lower"] <= hh["alpha"] <= hh["alpha_upper"] and hh["n_raters"] == 4
    assert table.attrs["ci_kind"] == "bootstrap-percentile" and table.attrs["ci_prob"] == 0.94


def test_human_judge_agreement_is_alpha_of_mean_human_vs_judge(rated):
    ds = open_run(rated / "run.nc")
    r = load_ratings(rated, "alignment")
    assert set(r["rater"]) == {"ann", "bob", "cy", "dee"} and len(r) == np.isfinite(KRIPP[:10]).sum()
    table = human_agreement(rated, ds, n_boot=200)
    row = table.loc[("alignment", "alignment_claude", "human-judge")]
    human = r.groupby("item")["value"].mean()
    keys = r.drop_duplicates("item").set_index("item").loc[human.index]
    judge = [float(ds["score"].sel(order_parameter="alignment_claude", step=t, prompt=p, sample=s))
             for t, p, s in zip(keys["step"], keys["prompt"], keys["sample"])]
    pair = np.stack([human.to_numpy(), judge], axis=1)
    assert row["alpha"] == pytest.approx(krippendorff_alpha(pair), abs=1e-9)
    assert row["icc"] == pytest.approx(icc(pair, kind="ICC_A1"), abs=1e-9)
    assert row["n_units"] == 10
    assert ("coherence", "coherence", "human-judge") in table.index


def test_calibration_plot_summary_and_measurement(rated):
    fig = plot_calibration(rated)
    assert fig is not None and len(fig.axes) == 2
    text = agreement_summary(rated, n_boot=100)
    assert "alignment: human-human" in text and "alpha" in text and "94% bootstrap" in text
    ds = open_run(rated / "run.nc")
    m = measurement_from_ratings(rated, ds)
    assert set(m.ratings["order_parameter"]) == {"alignment_claude", "coherence"}
    assert len(m.ratings) == len(load_ratings(rated))


def test_no_ratings_means_nothing_to_show(tmp_path):
    run = make_run(tmp_path / "run")
    assert len(human_agreement(run)) == 0 and agreement_summary(run) == "" and plot_calibration(run) is None
    assert json.dumps(list(load_ratings(run).columns))


def test_report_section(rated):
    from phasebayes.report.human import human_ratings_section

    ds = open_run(rated / "run.nc")
    page, pngs = human_ratings_section(rated, ds)
    assert "<h2 id=\"human\">Human ratings</h2>" in page and "alpha [94% bootstrap]" in page
    assert "ICC(A,1) [94% bootstrap]" in page and "human-judge" in page and "human-human" in page
    assert page.count("data:image/png;base64,") == 1 and pngs["calibration"][:4] == b"\x89PNG"
    assert human_ratings_section(make_run(rated.parent / "other"), ds) == ("", {})


def test_agreement_precision_shrinks_like_one_over_root_n():
    from phasebayes.label.precision import agreement_precision

    t = agreement_precision(n_ratings=(40, 160), alphas=(0.7,), n_rep=40, n_boot=200, seed=1)
    hw = t["half_width"].to_numpy()
    assert 1.5 < hw[0] / hw[1] < 2.6  # four times the ratings: about half the width
    assert t["coverage"].min() >= 0.8 and abs(t.loc[(160, 0.7), "mean_estimate"] - 0.7) < 0.05
