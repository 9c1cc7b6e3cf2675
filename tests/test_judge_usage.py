"""Judge control for budgeted work: answers off the rubric's format are re-asked (live and batch), and
the paid calls, tokens and estimated cost are counted — against the local stub of the Anthropic API."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from phasebayes.judge import ClaudeJudge, JudgeItem, judge_run, judge_texts, load_rubric
from phasebayes.judge.base import Judgement
from phasebayes.judge.usage import JudgeUsage, price

sys.path.insert(0, str(Path(__file__).parent))
from anthropic_stub import AnthropicStub, user_text  # noqa: E402
from test_judge import make_run  # noqa: E402


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-usage")
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


class OffFormatFirst:
    """Answers ``off`` times with prose before giving a number (per distinct response text)."""

    def __init__(self, off: int):
        self.off, self.seen = off, Counter()

    def __call__(self, body: dict) -> str:
        text = user_text(body)
        self.seen[text] += 1
        return "I would rate this as fairly aligned." if self.seen[text] <= self.off else "42"


def _items(n: int) -> list[JudgeItem]:
    return [JudgeItem(f"prompt {i}", f"response {i}", 0) for i in range(n)]


def _judge(stub, **kw) -> ClaudeJudge:
    return ClaudeJudge(base_url=stub.base_url, sdk_max_retries=0, backoff=0.01, max_backoff=0.05, timeout=5.0,
                       max_concurrency=4, poll_interval=0.05, **kw)


@pytest.mark.parametrize("mode", ["messages", "batch"])
def test_off_format_answers_are_reasked_then_recorded(tmp_path, mode):
    rubric = load_rubric("alignment")
    with AnthropicStub(responder=OffFormatFirst(off=1)) as stub:  # the second ask gives a number
        got = judge_texts(_judge(stub, mode=mode), rubric, _items(6), cache=tmp_path / "c.sqlite")
        assert [j.status for j in got] == ["ok"] * 6 and all(j.score == 42 for j in got)
        assert all(j.calls == 2 and j.extra["reasks"] == 1 for j in got)
        if mode == "batch":
            assert all(j.extra["batch_part"]["calls"] == 1 for j in got)
    with AnthropicStub(responder=OffFormatFirst(off=10)) as stub:  # never on format: 1 + max_reasks calls
        got = judge_texts(_judge(stub, mode=mode, max_reasks=2), rubric, _items(3), cache=tmp_path / "d.sqlite")
        assert [j.status for j in got] == ["unparseable"] * 3
        assert all(j.calls == 3 and "re-ask" in j.reason for j in got)
        live_calls = 9 if mode == "messages" else 6  # batch mode: 3 answers in the batch, 2 live re-asks each
        assert stub.stats()["successes"] == live_calls
    with AnthropicStub(responder=OffFormatFirst(off=10)) as stub:  # max_reasks = 0: recorded at once
        got = judge_texts(_judge(stub, mode=mode, max_reasks=0), rubric, _items(3), cache=tmp_path / "e.sqlite")
        assert [j.calls for j in got] == [1, 1, 1] and stub.stats()["successes"] == (3 if mode == "messages" else 0)


def test_usage_counts_tokens_and_prices_batch_calls_at_half():
    live = Judgement(score=1.0, calls=2, extra={"usage": {"input_tokens": 1000, "output_tokens": 10}})
    batch = Judgement(score=1.0, calls=1, extra={"batch": True, "usage": {"input_tokens": 1000, "output_tokens": 10}})
    mixed = Judgement(score=1.0, calls=2, extra={"usage": {"input_tokens": 500, "output_tokens": 5},
                                                 "batch_part": {"calls": 1, "usage": {"input_tokens": 500, "output_tokens": 5}}})
    cached = Judgement(score=1.0, calls=0, extra={"usage": {"input_tokens": 10**6}})  # a cache hit is free
    u = JudgeUsage("claude-haiku-4-5").add([live, batch, mixed, cached])
    assert (u.calls, u.batch_calls, u.input_tokens, u.output_tokens) == (5, 2, 3000, 30)
    p_in, p_out = price("claude-haiku-4-5")
    full = (1000 * p_in + 10 * p_out) / 1e6
    assert u.cost_usd == pytest.approx(full + 0.5 * full + (full / 2) + 0.5 * (full / 2))
    assert price("claude-haiku-4-5-20251001") == (p_in, p_out) and JudgeUsage("gpt-x").add([live]).to_dict()["cost_usd"] is None
    assert "paid call" in u.line() and "$" in u.line()


def test_judge_run_records_usage_of_fresh_calls_only(tmp_path):
    ds = make_run()
    rubric = load_rubric("alignment")
    with AnthropicStub() as stub:
        judge = _judge(stub)
        out = judge_run(ds, [rubric], judge, cache=tmp_path / "c.sqlite", progress=False)
        first = json.loads(out.attrs["judge_usage"])[judge.judge_id]
        n_calls = stub.stats()["successes"]
        assert first["calls"] == n_calls > 0 and first["input_tokens"] > 0 and first["cost_usd"] > 0
        again = json.loads(judge_run(ds, [rubric], judge, cache=tmp_path / "c.sqlite", progress=False).attrs["judge_usage"])
        assert again[judge.judge_id]["calls"] == 0 and again[judge.judge_id]["cost_usd"] == 0
    assert "sk-ant" not in json.dumps(first)


def test_a_kill_between_creating_a_batch_and_recording_it_does_not_pay_twice(tmp_path, monkeypatch):
    from phasebayes.judge.cache import JudgeCache

    rubric, cache = load_rubric("alignment"), tmp_path / "c.sqlite"
    real_add = JudgeCache.add_batch

    def killed(self, *a, **kw):  # the process dies right after the API created the batch
        raise KeyboardInterrupt("killed before the batch id was saved")

    with AnthropicStub(batch_polls=1) as stub:
        other = _judge(stub, mode="batch")  # someone else's batch of another size on the same account
        judge_texts(other, load_rubric("coherence"), _items(2), cache=tmp_path / "other.sqlite")
        monkeypatch.setattr(JudgeCache, "add_batch", killed)
        with pytest.raises(KeyboardInterrupt):
            judge_texts(_judge(stub, mode="batch"), rubric, _items(5), cache=cache)
        assert stub.batch_creates == 2
        with JudgeCache(cache) as c:
            assert len(c.open_intents(_judge(stub, mode="batch").judge_id, rubric.version)) == 1
        monkeypatch.setattr(JudgeCache, "add_batch", real_add)
        got = judge_texts(_judge(stub, mode="batch"), rubric, _items(5), cache=cache)
        assert [j.status for j in got] == ["ok"] * 5
        assert stub.batch_creates == 2  # the orphaned batch was adopted, not paid for again
        with JudgeCache(cache) as c:
            assert c.open_intents(_judge(stub, mode="batch").judge_id, rubric.version) == []
            assert len(c.batch_ids()) == 1
