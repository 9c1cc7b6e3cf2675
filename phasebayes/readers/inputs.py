"""One entry point for every input ``phasebayes analyze`` / ``[run] dataset`` accepts.

:func:`load_run_input` recognises (``format="auto"``) a saved run dataset (``.nc``), a tidy score table
(``step, prompt, sample, order_parameter, score``), per-cell counts (``k, n``), per-cell summaries
(``mean, sd, n``) and judged-answer files or folders in the community layout; it attaches a training log
in any supported format and the weight-space signals of a folder of LoRA checkpoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import xarray as xr

from ..errors import PhasebayesError, RunDataError

__all__ = ["INPUT_FORMATS", "detect_format", "load_run_input"]

INPUT_FORMATS = ("auto", "run", "tidy", "counts", "summaries", "judged")
_TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson")


def _read_table(path: Path) -> pd.DataFrame:
    from .judged import _read_file

    return _read_file(path)


def detect_format(path: str | os.PathLike) -> str:
    """The input format of ``path`` (see :data:`INPUT_FORMATS`), from its suffix and columns."""
    path = Path(path)
    if path.is_dir():
        return "judged"
    if path.suffix.lower() == ".nc":
        return "run"
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise RunDataError(f"{path}: unknown input (expected a run dataset .nc, a .csv/.jsonl/.json table or a folder of "
                           "judged-answer files).")
    cols = set(_read_table(path).columns)
    if {"k", "n"} <= cols:
        return "counts"
    if {"mean", "sd", "n"} <= cols:
        return "summaries"
    if {"step", "prompt", "sample", "order_parameter", "score"} <= cols:
        return "tidy"
    return "judged"


def _open_nc(path: Path) -> xr.Dataset:
    from ..dataset import open_run

    try:
        return open_run(path, require_scores=False)
    except PhasebayesError:
        raise
    except (OSError, ValueError, KeyError) as err:  # netCDF4 / HDF5 errors on a file that is not a run dataset
        raise RunDataError(f"{path}: not a readable run dataset (netCDF4: {type(err).__name__}: {err}). Pass a file "
                           "written by phasebayes.save_run, or a score table (.csv) / judged-answer folder.") from err


def load_run_input(path: str | os.PathLike, *, format: str = "auto", training_log: str | os.PathLike | None = None,
                   columns: Mapping[str, str] | None = None, derived: Mapping[str, str] | None = None,
                   steps: Mapping[str, int] | None = None, scales: Mapping[str, tuple[float, float] | None] | None = None,
                   weight_checkpoints: str | os.PathLike | None = None, weight_window: int = 1) -> xr.Dataset:
    """Read any supported scores input into a run dataset (validated; scores may be absent for ``run``).

    Parameters
    ----------
    path
        ``.nc`` run dataset, ``.csv``/``.jsonl``/``.json`` table, or a folder of judged-answer files.
    format
        One of :data:`INPUT_FORMATS` (``"auto"`` detects it: :func:`detect_format`).
    training_log
        Path of a training log in any supported format (trainer_state.json or its run folder,
        TensorBoard events, W&B export, train_log.jsonl); checked against the checkpoint steps.
    columns, derived, steps
        For judged answers: column roles, derived indicator expressions, file name → step
        (:func:`~phasebayes.readers.read_judged_folder`).
    scales
        Score scales per order parameter (tables, summaries and judged answers).
    weight_checkpoints, weight_window
        A folder of PEFT LoRA checkpoints: adds the weight-space signals
        (:func:`~phasebayes.readers.lora_weight_signals`, window k = ``weight_window``).
    """
    from ..dataset import from_dataframe, validate
    from .aggregated import from_counts, from_summaries
    from .judged import read_judged_folder
    from .training_logs import read_training_log, training_log_variables
    from .weights import lora_weight_signals

    path = Path(path)
    if not path.exists():
        raise RunDataError(f"scores input not found: {path}.")
    if format not in INPUT_FORMATS:
        raise RunDataError(f"format must be one of {INPUT_FORMATS}, got {format!r}.")
    fmt = detect_format(path) if format == "auto" else format
    if (columns or derived or steps) and fmt != "judged":
        raise RunDataError(f"{path}: columns / derived / steps apply to judged-answer files, but the input was read as "
                           f"'{fmt}'; pass format='judged' (--format judged) if it is one.")
    log = read_training_log(training_log) if training_log is not None else None
    try:
        if fmt == "run":
            ds = _open_nc(path)
        elif fmt == "judged":
            ds = read_judged_folder(path, steps=steps, columns=columns, derived=derived, scales=scales)
        else:
            table = _read_table(path)
            if fmt == "counts":
                ds = from_counts(table)
            elif fmt == "summaries":
                ds = from_summaries(table, scales=scales)
            else:
                ds = from_dataframe(table, scales=scales)
    except PhasebayesError as err:
        if str(path) in str(err):
            raise
        raise type(err)(f"{path}: {err}") from err
    if log is not None:
        if "train_step" in ds.dims:
            raise RunDataError(f"{path} already holds a training log (train_step); drop the extra training log "
                               f"{training_log} or remove the one in the dataset.")
        ds = ds.merge(training_log_variables(log, checkpoint_steps=ds["step"].values, rename=list(ds.variables)),
                      combine_attrs="drop_conflicts")
    if weight_checkpoints is not None:
        if "weight_step" in ds.dims:
            raise RunDataError(f"{path} already holds weight-space signals (weight_step).")
        ds = ds.merge(lora_weight_signals(weight_checkpoints, window=weight_window), combine_attrs="drop_conflicts")
    ds.attrs["input_format"] = fmt
    ds.attrs["input_path"] = str(path)
    if "score" in ds:
        validate(ds)
    for key in ("derived_order_parameters",):
        if isinstance(ds.attrs.get(key), dict):
            ds.attrs[key] = json.dumps(ds.attrs[key])
    return ds
