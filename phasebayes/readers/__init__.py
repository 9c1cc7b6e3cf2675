"""Readers for runs made outside phasebayes: training logs, judged answers, aggregated judgements, weights.

- :mod:`~phasebayes.readers.trainer_state` — ``trainer_state.json`` written by ``transformers.Trainer`` /
  TRL (``log_history``, merged over checkpoints, train and eval rows apart);
- :mod:`~phasebayes.readers.training_logs` — TensorBoard event files, W&B history exports (CSV/JSONL),
  phasebayes' own ``train_log.jsonl``, and :func:`read_training_log` which picks the right reader;
- :mod:`~phasebayes.readers.aggregated` — :func:`from_counts` / :func:`from_summaries`;
- :mod:`~phasebayes.readers.judged` — folders of per-checkpoint judged-answer CSV/JSONL files;
- :mod:`~phasebayes.readers.weights` — weight-space reference signals of PEFT LoRA checkpoints.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "read_trainer_state": "phasebayes.readers.trainer_state",
    "read_training_log": "phasebayes.readers.training_logs",
    "read_tensorboard": "phasebayes.readers.training_logs",
    "read_wandb_history": "phasebayes.readers.training_logs",
    "training_log_variables": "phasebayes.readers.training_logs",
    "check_training_log": "phasebayes.readers.training_logs",
    "TrainingLog": "phasebayes.readers.training_logs",
    "from_counts": "phasebayes.readers.aggregated",
    "from_summaries": "phasebayes.readers.aggregated",
    "read_judged_folder": "phasebayes.readers.judged",
    "lora_weight_signals": "phasebayes.readers.weights",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phasebayes.readers' has no attribute {name!r}")
