"""Inputs of the generate stage: the prompt list, the base model behind a checkpoint folder, and the
settings fingerprint a resumed run must match."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .checkpoints import Checkpoint
from .generate_config import _RESUME_FREE, GenerateConfig


def _as_prompts(prompts: str | os.PathLike | Sequence[dict[str, str]]) -> list[dict[str, str]]:
    from .chat_data import read_prompts

    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts)
    out = []
    for p in prompts:
        if not isinstance(p, dict) or "id" not in p or "text" not in p:
            raise ConfigError("each prompt must be a dict with 'id' and 'text'.")
        out.append({"id": str(p["id"]), "text": str(p["text"])})
    if len({p["id"] for p in out}) != len(out):
        raise ConfigError("prompt ids must be unique.")
    if not out:
        raise ConfigError("no prompts given.")
    return out


def _base_model_spec(
    checkpoints: list[Checkpoint], base_model: str | os.PathLike | None, ckpt_dir: Path | None
) -> str | None:
    """The base model, in order: as given; the adapters' ``base_model_name_or_path``; the ``base_model``
    of ``train_config.json`` in the checkpoint folder; a full checkpoint folder that has a tokenizer;
    else ``None`` (the embedded default)."""
    if base_model is not None:
        return str(base_model)
    for c in checkpoints:
        if c.kind == "lora":
            name = (c.adapter_config or {}).get("base_model_name_or_path")
            if name and Path(name).is_dir():
                return str(name)
            if name:
                raise ConfigError(
                    f"the adapters were trained on {name!r}, which is not a local folder; pass base_model= a local "
                    "copy of that model (phasebayes never downloads from a model hub)."
                )
    if ckpt_dir is not None and (ckpt_dir / "train_config.json").exists():
        return json.loads((ckpt_dir / "train_config.json").read_text()).get("base_model")
    for c in checkpoints:
        if c.kind == "full" and c.path is not None and any(c.path.glob("tokenizer*")):
            return str(c.path)
    return None


def _fingerprint(cfg: GenerateConfig, ckpts: list[Checkpoint], prompts: list[dict[str, str]], base: str) -> dict[str, Any]:
    return {
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUME_FREE},
        "checkpoints": [[c.step, str(c.path) if c.path else None, c.kind] for c in ckpts],
        "prompts": [[p["id"], p["text"]] for p in prompts],
        "base_model": base,
    }
