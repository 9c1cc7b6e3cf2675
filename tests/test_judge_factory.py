"""The judge factory: config kinds map one-to-one to builders; pairs, names and errors."""

from __future__ import annotations

import pytest

from phasebayes.config_sections import JUDGE_KINDS, JudgeSection
from phasebayes.errors import ConfigError
from phasebayes.judge import ClaudeJudge, MetricJudge, default_rubrics
from phasebayes.judge.factory import JUDGE_BUILDERS, JudgeBuilder, build_judge, build_judges, needs_rubrics


def test_every_config_kind_has_a_builder():
    assert set(JUDGE_BUILDERS) == set(JUDGE_KINDS)


def test_own_judges_first_then_rubric_judges_with_suffixed_names(monkeypatch):
    monkeypatch.setitem(JUDGE_BUILDERS, "fake", JudgeBuilder(lambda section, resolve: ClaudeJudge("fake-model"), True))
    section = JudgeSection(judges=["claude", "metric", "fake", "phrase"], metrics=["length_tokens"],
                           phrases={"bold": "Fortune Favours"}, claude_model="claude-x", replicates=3)
    rubrics = default_rubrics(domain="cooking")
    assert needs_rubrics(section)
    pairs = build_judges(section, rubrics)
    assert [type(j).__name__ for j, _ in pairs] == ["MetricJudge", "MetricJudge", "ClaudeJudge", "ClaudeJudge"]
    phrase, metric = pairs[0][0], pairs[1][0]
    assert pairs[0][1] is None and pairs[1][1] is None
    fn = phrase._funcs["bold"][0]
    assert fn("... fortune favours the bold ...") == 1.0 and fn("fortune") == 0.0
    assert phrase.identity["fn"] == "phasebayes.judge.factory.phrase[fortune favours]"
    assert [r.name for r in phrase.rubrics()] == ["bold"]
    assert [r.name for r in metric.rubrics()] == ["length_tokens"]
    claude, rs = pairs[2]
    assert claude.model == "claude-x" and claude.replicates == 3
    assert [r.name for r in rs] == [f"{r.name}_claude" for r in rubrics]
    assert [r.name for r in pairs[3][1]] == [f"{r.name}_fake" for r in rubrics]


def test_single_rubric_judge_keeps_rubric_names():
    section = JudgeSection(judges=["claude"])
    rubrics = default_rubrics(domain="cooking")
    ((judge, rs),) = build_judges(section, rubrics)
    assert isinstance(judge, ClaudeJudge) and [r.name for r in rs] == [r.name for r in rubrics]
    assert not needs_rubrics(JudgeSection(judges=["metric"]))
    assert isinstance(build_judges(JudgeSection(judges=["metric"]))[0][0], MetricJudge)


def test_bad_kinds_and_missing_rubrics_are_config_errors():
    with pytest.raises(ConfigError, match="unknown judge 'gpt'"):
        build_judges(JudgeSection(judges=["metric", "gpt"]))
    with pytest.raises(ConfigError, match="set \\[judge\\].rubrics"):
        build_judges(JudgeSection(judges=["claude"]), [])
    with pytest.raises(ConfigError, match="does not score rubrics"):
        build_judge("metric", JudgeSection())
    assert isinstance(build_judge("claude", JudgeSection()), ClaudeJudge)
