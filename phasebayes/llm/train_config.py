"""Settings of a fine-tuning run (:class:`TrainConfig`); :func:`~phasebayes.llm.finetune.train` runs it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["TrainConfig"]

# fields that may change between an interrupted run and its resumption without changing the result
_RESUME_FREE = {"resume", "overwrite", "num_threads", "show_progress", "device"}


@dataclass
class TrainConfig:
    """Configuration of a fine-tuning run (all fields have defaults sized for a 2-core CPU demo).

    Attributes
    ----------
    data
        JSONL chat dataset (one ``{"messages": [...]}`` per line).
    output_dir
        Folder for ``checkpoint-{step}/`` subfolders, ``train_log.jsonl`` and ``train_config.json``.
    base_model
        Local Hugging Face model folder, or ``None`` / ``"smollm2-135m-instruct"`` for the embedded default.
    method
        ``"lora"`` (default) or ``"full"`` (all weights trained; checkpoints are full models).
    lora_rank, lora_alpha, lora_dropout
        LoRA rank r, scaling alpha (the update is scaled by alpha / r) and dropout probability.
    target_modules
        Module names LoRA adapts (e.g. ``["q_proj", "v_proj"]``) or ``"all-linear"`` (default).
    learning_rate
        Peak learning rate of AdamW (per optimiser step).
    lr_schedule
        ``"constant"``, ``"linear"`` (linear decay to 0 at the last step) or ``"cosine"``; all after warm-up.
    warmup_steps
        Optimiser steps of linear warm-up from 0 to ``learning_rate`` (the trainer's schedules).
    weight_decay, adam_betas
        AdamW weight decay and betas.
    max_grad_norm
        Clip the global gradient norm to this value (``None`` = no clipping); the logged norm is
        always the pre-clipping one.
    batch_size
        Conversations per micro-batch.
    gradient_accumulation_steps
        Micro-batches per optimiser step (effective batch = batch_size × this).
    epochs
        Passes over the data (ignored when ``max_steps`` is set).
    max_steps
        Total optimiser steps (overrides ``epochs``; the data is cycled, reshuffled per epoch).
    max_length
        Truncate conversations to this many tokens.
    save_every
        Save a checkpoint every this many optimiser steps (0 = only the explicit ones and the last).
    save_steps
        Extra steps at which to save (e.g. dense early checkpoints ``(1, 2, 4, 8)``).
    save_step0
        Save the untrained state as ``checkpoint-0`` (for LoRA: equals the base model).
    seed
        Seeds adapter initialisation, data order and dropout.
    shuffle
        Shuffle the data each epoch (seeded).
    dtype, device, num_threads
        Torch dtype name, device (default CUDA if available, else CPU) and CPU threads (None = torch default).
    resume
        Continue from the last checkpoint in ``output_dir`` if one exists (same config required).
    overwrite
        Delete an existing ``output_dir`` run and start afresh.
    show_progress
        Show a tqdm progress bar.
    """

    data: str | os.PathLike
    output_dir: str | os.PathLike
    base_model: str | None = None
    method: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: str | Sequence[str] = "all-linear"
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    epochs: float = 1.0
    max_steps: int | None = None
    max_length: int = 256
    save_every: int = 5
    save_steps: Sequence[int] = field(default_factory=tuple)
    save_step0: bool = True
    seed: int = 0
    shuffle: bool = True
    dtype: str = "float32"
    device: str | None = None
    num_threads: int | None = None
    resume: bool = True
    overwrite: bool = False
    show_progress: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` for invalid values."""
        if self.method not in ("lora", "full"):
            raise ConfigError(f"method must be 'lora' or 'full', got {self.method!r}.")
        if self.lr_schedule not in ("constant", "linear", "cosine"):
            raise ConfigError(f"lr_schedule must be 'constant', 'linear' or 'cosine', got {self.lr_schedule!r}.")
        for name in ("batch_size", "gradient_accumulation_steps", "lora_rank", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise ConfigError(f"max_steps must be >= 1 or None, got {self.max_steps}.")
        if self.max_steps is None and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0 when max_steps is None, got {self.epochs}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.save_every < 0 or self.warmup_steps < 0:
            raise ConfigError("save_every and warmup_steps must be >= 0.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the config (paths as strings, tuples as lists)."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, os.PathLike):
                out[k] = str(v)
            elif isinstance(v, tuple):
                out[k] = list(v)
        out["data"] = str(self.data)
        out["output_dir"] = str(self.output_dir)
        if not isinstance(self.target_modules, str):
            out["target_modules"] = list(self.target_modules)
        return out

