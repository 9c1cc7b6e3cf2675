"""The one reader of JSON-lines and CSV tables (judged answers, training logs, chat data, prompt sets).

Each error names the file and, for JSON lines, the line (``path: line N: ...``) and says how to fix it;
the caller chooses the :class:`~phasebayes.errors.PhasebayesError` subclass (a run file is
:class:`RunDataError`, a config input :class:`ConfigError`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from .errors import PhasebayesError, RunDataError


def json_lines(path: str | Path, what: str, *, error: type[PhasebayesError] = RunDataError) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file.

    ``what`` names one record in the error text (e.g. ``"judged answer"``). A line that is not valid
    JSON or not an object raises ``error`` naming the file and line.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}: line {lineno}: not valid JSON ({err.msg}); each line must be one {what} "
                            "object (fix or delete the line).") from None
            if not isinstance(record, dict):
                raise error(f"{path}: line {lineno}: expected a JSON object (one {what}), got {type(record).__name__}.")
            yield lineno, record


def csv_table(path: str | Path, hint: str, *, error: type[PhasebayesError] = RunDataError) -> pd.DataFrame:
    """A CSV file with a header line as a DataFrame; an unreadable file raises ``error`` ending in ``hint``."""
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise error(f"{path}: not a readable CSV table ({err}). {hint}") from err
