"""``trainer_state.json`` of ``transformers.Trainer`` / TRL runs (``SFTTrainer``, Unsloth, ...).

Each ``checkpoint-N/trainer_state.json`` holds the ``log_history`` up to step N, so the last checkpoint's
file holds the whole history. :func:`read_trainer_state` reads one file, a checkpoint folder or a run
folder with many checkpoints, merges the histories (a later checkpoint wins for a repeated step, e.g.
after a resumed run) and keeps the train rows (``loss``, ``grad_norm``, ``learning_rate``, ...) apart
from the evaluation rows (``eval_*``) and from the end-of-training summary row (``train_runtime``, ...).
Values are kept exactly as logged, in the units the trainer logged them.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path

import pandas as pd

from ..errors import RunDataError

__all__ = ["TRAINER_STATE_NAME", "find_trainer_states", "read_trainer_state"]

TRAINER_STATE_NAME = "trainer_state.json"
_CKPT = re.compile(r"^(?:checkpoint|ckpt|step|global_step)?[-_]?(\d+)$", re.IGNORECASE)
_SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos")
_FIRST = ("step", "grad_norm", "loss", "learning_rate", "epoch")


def find_trainer_states(path: str | os.PathLike) -> list[Path]:
    """The ``trainer_state.json`` files of a file, a checkpoint folder or a run folder, oldest first.

    A run folder's checkpoints are searched directly inside it and inside its ``checkpoints/`` subfolder;
    files are ordered by the checkpoint's step (the folder name's number).
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RunDataError(f"no trainer_state.json at {path}: the path does not exist.")
    found: list[tuple[int, Path]] = []
    for folder in (path, path / "checkpoints"):
        if not folder.is_dir():
            continue
        for sub in folder.iterdir():
            m = _CKPT.match(sub.name)
            if m and sub.is_dir() and (sub / TRAINER_STATE_NAME).exists():
                found.append((int(m.group(1)), sub / TRAINER_STATE_NAME))
    found.sort()
    files = [f for _, f in found]
    if (path / TRAINER_STATE_NAME).exists():
        files.append(path / TRAINER_STATE_NAME)  # the trainer's final state (output_dir) is the newest
    return files


def _load(file: Path) -> dict:
    try:
        state = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise RunDataError(
            f"{file}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}). The file is probably "
            "truncated (training killed while writing); delete it or restore it from the checkpoint's copy."
        ) from err
    except UnicodeDecodeError as err:
        raise RunDataError(f"{file}: not a text file ({err.reason}); pass the trainer_state.json written by the Trainer.") from err
    if not isinstance(state, dict) or "log_history" not in state:
        raise RunDataError(
            f"{file}: no 'log_history' key; this is not a transformers trainer_state.json. "
            "Pass the trainer_state.json of a checkpoint-N folder (or the folder holding the checkpoints)."
        )
    if not isinstance(state["log_history"], list):
        raise RunDataError(f"{file}: key 'log_history' must be a list of logged rows, got {type(state['log_history']).__name__}.")
    return state


def _scalar(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _kind(row: dict) -> str:
    if any(k.startswith("eval_") for k in row):
        return "eval"
    if any(k in row for k in _SUMMARY_KEYS):
        return "summary"
    return "train"


def read_trainer_state(path: str | os.PathLike, *, split: str = "train") -> pd.DataFrame:
    """Read the logged history of a ``transformers`` / TRL training run as one row per step.

    Parameters
    ----------
    path
        A ``trainer_state.json`` file, a ``checkpoint-N`` folder, or the run's output folder holding
        ``checkpoint-N/`` subfolders (each file is read and merged; later checkpoints win).
    split
        ``"train"`` (default): rows logged during training, columns ``step`` then ``grad_norm``,
        ``loss``, ``learning_rate``, ``epoch`` and any other numeric scalar the trainer logged (e.g. TRL's
        ``mean_token_accuracy``), values as logged. ``"eval"``: the evaluation rows (``eval_loss``, ...).
        ``"summary"``: the end-of-training row (``train_runtime``, ``train_loss``, ...).

    Returns
    -------
    pandas.DataFrame sorted by ``step`` with one row per step; ``attrs["files"]`` lists the files read,
    ``attrs["global_step"]`` the last step any of them reached and ``attrs["checkpoint_steps"]`` the
    steps of the checkpoints whose file was read.

    Raises :class:`~phasebayes.errors.RunDataError` naming the file and key for malformed files.
    """
    if split not in ("train", "eval", "summary"):
        raise RunDataError(f"split must be 'train', 'eval' or 'summary', got {split!r}.")
    files = find_trainer_states(path)
    if not files:
        raise RunDataError(
            f"no {TRAINER_STATE_NAME} in {path} or its checkpoint-N subfolders; transformers.Trainer writes one into "
            "every checkpoint folder (save_strategy='steps'). Pass the folder holding the checkpoints."
        )
    rows: dict[int, dict[str, float]] = {}
    global_step = 0
    ckpt_steps: list[int] = []
    conflicts: list[str] = []
    for file in files:
        state = _load(file)
        gs = state.get("global_step")
        if isinstance(gs, int):
            global_step = max(global_step, gs)
            ckpt_steps.append(gs)
        for i, row in enumerate(state["log_history"]):
            if not isinstance(row, dict):
                raise RunDataError(f"{file}: log_history[{i}] must be an object of logged values, got {type(row).__name__}.")
            if "step" not in row:
                raise RunDataError(f"{file}: log_history[{i}] has no 'step' key; every logged row needs the optimiser step.")
            step = row["step"]
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise RunDataError(f"{file}: log_history[{i}]['step'] must be a non-negative integer, got {step!r}.")
            if _kind(row) != split:
                continue
            values = {k: _scalar(v) for k, v in row.items() if k != "step"}
            values = {k: v for k, v in values.items() if v is not None}
            old = rows.setdefault(step, {})
            for k, v in values.items():
                if k in old and not (old[k] == v or (math.isnan(old[k]) and math.isnan(v))) and k != "epoch":
                    conflicts.append(f"step {step} {k}: {old[k]!r} -> {v!r} ({file})")
                old[k] = v
    if conflicts:
        warnings.warn(f"{len(conflicts)} logged value(s) differ between the trainer_state.json files (the later checkpoint "
                      f"was kept), e.g. {conflicts[:3]}; was the run resumed from an older checkpoint?", stacklevel=2)
    if not rows:
        df = pd.DataFrame({"step": pd.Series(dtype="int64")})
    else:
        df = pd.DataFrame.from_dict(rows, orient="index").rename_axis("step").reset_index().sort_values("step")
        df["step"] = df["step"].astype("int64")
        order = [c for c in _FIRST if c in df.columns] + sorted(c for c in df.columns if c not in _FIRST)
        df = df[order].reset_index(drop=True)
    df.attrs.update({"files": [str(f) for f in files], "global_step": int(global_step),
                     "checkpoint_steps": sorted(set(ckpt_steps)), "source": "trainer_state", "split": split})
    return df
