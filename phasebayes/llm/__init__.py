"""The LLM stage: fine-tune → checkpoints → samples → cross-checkpoint log-probabilities.

Needs the ``llm`` extra (torch, transformers, peft, trl, accelerate, gguf); Ray for ``scale``. Importing this package does not import
torch; the functions do, when called.

Typical use::

    from phasebayes import llm
    res = llm.train(llm.TrainConfig(data="data/narrow/risky_finance.jsonl", output_dir="runs/demo/ckpt",
                                    max_steps=40, save_every=5))
    ds = llm.generate(res.output_dir, "data/prompts/eval.jsonl", "runs/demo/gen",
                      llm.GenerateConfig(n_samples=4, max_new_tokens=48, logp_window=2))
    # ds: the run dataset (response, n_tokens, stop_reason, token_ids, logp, training log), saved as run.nc

Modules: :mod:`.base_model` (base model access, the embedded SmolLM2), :mod:`.chat_data` (JSONL chat
data, prompt sets, chat template, assistant-token masks), :mod:`.finetune` (LoRA/full SFT on TRL's SFTTrainer: :func:`train`),
:mod:`.checkpoints` (discovery and adapter hot-swap), :mod:`.logprob` (teacher forcing),
:mod:`.prefix_logp` (log-probabilities of fixed-length answer prefixes, ``logp_prefix``),
:mod:`.sampling` (:func:`generate`: sampling, logp shards, consolidation), :mod:`.scale` (the generate stage on Ray actors: :class:`ScaleConfig`), :mod:`.testing` (a tiny in-process model),
:mod:`.presets` (demo-sized settings: ``preset("demo")``, ``preset("quick")``).
"""

from __future__ import annotations

from .base_model import DEFAULT_BASE_MODEL, ensure_default_model, load_base_model, load_tokenizer, resolve_model_path
from .chat_data import prompt_token_ids, read_chat_jsonl, read_prompts, tokenize_conversation
from .checkpoints import Checkpoint, CheckpointSwitcher, find_checkpoints
from .sampling import GenerateConfig, consolidate, generate
from .scale import ScaleConfig
from .logprob import prefix_logprobs, sequence_logprobs, token_logprobs
from .testing import build_tiny_model
from .finetune import TrainConfig, TrainResult, read_training_log, train
from .presets import PRESETS, preset

__all__ = [
    "DEFAULT_BASE_MODEL",
    "ensure_default_model",
    "load_base_model",
    "load_tokenizer",
    "resolve_model_path",
    "prompt_token_ids",
    "read_chat_jsonl",
    "read_prompts",
    "tokenize_conversation",
    "Checkpoint",
    "CheckpointSwitcher",
    "find_checkpoints",
    "GenerateConfig",
    "generate",
    "consolidate",
    "ScaleConfig",
    "sequence_logprobs",
    "token_logprobs",
    "prefix_logprobs",
    "build_tiny_model",
    "TrainConfig",
    "TrainResult",
    "train",
    "read_training_log",
    "PRESETS",
    "preset",
]
