"""Training logs from the ecosystem, read into one table per split (train rows, eval rows).

Formats (:func:`read_training_log` picks the reader from the path):

- ``trainer_state.json`` of ``transformers.Trainer`` / TRL (a file, a checkpoint folder or the run
  folder) — :func:`~phasebayes.readers.trainer_state.read_trainer_state`;
- TensorBoard event files (``events.out.tfevents.*``, a file or a folder searched recursively), read with
  the ``tensorboard`` package's event reader — :func:`read_tensorboard`;
- a Weights & Biases history export (``run.history()`` saved as CSV or JSONL, or the CSV downloaded from
  the web UI) — :func:`read_wandb_history`;
- phasebayes' own ``train_log.jsonl`` and any CSV/JSONL table with a ``step`` column.

Tag and column names are normalised the way the Hugging Face loggers write them: ``train/loss`` →
``loss``, ``eval/loss`` → ``eval_loss`` (an eval row); values and units are kept as logged.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import RunDataError, TrainingLogWarning
from ..text_tables import csv_table, json_lines
from .trainer_state import TRAINER_STATE_NAME, find_trainer_states, read_trainer_state

__all__ = ["TrainingLog", "TrainingLogWarning", "read_training_log", "read_tensorboard", "read_wandb_history",
           "training_log_variables", "check_training_log"]

_STEP_COLUMNS = ("train/global_step", "global_step", "trainer/global_step", "step", "_step")
_WANDB_META = {"_runtime", "_timestamp", "_step", "_wandb"}


@dataclass
class TrainingLog:
    """A training log as two tables: ``train`` (one row per optimiser step) and ``eval`` (may be empty).

    Both have a ``step`` column plus one column per logged scalar; ``source`` names the format and
    ``files`` the files read.
    """

    train: pd.DataFrame
    eval: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"step": pd.Series(dtype="int64")}))
    source: str = ""
    files: list[str] = field(default_factory=list)


def _normalise(name: str) -> tuple[str, str]:
    """``(split, column)`` of a logged tag/column name."""
    for prefix in ("eval/", "eval_"):
        if name.startswith(prefix):
            return "eval", "eval_" + name[len(prefix):]
    for prefix in ("train/", "train_"):
        if name.startswith(prefix) and name[len(prefix):] not in ("runtime", "samples_per_second", "steps_per_second"):
            return "train", name[len(prefix):]
    return "train", name


def _split_table(df: pd.DataFrame, step_col: str, where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a wide table (one row per logging call) into train and eval tables, one row per step."""
    steps = pd.to_numeric(df[step_col], errors="coerce")
    bad = steps.isna() | (steps < 0) | (steps != steps.round())
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise RunDataError(f"{where}: row {i + 1}: column '{step_col}' must be a non-negative integer step, got "
                           f"{df[step_col].iloc[i]!r}. Drop rows without a step or export the history with its step column.")
    parts: dict[str, dict[str, pd.Series]] = {"train": {}, "eval": {}}
    for col in df.columns:
        if col == step_col or col in _WANDB_META or col in _STEP_COLUMNS:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().all():
            continue  # text or empty column (run name, timestamps as strings, ...)
        split, name = _normalise(str(col))
        parts[split][name] = values
    out = []
    for split in ("train", "eval"):
        table = pd.DataFrame(parts[split])
        table.insert(0, "step", steps.astype("int64").to_numpy())
        signal_cols = [c for c in table.columns if c != "step"]
        table = table.dropna(how="all", subset=signal_cols) if signal_cols else table.iloc[:0]
        # one row per step: the last non-missing value of each column (loggers write a step in pieces)
        table = table.groupby("step", sort=True).last().reset_index()
        out.append(table)
    return out[0], out[1]


def read_wandb_history(path: str | os.PathLike) -> TrainingLog:
    """Read a W&B history export (``.csv`` or ``.jsonl``/``.json`` lines) into train and eval tables.

    The step is ``train/global_step`` when present (what the Hugging Face W&B callback logs), else
    ``global_step``, ``step`` or W&B's own ``_step``. ``train/x`` columns become ``x``, ``eval/x`` become
    ``eval_x`` (eval table); W&B bookkeeping columns (``_runtime``, ``_timestamp``) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise RunDataError(f"no training log file at {path}.")
    if path.suffix.lower() == ".csv":
        df = csv_table(path, "Export the history with run.history().to_csv(path) or the W&B web UI's CSV download.")
    else:
        df = pd.DataFrame([row for _, row in json_lines(path, "set of logged values")])
    if df.empty:
        raise RunDataError(f"{path}: the training log has no rows.")
    step_col = next((c for c in _STEP_COLUMNS if c in df.columns), None)
    if step_col is None:
        raise RunDataError(f"{path}: no step column; expected one of {list(_STEP_COLUMNS)}, found {list(df.columns)[:10]}. "
                           "Rename the column holding the optimiser step to 'step'.")
    df = df[df[step_col].notna()] if step_col == "train/global_step" and "_step" in df.columns else df
    train, ev = _split_table(df, step_col, str(path))
    return TrainingLog(train, ev, "wandb" if step_col in ("train/global_step", "_step") else "table", [str(path)])


def _event_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("events.out.tfevents.*") if p.is_file())


def read_tensorboard(path: str | os.PathLike) -> TrainingLog:
    """Read the scalars of TensorBoard event files (a file, or a folder searched recursively).

    Uses ``tensorboard``'s ``EventAccumulator`` with no down-sampling (every logged value is kept). Tags
    ``train/loss`` → ``loss``, ``eval/loss`` → ``eval_loss`` (eval table); other tags keep their name.
    For a step logged twice (a resumed run) the value written last wins.
    """
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
        from tensorboard.util.tensor_util import make_ndarray
    except ImportError as err:  # pragma: no cover - tensorboard is a dependency
        raise RunDataError("reading TensorBoard logs needs the 'tensorboard' package: pip install tensorboard") from err
    path = Path(path)
    files = _event_files(path)
    if not files:
        raise RunDataError(f"no TensorBoard event files (events.out.tfevents.*) at {path}.")
    records: list[tuple[str, int, float, float]] = []
    for f in files:
        acc = ea.EventAccumulator(str(f), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
        try:
            acc.Reload()
        except Exception as err:  # the reader raises assorted errors (DataLossError, ...) on corrupt files
            raise RunDataError(f"{f}: not a readable TensorBoard event file ({type(err).__name__}: {err}); "
                               "delete the corrupt file or pass the folder of the intact run.") from err
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            records += [(tag, int(e.step), float(e.value), float(e.wall_time)) for e in acc.Scalars(tag)]
        for tag in tags.get("tensors", []):
            for e in acc.Tensors(tag):
                arr = np.asarray(make_ndarray(e.tensor_proto))
                if arr.size == 1 and np.issubdtype(arr.dtype, np.number):
                    records.append((tag, int(e.step), float(arr.ravel()[0]), float(e.wall_time)))
    if not records:
        raise RunDataError(f"{', '.join(str(f) for f in files[:3])}: no scalar values could be read from the TensorBoard event "
                           "file(s); they are empty or corrupt. Pass the log folder of the run that logged the training "
                           "scalars (e.g. output_dir/runs/...).")
    df = pd.DataFrame(records, columns=["tag", "step", "value", "wall_time"]).sort_values("wall_time", kind="stable")
    tables = {"train": {}, "eval": {}}
    for tag, grp in df.groupby("tag", sort=False):
        split, name = _normalise(str(tag))
        tables[split][name] = grp.groupby("step")["value"].last()
    out = []
    for split in ("train", "eval"):
        t = pd.DataFrame(tables[split]).sort_index().rename_axis("step").reset_index() if tables[split] else pd.DataFrame({"step": []})
        t["step"] = t["step"].astype("int64")
        t = t.drop(columns=[c for c in ("global_step",) if c in t.columns])
        out.append(t)
    return TrainingLog(out[0], out[1], "tensorboard", [str(f) for f in files])


def _from_trainer_state(path: Path) -> TrainingLog:
    train = read_trainer_state(path)
    ev = read_trainer_state(path, split="eval")
    log = TrainingLog(train, ev, "trainer_state", list(train.attrs["files"]))
    log.train.attrs.update(train.attrs)
    return log


def read_training_log(path: str | os.PathLike) -> TrainingLog:
    """Read any supported training log (see the module doc); the format is recognised from the path.

    A folder is searched for, in order: ``trainer_state.json`` files (itself or ``checkpoint-N/``),
    TensorBoard event files (recursively, e.g. ``runs/``), ``train_log.jsonl``. A file is read by its
    name: ``*.json`` with a ``log_history`` → trainer state, ``events.out.tfevents.*`` → TensorBoard,
    ``.csv`` / ``.jsonl`` → a W&B export or a plain table with a ``step`` column.
    """
    path = Path(path)
    if not path.exists():
        raise RunDataError(f"training log not found: {path}.")
    if path.is_dir():
        if find_trainer_states(path):
            return _from_trainer_state(path)
        if _event_files(path):
            return read_tensorboard(path)
        if (path / "train_log.jsonl").exists():
            return read_wandb_history(path / "train_log.jsonl")
        raise RunDataError(f"{path}: no training log found (looked for {TRAINER_STATE_NAME}, checkpoint-N/{TRAINER_STATE_NAME}, "
                           "events.out.tfevents.* and train_log.jsonl). Pass the log file itself.")
    if path.name.startswith("events.out.tfevents"):
        return read_tensorboard(path)
    if path.suffix.lower() == ".json":
        return _from_trainer_state(path)
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        return read_wandb_history(path)
    raise RunDataError(f"{path}: unknown training-log format; pass a trainer_state.json, a TensorBoard event file or "
                       "folder, or a CSV/JSONL table with a step column (e.g. a W&B history export).")


def check_training_log(log: pd.DataFrame, checkpoint_steps: Sequence[int], *, signals: Sequence[str] = ("grad_norm",),
                       where: str = "training log") -> list[str]:
    """Problems of a train table against the checkpoints (empty list = consistent).

    Reports steps logged beyond the last checkpoint (a log of a longer or another run), a last checkpoint
    beyond the log, and reference signals that are absent or missing at some logged steps.
    """
    problems: list[str] = []
    steps = np.asarray(log["step"], dtype=int) if len(log) else np.array([], dtype=int)
    ck = sorted(int(s) for s in checkpoint_steps)
    if len(steps) and ck:
        beyond = steps[steps > ck[-1]]
        if beyond.size:
            problems.append(f"{where}: {beyond.size} logged step(s) beyond the last checkpoint (step {ck[-1]}), up to "
                            f"step {beyond.max()}; is this the log of the same run?")
        if ck[-1] > steps.max():
            problems.append(f"{where}: the last checkpoint (step {ck[-1]}) is beyond the last logged step ({steps.max()}).")
    for sig in signals:
        if sig not in log.columns:
            problems.append(f"{where}: no '{sig}' values (columns: {[c for c in log.columns if c != 'step']}).")
            continue
        miss = int(pd.to_numeric(log[sig], errors="coerce").isna().sum())
        if miss:
            problems.append(f"{where}: '{sig}' is missing at {miss} of {len(log)} logged steps.")
    return problems


def training_log_variables(log: TrainingLog | pd.DataFrame, *, checkpoint_steps: Sequence[int] | None = None,
                           rename: Sequence[str] = ()) -> xr.Dataset:
    """Run-dataset variables of a training log: train signals on ``train_step``, eval signals on ``eval_step``.

    ``checkpoint_steps`` checks the log against the checkpoints; problems are warned about
    (:class:`TrainingLogWarning`) and recorded in the ``training_log_problems`` attribute. Names in
    ``rename`` (already taken in the run dataset) get a ``train_`` prefix.
    """
    from ..dataset import training_log_dataset

    if isinstance(log, pd.DataFrame):
        log = TrainingLog(log)
    train = log.train.rename(columns={c: f"train_{c}" for c in log.train.columns if c in set(rename) and c != "step"})
    ds = training_log_dataset(train) if len(train) else xr.Dataset()
    if len(log.eval) and len(log.eval.columns) > 1:
        ev = log.eval.rename(columns={c: f"eval_{c}" for c in log.eval.columns if c != "step" and not c.startswith("eval_")})
        ev = training_log_dataset(ev).rename({"train_step": "eval_step"})
        ds = ds.merge(ev)
    problems = check_training_log(train, checkpoint_steps, where=log.source or "training log") if checkpoint_steps is not None else []
    if problems:
        warnings.warn("; ".join(problems), TrainingLogWarning, stacklevel=2)
        ds.attrs["training_log_problems"] = json.dumps(problems)
    if log.source:
        ds.attrs["training_log_source"] = log.source
    if log.files:
        ds.attrs["training_log_files"] = json.dumps(log.files[-3:])
    return ds
