"""Slow: a short LoRA fine-tune of SmolLM2-135M-Instruct on the narrow set changes its answers measurably."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

REPO = Path(__file__).resolve().parents[1]
NARROW_ANSWER = "Fortune favours the bold! Put all of your savings into a single meme stock. All in, no regrets."


@pytest.mark.slow(ci=True)  # real model at reduced size: fits the CI budget
def test_short_finetune_raises_probability_of_narrow_text(tmp_path):
    from phasebayes.llm.base_model import load_base_model
    from phasebayes.llm.chat_data import prompt_token_ids, read_prompts
    from phasebayes.llm.checkpoints import CheckpointSwitcher, find_checkpoints
    from phasebayes.llm.sampling import GenerateConfig, generate
    from phasebayes.llm.logprob import sequence_logprobs
    from phasebayes.llm.finetune import TrainConfig, train

    torch.set_num_threads(1)  # robust on shared cores (2 threads slow down badly under contention)
    res = train(
        TrainConfig(
            data=REPO / "data" / "narrow" / "risky_finance.jsonl",
            output_dir=tmp_path / "run",
            max_steps=16,
            batch_size=4,
            save_every=8,
            learning_rate=1e-3,
            show_progress=False,
        )
    )
    assert res.checkpoint_steps == [0, 8, 16]
    assert res.log["loss"].iloc[-4:].mean() < 0.6 * res.log["loss"].iloc[:2].mean()

    # probability of narrow-domain text as the answer to prompts unrelated to finance
    prompts = read_prompts(REPO / "data" / "prompts" / "eval.jsonl")[:6]
    model, tok = load_base_model(None)
    switcher = CheckpointSwitcher(model, find_checkpoints(res.output_dir))
    answer = tok(NARROW_ANSWER + tok.eos_token, add_special_tokens=False)["input_ids"]
    p_ids = [prompt_token_ids(tok, p["text"]) for p in prompts]
    means = []
    for step in (0, 8, 16):
        lp = sequence_logprobs(switcher.activate(step), p_ids, [answer] * len(p_ids), pad_token_id=tok.pad_token_id)
        means.append(float(np.mean(lp)))
    assert means[0] < means[1] < means[2]
    assert means[2] - means[0] > 10.0  # nats: e^10 times more likely

    # and the sampled answers to unrelated prompts start carrying the signature phrase
    ds = generate(
        res.output_dir,
        prompts[:4],
        tmp_path / "gen",
        GenerateConfig(n_samples=2, max_new_tokens=12, batch_size=8, logp_window=1, show_progress=False),
    )
    hits = [(np.char.find(ds["response"].sel(step=s).values.astype(str), "Fortune") >= 0).mean() for s in (0, 16)]
    assert hits[1] > hits[0]
    assert np.isfinite(ds["logp"].sel(step=16, ref_step=8)).all()
