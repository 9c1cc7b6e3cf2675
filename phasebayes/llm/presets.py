"""Ready-made settings for the end-to-end demo on the embedded SmolLM2-135M-Instruct (2 CPU cores).

``preset("demo")`` and ``preset("quick")`` return a :class:`TrainConfig` and a :class:`GenerateConfig`
plus the prompt ids to use, sized so that train + generate + logp fit the time budget stated per preset
(measured on 2 CPU cores, see the figures in each entry). Fine-tuning is on the project's narrow set
``data/narrow/risky_finance.jsonl``; the transition (answers to unrelated prompts start with the
signature phrase "Fortune favours the bold!") happens between about step 8 and step 15 at these settings
(learning rate 1e-3, batch 4, LoRA rank 8 on all linear layers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .chat_data import read_prompts
from .finetune import TrainConfig
from .sampling import GenerateConfig

__all__ = ["Preset", "PRESETS", "preset", "DATA_DIR"]

DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class Preset:
    """Settings of one preset: training and generation keyword arguments and the number of prompts used."""

    train: dict
    generate: dict
    n_prompts: int
    budget: str


PRESETS: dict[str, Preset] = {
    # 9 checkpoints (every 3 steps), 12 prompts x 4 samples x <= 40 tokens, logp within +-1 checkpoint
    # (enough for dissimilarity windows L = 1). Measured on 2 shared cores (load 2-4, 1 thread): train 83 s,
    # sampling 154 s (15.7k tokens), logp 155 s (1200 sequences): 392 s in all (313 CPU-s).
    # Signature-phrase rate per checkpoint 0..24: 0, 0, .02, .08, .56, .96, .96, 1, .98.
    "demo": Preset(
        train=dict(max_steps=24, save_every=3, batch_size=4, learning_rate=1e-3, lora_rank=8, lora_alpha=16.0),
        generate=dict(n_samples=4, max_new_tokens=40, batch_size=48, logp_window=1),
        n_prompts=12,
        budget="train + generate + logp about 8 minutes on 2 shared CPU cores, less when idle",
    ),
    # 5 checkpoints (every 4 steps), 8 prompts x 3 samples x <= 32 tokens, logp within +-1 checkpoint.
    # Measured on 2 shared cores (load 4-5, 1 thread): train 69 s, sampling 53 s, logp 39 s (161 s total).
    # Signature-phrase rate per checkpoint 0..16: 0, 0, .17, .67, .96.
    "quick": Preset(
        train=dict(max_steps=16, save_every=4, batch_size=4, learning_rate=1e-3, lora_rank=8, lora_alpha=16.0),
        generate=dict(n_samples=3, max_new_tokens=32, batch_size=24, logp_window=1),
        n_prompts=8,
        budget="train + generate + logp under 3 minutes on 2 shared CPU cores",
    ),
}


def preset(
    name: str,
    output_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    prompts: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[TrainConfig, GenerateConfig, list[dict[str, str]]]:
    """Configs for a named preset: ``(train_config, generate_config, prompts)``.

    Checkpoints go to ``output_dir/checkpoints``; pass ``output_dir/generate`` to
    :func:`~phasebayes.llm.generate`. ``prompts`` defaults to ``data/prompts/eval.jsonl`` (the first
    ``n_prompts``, taken round-robin over its categories so that every category is represented).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    p = PRESETS[name]
    out = Path(output_dir)
    tcfg = TrainConfig(
        data=data or DATA_DIR / "narrow" / "risky_finance.jsonl", output_dir=out / "checkpoints", seed=seed, **p.train
    )
    gcfg = GenerateConfig(seed=seed, **p.generate)
    all_prompts = read_prompts(prompts or DATA_DIR / "prompts" / "eval.jsonl")
    by_cat: dict[str, list[dict[str, str]]] = {}
    for pr in all_prompts:
        by_cat.setdefault(pr.get("category", ""), []).append(pr)
    chosen: list[dict[str, str]] = []
    while len(chosen) < min(p.n_prompts, len(all_prompts)):
        for items in by_cat.values():
            if items and len(chosen) < p.n_prompts:
                chosen.append(items.pop(0))
    return tcfg, gcfg, chosen
