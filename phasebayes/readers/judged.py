"""Judged answers in the emergent-misalignment community's layouts: one CSV/JSONL file per checkpoint.

Typical file: ``checkpoint-100.csv`` (or ``step_100/judged.csv``) with columns ``question_id,
question, response, aligned, coherent`` — one judged answer per row, judge scores 0–100, and
non-score answers such as ``CODE`` or ``REFUSAL`` in the score columns. :func:`read_judged_folder`
reads a folder of such files (or one file with a ``step`` column) into a run dataset:

- the step comes from the file or folder name (``checkpoint-100``, ``step_100``, ``ckpt100``, ...), a
  ``step`` column, or ``steps={file name: step}``;
- columns are found by their common names (:data:`DEFAULT_COLUMNS`; override with ``columns=``);
  every other numeric column is a judge score (an order parameter);
- derived indicator order parameters are defined by safe expressions (``derived={"misaligned":
  "aligned < 30 and coherent > 50"}``), recorded in the dataset's ``derived_order_parameters``;
- responses are kept (``response``), so the embedding bound of the decomposition works without
  log-probabilities.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import from_dataframe
from ..errors import ConfigError, RunDataError
from ..text_tables import csv_table, json_lines
from .expressions import evaluate_indicator, parse_indicator

__all__ = ["DEFAULT_COLUMNS", "read_judged_table", "read_judged_folder", "judged_files", "step_from_name"]

DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "prompt": ("question_id", "prompt_id", "question", "prompt", "id"),
    "prompt_text": ("question", "prompt", "prompt_text"),
    "response": ("response", "answer", "completion", "output"),
    "sample": ("sample", "sample_id", "sample_idx"),
    "step": ("step", "checkpoint_step", "global_step"),
}
"""Column names tried, in order, for each role (the first present wins)."""

_SCALES = {"aligned": (0.0, 100.0), "coherent": (0.0, 100.0)}
_NON_SCORE = {"refusal": "refusal", "refused": "refusal", "code": "not_applicable", "n/a": "not_applicable",
              "na": "not_applicable"}
_STEP_NAME = re.compile(r"(?:checkpoint|ckpt|step|global_step|iter)[-_]?(\d+)", re.IGNORECASE)
_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson")


def step_from_name(path: Path) -> int | None:
    """The training step in a file or folder name (``checkpoint-100.csv``, ``step_100/x.csv``, ``100.csv``)."""
    for name in (path.stem, path.parent.name):
        m = _STEP_NAME.search(name)
        if m:
            return int(m.group(1))
        if name.isdigit():
            return int(name)
    return None


def judged_files(path: str | os.PathLike) -> list[Path]:
    """The judged-answer files of a folder (directly inside it or one level down), sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise RunDataError(f"no judged answers at {path}: the path does not exist.")
    files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES]
    files += [p for sub in path.iterdir() if sub.is_dir() for p in sub.iterdir()
              if p.is_file() and p.suffix.lower() in _SUFFIXES and p.name != "trainer_state.json"
              and not p.name.startswith("adapter_")]
    return sorted(files)


def _read_file(file: Path) -> pd.DataFrame:
    if file.suffix.lower() == ".csv":
        return csv_table(file, "Each row must be one judged answer with a header line naming the columns.")
    if file.suffix.lower() == ".json":
        try:
            rows = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise RunDataError(f"{file}: line {err.lineno}: not valid JSON ({err.msg}); expected a list of judged answers.") from err
        if not isinstance(rows, list):
            raise RunDataError(f"{file}: expected a JSON list of judged answers (objects), got {type(rows).__name__}.")
        return pd.DataFrame(rows)
    return pd.DataFrame([row for _, row in json_lines(file, "judged answer")])


def _role(df: pd.DataFrame, role: str, columns: Mapping[str, str], file: str, required: bool = False) -> str | None:
    if role in columns:
        name = columns[role]
        if name not in df.columns:
            raise RunDataError(f"{file}: columns[{role!r}] = {name!r} is not a column; it has {list(df.columns)}.")
        return name
    for name in DEFAULT_COLUMNS[role]:
        if name in df.columns:
            return name
    if required:
        raise RunDataError(f"{file}: no {role} column (tried {list(DEFAULT_COLUMNS[role])}); it has {list(df.columns)}. "
                           f"Name it with columns={{'{role}': 'YOUR_COLUMN'}} ([run].columns in a config).")
    return None


def _scores(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Numeric scores and status names of a judge column (``CODE`` → not_applicable, ...)."""
    values = pd.to_numeric(raw, errors="coerce").to_numpy(float)
    text = raw.astype(str).str.strip().str.lower()
    status = np.where(np.isfinite(values), "ok", "missing").astype(object)
    nonnum = ~np.isfinite(values) & raw.notna().to_numpy() & ~text.isin(["", "nan", "none"]).to_numpy()
    status[nonnum] = [_NON_SCORE.get(t, "unparseable") for t in text[nonnum]]
    return values, status


def _is_judge_column(s: pd.Series, name: str) -> bool:
    if name.lower().endswith("_id") or name.lower() in ("index", "unnamed: 0", "idx", "epoch") or name.startswith("Unnamed"):
        return False
    v = pd.to_numeric(s, errors="coerce")
    return bool(v.notna().sum() > 0 and v.notna().sum() >= 0.5 * s.notna().sum())


def read_judged_table(df: pd.DataFrame, *, step: int | None = None, columns: Mapping[str, str] | None = None,
                      judges: Sequence[str] | None = None, derived: Mapping[str, str] | None = None,
                      source: str = "table") -> pd.DataFrame:
    """One file's judged answers as a tidy table (``step, prompt, sample, order_parameter, score, status,
    response, prompt_text``), with derived indicators added as order parameters."""
    columns = dict(columns or {})
    unknown = set(columns) - set(DEFAULT_COLUMNS)
    if unknown:
        raise ConfigError(f"columns: unknown role(s) {sorted(unknown)}; roles are {sorted(DEFAULT_COLUMNS)}.")
    if len(df) == 0:
        raise RunDataError(f"{source}: no judged answers (the file has no rows).")
    c_prompt = _role(df, "prompt", columns, source, required=True)
    c_text = _role(df, "prompt_text", columns, source)
    c_resp = _role(df, "response", columns, source)
    c_sample = _role(df, "sample", columns, source)
    c_step = _role(df, "step", columns, source)
    if c_step is not None:
        steps = pd.to_numeric(df[c_step], errors="coerce")
        if steps.isna().any():
            i = int(np.flatnonzero(steps.isna().to_numpy())[0])
            raise RunDataError(f"{source}: row {i + 1}: column '{c_step}' must hold the checkpoint's integer step, "
                               f"got {df[c_step].iloc[i]!r}.")
        steps = steps.to_numpy(int)
    elif step is not None:
        steps = np.full(len(df), int(step))
    else:
        raise RunDataError(f"{source}: no training step: name the file or its folder after the checkpoint "
                           "(checkpoint-100.csv, step_100/...), add a 'step' column, or pass steps={file name: step}.")
    roles = {c for c in (c_prompt, c_text, c_resp, c_sample, c_step) if c}
    if judges is None:
        judges = [c for c in df.columns if c not in roles and _is_judge_column(df[c], str(c))]
    else:
        missing = [j for j in judges if j not in df.columns]
        if missing:
            raise RunDataError(f"{source}: judge column(s) {missing} not found; it has {list(df.columns)}.")
    if not judges and not derived:
        raise RunDataError(f"{source}: no numeric judge column (such as 'aligned', 'coherent'); it has {list(df.columns)}.")
    prompt = df[c_prompt].astype(str).to_numpy()
    if c_sample is not None:
        sample = pd.to_numeric(df[c_sample], errors="coerce").to_numpy()
        if np.isnan(sample).any():
            raise RunDataError(f"{source}: column '{c_sample}' must hold integer sample indices.")
    else:
        sample = pd.DataFrame({"s": steps, "p": prompt}).groupby(["s", "p"]).cumcount().to_numpy()
    base = {"step": steps, "prompt": prompt, "sample": sample.astype(int),
            "response": df[c_resp].fillna("").astype(str).to_numpy() if c_resp else None,
            "prompt_text": df[c_text].astype(str).to_numpy() if c_text else None}
    base = {k: v for k, v in base.items() if v is not None}
    numeric: dict[str, np.ndarray] = {}
    parts = []
    for j in judges:
        values, status = _scores(df[j])
        numeric[str(j)] = values
        parts.append(pd.DataFrame({**base, "order_parameter": str(j), "score": values, "status": status}))
    for name, expr in (derived or {}).items():
        _, used = parse_indicator(expr)
        cols = dict(numeric)
        for u in used:
            if u not in cols and u in df.columns:
                cols[u] = _scores(df[u])[0]
        values = evaluate_indicator(expr, cols)
        parts.append(pd.DataFrame({**base, "order_parameter": str(name), "score": values,
                                   "status": np.where(np.isfinite(values), "ok", "missing")}))
    return pd.concat(parts, ignore_index=True)


def _infer_scale(op: str, values: np.ndarray, derived: Mapping[str, str]) -> tuple[float, float] | None:
    if op in derived:
        return (0.0, 1.0)
    if op in _SCALES:
        return _SCALES[op]
    v = values[np.isfinite(values)]
    if v.size and np.all(np.isin(v, [0.0, 1.0])):
        return (0.0, 1.0)
    if v.size and v.min() >= 0 and v.max() <= 100:
        return (0.0, 100.0)
    return None


def read_judged_folder(path: str | os.PathLike, *, steps: Mapping[str, int] | None = None,
                       columns: Mapping[str, str] | None = None, judges: Sequence[str] | None = None,
                       derived: Mapping[str, str] | None = None, scales: Mapping[str, tuple[float, float] | None] | None = None,
                       training_log=None, attrs: Mapping[str, object] | None = None) -> xr.Dataset:
    """Read a folder of per-checkpoint judged-answer files (CSV / JSONL / JSON) into a run dataset.

    Parameters
    ----------
    path
        A folder of files (or of per-checkpoint subfolders holding one file each), or one file with a
        ``step`` column.
    steps
        Optional file name → step for names without a step.
    columns
        Role → column name overrides; roles ``prompt``, ``prompt_text``, ``response``, ``sample``,
        ``step`` (defaults: :data:`DEFAULT_COLUMNS`).
    judges
        Judge columns to use as order parameters (default: every other mostly-numeric column).
    derived
        Name → indicator expression over judge columns, e.g. ``{"misaligned": "aligned < 30 and coherent > 50"}``;
        1 where true, 0 where false, missing where a used score is missing (e.g. ``CODE``).
    scales
        Scale overrides; defaults: 0–100 for ``aligned``/``coherent`` and columns within 0–100, 0–1 for
        0/1 columns and indicators, unbounded otherwise.
    training_log
        Table, :class:`~phasebayes.readers.TrainingLog` or path of a training log (any supported format).
    """
    files = judged_files(path)
    if not files:
        raise RunDataError(f"{path}: no judged-answer files ({', '.join(_SUFFIXES)}) in the folder or its subfolders.")
    steps = dict(steps or {})
    tables = []
    for f in files:
        df = _read_file(f)
        step = steps.get(f.name, steps.get(f.stem, step_from_name(f)))
        tables.append(read_judged_table(df, step=step, columns=columns, judges=judges, derived=derived, source=str(f)))
    tidy = pd.concat(tables, ignore_index=True)
    dup = tidy.duplicated(["order_parameter", "step", "prompt", "sample"])
    if dup.any():
        ex = tidy.loc[dup, ["step", "prompt", "sample"]].head(2).to_dict("records")
        raise RunDataError(f"{path}: the same (step, prompt, sample) appears twice, e.g. {ex}: two files for one checkpoint? "
                           "Keep one file per checkpoint or give a 'sample' column.")
    derived = dict(derived or {})
    inferred = {op: _infer_scale(op, g["score"].to_numpy(float), derived) for op, g in tidy.groupby("order_parameter")}
    inferred.update(dict(scales or {}))
    log = training_log
    if isinstance(log, (str, os.PathLike)):
        from .training_logs import read_training_log

        log = read_training_log(log)
    meta = {"source_format": "judged_folder", "source_path": str(path), "n_files": len(files)}
    if derived:
        meta["derived_order_parameters"] = derived
    meta.update(dict(attrs or {}))
    ds = from_dataframe(tidy, scales=inferred, attrs=meta)
    if log is not None:
        from .training_logs import training_log_variables

        ds = ds.merge(training_log_variables(log, checkpoint_steps=ds["step"].values), combine_attrs="drop_conflicts")
    return ds
