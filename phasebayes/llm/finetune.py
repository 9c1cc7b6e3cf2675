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

Entry point: :func:`train` with a :class:`TrainConfig` (:mod:`.train_config`); the output folder and
its step log: :mod:`.train_output`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..storage import atomic_write_text
from .train_config import TrainConfig
from .train_output import (
    TRAIN_LOG_NAME,
    TrainResult,
    _existing_checkpoints,
    _prepare_output,
    _save_step0,
    read_training_log,
)

__all__ = ["TrainConfig", "TrainResult", "train", "read_training_log", "TRAIN_LOG_NAME"]

# ----------------------------------------------------------------------------------------------------------
_SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}



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


def train(config: TrainConfig, *, callback: Callable[[int, dict[str, float]], None] | None = None,
          callbacks: Sequence[Any] = ()) -> TrainResult:
    """Fine-tune a base model on a chat dataset with TRL's ``SFTTrainer``; write checkpoints and the step log.

    Parameters
    ----------
    config
        The run's :class:`TrainConfig`.
    callback
        Called after every optimiser step as ``callback(step, record)`` (record = the log row); may raise
        to stop training (a rerun with the same config resumes from the last checkpoint).
    callbacks
        Extra ``transformers.TrainerCallback`` objects (e.g. :class:`phasebayes.monitor.TransitionMonitor`);
        one with an ``attach(trainer)`` method is attached through it (to log through the trainer).

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
    for extra in callbacks:
        if hasattr(extra, "attach"):
            extra.attach(trainer)
        else:
            trainer.add_callback(extra)
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
