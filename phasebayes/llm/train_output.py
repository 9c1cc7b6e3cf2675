"""The output folder of a fine-tuning run: checkpoint completeness, resume checks, the step log.

Layout: ``checkpoint-{step}/`` (``checkpoint-0``: the untrained weights), ``train_log.jsonl`` (one JSON
object per optimiser step) and ``train_config.json`` (the settings a resumed run must match).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, OutputExistsError
from ..storage import atomic_write_text
from .train_config import _RESUME_FREE, TrainConfig

__all__ = ["TrainResult", "read_training_log", "TRAIN_LOG_NAME"]

TRAIN_LOG_NAME = "train_log.jsonl"
_STATE_NAME = "trainer_state.json"  # written last by the trainer: a checkpoint with it is complete
_CONFIG_NAME = "train_config.json"


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
