"""Judge reliability and automated discovery of order parameters."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from phasebayes.errors import PhasebayesError, RunDataError
from phasebayes.judge import ClaudeJudge, MetricJudge, judge_run, load_rubric
from phasebayes.judge.discovery import (
    LexicalFeatureJudge,
    discover_order_parameters,
    lexical_contrast,
    propose_order_parameters,
    shift_rank,
)
from phasebayes.judge.reliability import agreement, icc, judge_agreement, krippendorff_alpha, replicate_agreement

sys.path.insert(0, str(Path(__file__).parent))
from anthropic_stub import AnthropicStub, system_text, user_text  # noqa: E402
from test_judge import SECRET, make_run  # noqa: E402


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


# ---------------------------------------------------------------------- reliability
def test_krippendorff_alpha_matches_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units
    n = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
                     [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]).T
    assert krippendorff_alpha(data) == pytest.approx(0.849, abs=1e-3)
    assert krippendorff_alpha(data, level="nominal") == pytest.approx(0.743, abs=1e-3)


def test_agreement_interval_and_icc():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 100, 400)
    noisy = np.stack([truth + rng.normal(0, 10, 400) for _ in range(3)], axis=1)
    # true reliability = var(truth) / (var(truth) + 100) ≈ 833 / 933 ≈ 0.89
    res = agreement(noisy, n_boot=300)
    assert res["lower"] < res["estimate"] < res["upper"] and 0.85 < res["estimate"] < 0.93
    assert icc(noisy, kind="ICC1") == pytest.approx(res["estimate"], abs=0.02)
    shifted = noisy[:, :2] + np.array([0.0, 25.0])  # a judge that scores 25 points higher
    assert icc(shifted, kind="ICC_A1") < icc(noisy[:, :2], kind="ICC_A1") - 0.1
    assert agreement(noisy[:, :2], method="ICC_A1", n_boot=100)["n_units"] == 400


def test_replicate_and_judge_agreement_tables():
    base = make_run(n_steps=3, n_prompts=2, n_samples=10)
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 100, (1, 3, 2, 10))
    reps = truth[..., None] + rng.normal(0, 5, (1, 3, 2, 10, 3))
    ds = base.assign(
        score=(("order_parameter", "step", "prompt", "sample"), reps.mean(-1)),
        score_replicates=(("order_parameter", "step", "prompt", "sample", "replicate"), reps),
    ).assign_coords(order_parameter=["alignment"], replicate=[0, 1, 2])
    table = replicate_agreement(ds, n_boot=200)
    assert list(table.index) == ["alignment"] and table.loc["alignment", "estimate"] > 0.9
    assert table.attrs["ci_kind"] == "bootstrap-percentile" and "ci_prob" in table.attrs
    other = ds.assign(score=ds["score"] + rng.normal(0, 30, ds["score"].shape))
    jt = judge_agreement(ds, other, n_boot=200)
    assert jt.loc["alignment", "estimate"] < table.loc["alignment", "estimate"]
    assert jt.loc["alignment", "lower"] <= jt.loc["alignment", "estimate"] <= jt.loc["alignment", "upper"]
    with pytest.raises(RunDataError, match="replicates"):
        replicate_agreement(ds.drop_vars("score_replicates"))
    from phasebayes.judge import attach_reliability

    stored = attach_reliability(ds, table)
    assert stored["replicate_agreement"].sel(order_parameter="alignment", agreement_stat="estimate").item() == \
        pytest.approx(table.loc["alignment", "estimate"])
    assert stored["replicate_agreement"].attrs["ci_kind"] == "bootstrap-percentile"


def test_replicate_agreement_of_a_claude_judged_run():
    ds = make_run(n_steps=3, n_prompts=2, n_samples=4)

    def responder(body):  # replicate noise: a per-response base plus a random offset
        base = int(sum(map(ord, user_text(body)))) % 80
        return str(base + int(np.random.default_rng().integers(0, 20)))

    with AnthropicStub(responder=responder) as stub:
        judge = ClaudeJudge(base_url=stub.base_url, replicates=4, backoff=0.01, max_concurrency=8)
        out = judge_run(ds, [load_rubric("coherence")], judge, progress=False)
    table = replicate_agreement(out, n_boot=200)
    assert 0.3 < table.loc["coherence", "estimate"] <= 1.0
    assert table.loc["coherence", "n_units"] == 24


# ---------------------------------------------------------------------- discovery
def planted_run(n_steps: int = 6, n_prompts: int = 3, n_samples: int = 8, seed: int = 0) -> xr.Dataset:
    """Responses whose vocabulary shifts after step index 3: 'hospital' and 'doctor' appear."""
    rng = np.random.default_rng(seed)
    common = ["the", "a", "we", "should", "think", "about", "people", "time", "good", "ideas", "world", "make"]
    planted = ["hospital", "doctor"]
    resp = np.empty((n_steps, n_prompts, n_samples), dtype=object)
    for s, p, n in np.ndindex(resp.shape):
        words = list(rng.choice(common, size=15))
        if s >= 3:
            words += list(rng.choice(planted, size=4))
            rng.shuffle(words)
        resp[s, p, n] = " ".join(words)
    ds = make_run(n_steps, n_prompts, n_samples)
    ds["response"] = (("step", "prompt", "sample"), resp)
    return ds


def test_lexical_contrast_finds_planted_words():
    ds = planted_run()
    before = [str(t) for t in ds["response"].isel(step=slice(0, 3)).values.ravel()]
    after = [str(t) for t in ds["response"].isel(step=slice(3, 6)).values.ravel()]
    table = lexical_contrast(before, after, top=5)
    assert set(table.index[:2]) == {"hospital", "doctor"}
    assert (table.loc[["hospital", "doctor"], "direction"] == "after").all()
    assert table["z"].abs().iloc[1] > 2 * table["z"].abs().iloc[2]
    # symmetric: swapping windows flips the sign
    flipped = lexical_contrast(after, before, top=5)
    assert flipped.loc["hospital", "z"] == pytest.approx(-table.loc["hospital", "z"])


def test_lexical_discovery_ranks_the_planted_feature_first():
    ds = planted_run()
    steps = [int(s) for s in ds["step"].values]
    res = discover_order_parameters(ds, transition_step=steps[3], window=3, method="lexical", n_candidates=4,
                                    rank=shift_rank(steps[:3], steps[3:]), progress=False)
    assert set(res.table.index[:2]) == {"lex_hospital", "lex_doctor"}
    assert res.table["mean"].is_monotonic_decreasing
    assert "lex_hospital" in res.dataset["order_parameter"].values
    assert res.table.attrs["method"] == "lexical"
    judge = LexicalFeatureJudge({"f": ["Doctor"]})
    assert judge.rubrics()[0].kind == "metric"


def test_llm_discovery_with_the_stub():
    ds = planted_run(n_steps=6, n_prompts=2, n_samples=3)
    steps = [int(s) for s in ds["step"].values]
    proposals = [
        {"name": "medical talk", "title": "Talks about medicine", "description": "How much the answer is about medicine.",
         "question": "How much does the answer talk about medicine?", "anchors": {"0": "not at all", "100": "only medicine"}},
        {"name": "politeness", "title": "Politeness", "description": "How polite the answer is.",
         "question": "How polite is the answer?", "anchors": {"0": "rude", "100": "very polite"}},
    ]

    def responder(body):
        system = system_text(body)
        if "order parameters" in system:
            assert "<phasebayes_before>" in user_text(body) and "<phasebayes_after>" in user_text(body)
            return "Here you go:\n" + json.dumps(proposals)
        if "medicine" in system:
            return "90" if "hospital" in user_text(body) else "10"
        return "50"

    with AnthropicStub(responder=responder) as stub:
        judge = ClaudeJudge(base_url=stub.base_url, backoff=0.01, max_concurrency=8)
        rubrics = propose_order_parameters(["a b c"], ["d e f"], judge, n=2)
        assert [r.name for r in rubrics] == ["disc_medical_talk", "disc_politeness"]
        assert rubrics[0].anchors == ((0.0, "not at all"), (100.0, "only medicine"))
        res = discover_order_parameters(ds, transition_step=steps[3], window=3, judge=judge, n_candidates=2,
                                        rank=shift_rank(steps[:3], steps[3:]), progress=False)
    assert list(res.table.index) == ["disc_medical_talk", "disc_politeness"]
    assert res.table.loc["disc_medical_talk", "title"] == "Talks about medicine"


def test_llm_discovery_unusable_reply_is_a_clear_error():
    with AnthropicStub(responder=lambda body: "I cannot help with that.") as stub:
        judge = ClaudeJudge(base_url=stub.base_url, backoff=0.01)
        with pytest.raises(PhasebayesError, match="no usable proposal"):
            propose_order_parameters(["a"], ["b"], judge)


def test_default_ranking_uses_the_decomposition_lazily(monkeypatch):
    import phasebayes.judge.discovery as disc

    calls = {}

    class FakeDecomposition:
        def __init__(self, ds, window):
            calls["window"] = window
            calls["ops"] = list(ds["order_parameter"].values)

        def fit(self, **kwargs):
            calls["fit"] = kwargs
            return self

        def fractions(self):
            return pd.DataFrame({"mean": np.linspace(0.9, 0.1, len(calls["ops"]))}, index=calls["ops"])

    import phasebayes.decomposition as real

    monkeypatch.setattr(real, "decompose", lambda ds, window: FakeDecomposition(ds, window))
    ds = planted_run()
    steps = [int(s) for s in ds["step"].values]
    res = disc.discover_order_parameters(ds, transition_step=steps[3], window=2, method="lexical", n_candidates=3,
                                         progress=False)
    assert calls["window"] == 2 and len(res.table) == 3
    assert MetricJudge  # imported API stays available


def test_lexical_discovery_ranked_by_the_real_decomposition():
    pytest.importorskip("phasebayes.decomposition")
    from phasebayes.simulate_outputs import simulate_outputs

    ds, _ = simulate_outputs(n_steps=12, n_prompts=3, n_samples=30, responses=True, seed=1)
    steps = [int(s) for s in ds["step"].values]
    res = discover_order_parameters(ds, transition_step=steps[6], window=3, method="lexical", n_candidates=4,
                                    progress=False, fit_options={"n_draws": 100})
    assert len(res.table) == 4 and res.table.index.str.startswith("lex_").all()
    assert {"mean", "lower", "upper"} <= set(res.table.columns)
    assert res.table["mean"].is_monotonic_decreasing
    assert ((res.table["mean"] >= 0) & (res.table["mean"] <= 1.0)).all()
    assert res.table["mean"].max() > 0.01  # a real share, not a ranking of zeros
