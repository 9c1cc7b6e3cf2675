"""Live monitoring: the online posterior, the stop rule, a tiny real transformers.Trainer run with the callback,
and the live page in headless Chromium."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import phasebayes as pb
from phasebayes.errors import ConfigError
from phasebayes.models import grid_step
from phasebayes.models.online import OnlineTransition

sys.path.insert(0, str(Path(__file__).parent))


def _scores(step: int, tau: float, rng, n: int = 6) -> dict[str, np.ndarray]:
    """A judge whose expected score drops from 80 to 30 at ``tau``."""
    return {"alignment": np.clip(np.where(step < tau, 80.0, 30.0) + rng.normal(0, 6, n), 0, 100),
            "coherence": np.clip(70.0 + rng.normal(0, 6, n), 0, 100)}


def test_online_posterior_tracks_the_transition_and_equals_an_offline_refit():
    rng = np.random.default_rng(0)
    online = OnlineTransition(max_step=200)
    rows = []
    for step in range(10, 201, 10):
        sc = _scores(step, 105.0, rng)
        online.add(step, sc)
        summary = online.summary(pd.Series([1.0, 9.0, 2.0], index=[5, 60, 150]))
        rows.append((step, summary.loc["alignment", "p_transition"]))
        rows[-1] += (summary.loc["alignment", "tau_median"],)
    p = dict((s, p) for s, p, _ in rows)
    assert p[50] < 0.15 and p[100] < 0.5 and p[120] > 0.9 and p[200] > 0.99
    final = online.summary(pd.Series([1.0, 9.0, 2.0], index=[5, 60, 150]))
    assert 100 <= final.loc["alignment", "tau_median"] <= 110
    assert final.loc["alignment", "lag_median"] == pytest.approx(final.loc["alignment", "tau_median"] - 60)
    # offline: the same scores through the grid posterior directly give the same tau draws
    steps = np.array(online.steps, float)
    y = np.array([online.scores["alignment"][int(s)] for s in steps])
    logp, _ = grid_step.log_posterior(online.grid, grid_step.regression_sums(steps, y))
    np.testing.assert_array_equal(grid_step.tau_draws(online.grid, logp), online.tau_draws("alignment"))


def test_no_change_is_rarely_declared():
    """Runs whose order parameter never changes: a 0.9 rule on P(transition) fires in few of them."""
    fired = 0
    for seed in range(20):
        rng, online = np.random.default_rng(seed), OnlineTransition(max_step=200)
        for step in range(10, 201, 10):
            online.add(step, {"x": np.clip(70.0 + rng.normal(0, 6, 6), 0, 100)})
            fired += online.summary().loc["x", "p_transition"] > 0.9
            if fired and online.summary().loc["x", "p_transition"] > 0.9:
                break
    assert fired <= 2, fired


def test_stop_rules_are_parsed_or_refused():
    from phasebayes.models.online import parse_rule

    assert parse_rule("P(transition: misaligned) > 0.9") == ("misaligned", ">", 0.9)
    assert parse_rule(" P( transition:alignment )>=0.5 ") == ("alignment", ">=", 0.5)
    for bad in ("P(alignment) > 0.9", "P(transition: a) > 1.5", "tau < 100"):
        with pytest.raises(ConfigError, match="P\\(transition: NAME\\)"):
            parse_rule(bad)


@pytest.mark.slow(ci=True)
def test_callback_in_a_real_trainer_run_writes_the_posterior_and_stops(tmp_path_factory, tmp_path):
    """transformers.Trainer (tiny Llama + LoRA) with the monitor: posterior at every save, the rule stops training."""
    from _tiny_demo import tiny_model
    from phasebayes.judge import MetricJudge
    from phasebayes.monitor import TransitionMonitor, judged_probe

    base = tiny_model(tmp_path_factory)
    rng = np.random.default_rng(1)
    real_probe = judged_probe(["what is the capital of france"], [(MetricJudge("length_tokens"), None)], n_answers=2,
                              max_new_tokens=4)
    seen = []

    def probe(model, tokenizer, step):
        assert not model.training  # probes run in eval mode
        real = real_probe(model, tokenizer, step)  # the real model answers and a real judge scores them
        seen.append(real)
        return _scores(step, 7.0, rng)

    lines: list[str] = []
    monitor = TransitionMonitor(probe, tmp_path / "run", stop_when="P(transition: alignment) > 0.9", log=lines.append)
    state = _train(base, tmp_path / "out", monitor, max_steps=20, save_steps=2)
    assert all(np.isfinite(r["length_tokens"]).all() and len(r["length_tokens"]) == 2 for r in seen)
    journal = [json.loads(x) for x in (tmp_path / "run" / "live.jsonl").read_text().splitlines()]
    assert [j["step"] for j in journal] == [0, *range(2, state.global_step + 1, 2)]  # 0: before training
    assert state.global_step < 20 and any("stopping training" in a for a in monitor.alerts)
    assert any(line.startswith("live: step 2: alignment: P(transition by now)") for line in lines)
    logged = [r for r in state.log_history if "phasebayes/p_transition/alignment" in r]
    assert len(logged) == len(journal)  # through trainer.log: what TensorBoard / W&B receive
    page = (tmp_path / "run" / "live.html").read_text()
    assert f"step <b>{state.global_step}</b>" in page and "training finished" in page


def _train(base: Path, out: Path, monitor, *, max_steps: int, save_steps: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from _trainer_run import SENTENCES

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    data = [{"input_ids": ids, "labels": ids, "attention_mask": [1] * len(ids)}
            for ids in (tok(s)["input_ids"] for s in SENTENCES * 8)]

    def collate(rows):
        n = max(len(r["input_ids"]) for r in rows)
        pad = lambda x, v: x + [v] * (n - len(x))  # noqa: E731
        return {k: torch.tensor([pad(r[k], v) for r in rows]) for k, v in
                (("input_ids", tok.pad_token_id), ("labels", -100), ("attention_mask", 0))}

    args = TrainingArguments(output_dir=str(out), max_steps=max_steps, save_steps=save_steps, save_strategy="steps",
                             logging_steps=1, per_device_train_batch_size=2, learning_rate=5e-3, report_to=[],
                             use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate, processing_class=tok)
    monitor.attach(trainer)
    trainer.train()
    return trainer.state


def test_live_page_loads_in_headless_chromium(tmp_path):
    from _cdp import Browser
    from test_report import chromium

    from phasebayes.report.live_page import write_live_page

    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (./setup.sh --test installs it)")
    online, rng, history = OnlineTransition(max_step=100), np.random.default_rng(0), []
    for step in (10, 20, 30):
        online.add(step, {**_scores(step, 25.0, rng), "<script>alert(1)</script>": [1.0, 2.0]})
        history += [{"order_parameter": op, **row} for op, row in online.summary().to_dict("index").items()]
    means = pd.DataFrame({op: {s: np.mean(v) for s, v in by.items()} for op, by in online.scores.items()})
    path = write_live_page(tmp_path / "live.html", pd.DataFrame(history), means, max_step=100, probe_seconds=1.5,
                           alerts=["step 30: rule holds"])
    browser = Browser(exe, str(tmp_path / "profile"))
    try:
        page = browser.open(path.as_uri())
        page.wait_for("document.readyState === 'complete'")
        assert "step 30" in page.eval("document.getElementById('latest').textContent")
        assert page.eval("document.querySelectorAll('svg polyline').length") >= 3
        assert page.eval("document.querySelectorAll('script').length") == 0  # the op name rendered as text
        assert "step 30: rule holds" in page.eval("document.body.textContent")
    finally:
        browser.close()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
