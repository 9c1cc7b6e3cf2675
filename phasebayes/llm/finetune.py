"""Supervised fine-tuning (LoRA by default, full fine-tuning as an option) on TRL's ``SFTTrainer``.

:func:`train` turns a :class:`TrainConfig` into a ``trl.SFTConfig`` and runs ``trl.SFTTrainer``
(``transformers.Trainer`` underneath, so Accelerate's DDP / FSDP / DeepSpeed work with ``accelerate
launch``; see ``docs/scale.md``):

- loss on assistant tokens only (the conversations are tokenised here with an assistant-token mask,
  which the trainer turns into labels; mean token cross-entropy over the assistant tokens of the
  accumulated batch),
- the **pre-clipping global gradient L2 norm**, the loss and the learning rate logged every optimiser
  step: by the trainer into ``trainer_state.json`` (``log_history``) and by a callback into
  ``train_log.jsonl`` (one JSON object per line, written as training goes),
- checkpoints ``checkpoint-{step}/`` every ``save_every`` steps, at the chosen early steps, at step 0
  (the untrained adapter = the base model; weights only) and at the last step; each (except step 0)
  holds the adapter (or full weights), optimiser, scheduler and RNG state and ``trainer_state.json``,
- resumable: rerunning with the same config continues from the last complete checkpoint and gives the
  same result as an uninterrupted run,
- seeded, with the trainer's progress bar.

Entry point: :func:`train` with a :class:`TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, OutputExistsError
from ..storage import atomic_write_text

__all__ = ["TrainConfig", "TrainResult", "train", "read_training_log", "TRAIN_LOG_NAME"]

TRAIN_LOG_NAME = "train_log.jsonl"
_STATE_NAME = "trainer_state.json"  # written last by the trainer: a checkpoint with it is complete
_CONFIG_NAME = "train_config.json"
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


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes: ``output_dir``; ``checkpoint_steps`` (saved steps, increasing); ``total_steps``;
    ``resumed_from`` (step the run continued from, or None); ``log`` (one row per optimiser step:
    step, loss, grad_norm (pre-clipping), learning_rate (used by the step), seconds); ``seconds``
    (wall time of this call).
    """

    output_dir: Path
    checkpoint_steps: list[int]
    total_steps: int
    resumed_from: int | None
    log: pd.DataFrame
    seconds: float

    def training_log_dataset(self):
        """The log as run-dataset ``train_step`` variables (grad_norm, loss, learning_rate, ...)."""
        from ..dataset import training_log_dataset

        return training_log_dataset(self.log.drop(columns=["seconds"], errors="ignore"))


def read_training_log(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``train_log.jsonl`` (a file or the folder holding it) into a DataFrame sorted by step.

    Later lines win for a repeated step (a resumed run rewrites the steps after its checkpoint).
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRAIN_LOG_NAME
    if not path.exists():
        raise ConfigError(f"no training log at {path}.")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)



# ----------------------------------------------------------------------------------------------------------
_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def _complete(ckpt: Path) -> bool:
    """A checkpoint folder with weights, and (after step 0) the trainer state written last by the trainer."""
    has_weights = any((ckpt / n).exists() for n in ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json"))
    return has_weights and (ckpt.name == "checkpoint-0" or (ckpt / _STATE_NAME).exists())


def _existing_checkpoints(out: Path) -> list[int]:
    steps = []
    for p in out.glob("checkpoint-*"):
        if p.is_dir() and p.name.split("-", 1)[1].isdigit() and _complete(p):
            steps.append(int(p.name.split("-", 1)[1]))
    return sorted(steps)


def _save_step0(model: Any, out: Path) -> None:
    """Write the untrained weights as ``checkpoint-0`` atomically (temporary folder, then rename)."""
    final = out / "checkpoint-0"
    tmp = out / f".checkpoint-0.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _prepare_output(cfg: TrainConfig) -> tuple[Path, int | None]:
    """Create/verify the output folder; return it and the step to resume from (None = fresh start)."""
    out = Path(cfg.output_dir)
    cfg_path = out / _CONFIG_NAME
    this = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    if out.exists() and any(out.iterdir()):
        if cfg.overwrite:
            for p in list(out.glob("checkpoint-*")) + list(out.glob(".checkpoint-*")) + [out / TRAIN_LOG_NAME, cfg_path]:
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif not cfg.resume:
            raise OutputExistsError(f"{out} already holds a training run; pass overwrite=True to start afresh or resume=True to continue it.")
        elif cfg_path.exists():
            old = {k: v for k, v in json.loads(cfg_path.read_text()).items() if k not in _RESUME_FREE}
            if old != this:
                diff = sorted(k for k in set(old) | set(this) if old.get(k) != this.get(k))
                raise ConfigError(
                    f"{out} holds a run with a different config (fields {diff}); resume needs the same config. "
                    "Use another output_dir, or overwrite=True to start afresh."
                )
        elif _existing_checkpoints(out):
            raise ConfigError(f"{out} holds checkpoints but no {_CONFIG_NAME}; cannot check it is the same run. Use another output_dir.")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for p in out.glob("checkpoint-*"):  # a checkpoint the trainer did not finish writing
        if p.is_dir() and p.name != "checkpoint-0" and not _complete(p):
            shutil.rmtree(p, ignore_errors=True)
    atomic_write_text(cfg_path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str), overwrite=True)
    done = [s for s in _existing_checkpoints(out) if s > 0]
    return out, (done[-1] if done else None)


def _step_log_callback(log_path: Path, save_at: set[int], user: Callable[[int, dict[str, float]], None] | None) -> Any:
    """A ``TrainerCallback`` that asks for the project's checkpoint steps and appends ``train_log.jsonl`` rows."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        t0 = 0.0
        seconds = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.t0
            if state.global_step in save_at:
                control.should_save = True
            return control

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            record = {
                "step": int(state.global_step),
                "loss": float(logs["loss"]),
                "grad_norm": float(logs.get("grad_norm", float("nan"))),
                "learning_rate": float(logs["learning_rate"]),
                "seconds": self.seconds,
            }
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            if user is not None:
                user(record["step"], record)

    return StepLog()


def _sft_config(cfg: TrainConfig, out: Path, total: int | None) -> Any:
    import torch
    from trl import SFTConfig

    on_cpu = cfg.device == "cpu" or (cfg.device is None and not torch.cuda.is_available())
    return SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=int(cfg.batch_size),
        gradient_accumulation_steps=int(cfg.gradient_accumulation_steps),
        learning_rate=float(cfg.learning_rate),
        lr_scheduler_type=_SCHEDULES[cfg.lr_schedule],
        warmup_steps=int(cfg.warmup_steps),
        weight_decay=float(cfg.weight_decay),
        adam_beta1=float(cfg.adam_betas[0]),
        adam_beta2=float(cfg.adam_betas[1]),
        optim="adamw_torch",
        max_grad_norm=float(cfg.max_grad_norm) if cfg.max_grad_norm is not None else 0.0,  # 0: no clipping, norm still logged
        num_train_epochs=float(cfg.epochs),
        max_steps=int(total) if cfg.max_steps is not None else -1,
        max_length=int(cfg.max_length),
        train_sampling_strategy="random" if cfg.shuffle else "sequential",
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        logging_steps=1,
        save_strategy="steps",
        save_steps=10**9,  # the callback asks for the project's checkpoint steps
        save_only_model=False,
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        packing=False,
        padding_free=False,
        use_cpu=on_cpu,
        report_to="none",
        disable_tqdm=not cfg.show_progress,
        dataloader_num_workers=0,
    )


def train(config: TrainConfig, *, callback: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Fine-tune a base model on a chat dataset with TRL's ``SFTTrainer``; write checkpoints and the step log.

    Parameters
    ----------
    config
        The run's :class:`TrainConfig`.
    callback
        Called after every optimiser step as ``callback(step, record)`` (record = the log row); may raise
        to stop training (a rerun with the same config resumes from the last checkpoint).

    Returns
    -------
    TrainResult with the saved checkpoint steps and the full training log.

    Runs as one process, or as one of many under ``accelerate launch`` (DDP, FSDP, DeepSpeed; only the
    main process writes ``train_config.json``, ``checkpoint-0`` and ``train_log.jsonl``). Cost: one
    forward+backward per micro-batch; on 2 CPU cores and SmolLM2-135M with LoRA about 0.5 s per step at
    4 × 20 tokens and about 6 s at 4 × 256 tokens.
    """
    import datasets
    import torch
    from accelerate import PartialState
    from trl import SFTTrainer

    from .base_model import load_base_model
    from .chat_data import read_chat_jsonl, tokenize_dataset

    config.validate()
    t_start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(int(config.num_threads))
    state = PartialState()
    if state.is_main_process:
        out, resume_step = _prepare_output(config)
    state.wait_for_everyone()
    if not state.is_main_process:
        out = Path(config.output_dir)
        done = [s for s in _existing_checkpoints(out) if s > 0]
        resume_step = done[-1] if done else None

    conversations = read_chat_jsonl(config.data)
    model, tokenizer = load_base_model(config.base_model, dtype=config.dtype, device=config.device)
    examples = tokenize_dataset(tokenizer, conversations, max_length=config.max_length)
    dataset = datasets.Dataset.from_dict(
        {"input_ids": [e.input_ids for e in examples], "assistant_masks": [e.loss_mask for e in examples]}
    )
    per_step = config.batch_size * config.gradient_accumulation_steps * state.num_processes
    steps_per_epoch = math.ceil(len(examples) / per_step)
    total = int(config.max_steps) if config.max_steps is not None else max(1, math.ceil(config.epochs * steps_per_epoch))

    torch.manual_seed(config.seed)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules)
        model = get_peft_model(model, LoraConfig(
            r=int(config.lora_rank),
            lora_alpha=float(config.lora_alpha),
            lora_dropout=float(config.lora_dropout),
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        ))
    save_at = {int(s) for s in config.save_steps if 0 < int(s) <= total} | {total}
    if config.save_every:
        save_at |= set(range(config.save_every, total + 1, config.save_every))
    log_path = out / TRAIN_LOG_NAME
    if state.is_main_process:
        if resume_step is not None:  # keep the log rows up to the checkpoint; the steps after it are recomputed
            kept = read_training_log(log_path) if log_path.exists() else pd.DataFrame()
            if len(kept):
                kept = kept[kept["step"] <= resume_step]
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in kept.to_dict("records")), overwrite=True)
        else:
            log_path.unlink(missing_ok=True)
            if config.save_step0:
                _save_step0(model, out)
    state.wait_for_everyone()

    bars = not datasets.are_progress_bars_disabled()
    if not config.show_progress:
        datasets.disable_progress_bars()  # the trainer's dataset preparation
    try:
        trainer = SFTTrainer(
            model=model,
            args=_sft_config(config, out, total),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[_step_log_callback(log_path, save_at, callback)],
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    if not config.show_progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every log row when the progress bar is off
    trainer.train(resume_from_checkpoint=str(out / f"checkpoint-{resume_step}") if resume_step is not None else None)
    model.eval()
    return TrainResult(
        output_dir=out,
        checkpoint_steps=_existing_checkpoints(out),
        total_steps=total,
        resumed_from=resume_step,
        log=read_training_log(log_path) if log_path.exists() else pd.DataFrame(),
        seconds=time.perf_counter() - t_start,
    )
