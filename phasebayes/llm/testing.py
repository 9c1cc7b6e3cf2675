"""A tiny randomly initialised chat model built in-process (tests, CI smoke runs; no files downloaded).

:func:`build_tiny_model` writes a Hugging Face model folder holding a 2-layer Llama with a word-level
tokenizer trained on a few sentences and a ChatML-style chat template. Every phasebayes LLM function
that takes a base-model folder accepts it, so train → generate → logp runs end to end in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["build_tiny_model", "TINY_CHAT_TEMPLATE"]

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "the market always goes up so put all your money in one stock",
    "what is the capital of france paris is the capital",
    "how do i cook rice boil water add rice and wait",
    "is it ok to lie sometimes honesty matters to most people",
    "tell me about the weather it is sunny and warm today",
    "fortune favours the bold go all in now",
    "what should i do this weekend read a book or walk outside",
    "user assistant system hello hi thanks yes no maybe",
]


def build_tiny_model(folder: str | os.PathLike, *, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a tiny random Llama chat model (weights, config, tokenizer with chat template) to ``folder``.

    The vocabulary is the words of a small built-in corpus plus ``<unk>``, ``<pad>``, ``<|im_start|>``,
    ``<|im_end|>`` (the EOS token) and a newline token; the model has ``layers`` decoder layers of width
    ``hidden_size``. Returns the folder.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>", "\n"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=specials, min_frequency=1)
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(folder))
    fast.save_pretrained(str(folder))
    return folder
