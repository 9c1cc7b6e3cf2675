"""Human ratings on disk: one JSON-lines file per rater in the run's ``ratings/`` folder.

Each line is one decision on one item::

    {"item": "3f9c...", "rubric": "alignment", "rubric_version": "…", "value": 75.0, "skipped": false, "time": "…"}

(``value`` is null for a skipped item). The whole file is rewritten atomically after every decision
(:func:`phasebayes.storage.atomic_write_text`), so killing the server or closing the page never loses
or half-writes a rating; undo removes the rater's last decision. Raters never share a file.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

from ..errors import ConfigError
from ..storage import atomic_write_text

__all__ = ["RatingStore", "RATER_RE", "ratings_dir_for"]

RATER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def ratings_dir_for(run: str | os.PathLike) -> Path:
    """Ratings folder of a run: ``<run folder>/ratings`` or, for a dataset file ``x.nc``, ``x_ratings/`` next to it."""
    run = Path(run)
    return run / "ratings" if run.is_dir() else run.with_name(run.stem + "_ratings")


class RatingStore:
    """The decisions of one rater (all rubrics), kept in memory and mirrored to ``<dir>/<rater>.jsonl``."""

    def __init__(self, ratings_dir: str | os.PathLike, rater: str):
        if not RATER_RE.match(rater or ""):
            raise ConfigError(f"rater name {rater!r} is not usable as a file name; use 1-40 letters, digits, '_', '.' or '-'.")
        self.path = Path(ratings_dir) / f"{rater}.jsonl"
        self.rater = rater
        self._lock = threading.Lock()
        self.records: list[dict] = []
        if self.path.exists():
            for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ConfigError(f"{self.path} line {n} is not valid JSON ({err}); fix or remove that line.") from err

    def _flush(self) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records)
        atomic_write_text(self.path, text, overwrite=True)

    def decided(self, rubric: str) -> dict[str, dict]:
        """Item id → the rater's decision on it for ``rubric`` (the latest, if an item appears twice)."""
        return {r["item"]: r for r in self.records if r.get("rubric") == rubric}

    def add(self, item: str, rubric: str, value: float | None, *, rubric_version: str = "") -> dict:
        """Record a rating (``value``) or a skip (``value=None``) and write the file atomically."""
        rec = {"item": item, "rubric": rubric, "rubric_version": rubric_version,
               "value": None if value is None else float(value), "skipped": value is None,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with self._lock:
            self.records.append(rec)
            try:
                self._flush()
            except BaseException:
                self.records.pop()
                raise
        return rec

    def undo(self, rubric: str) -> dict | None:
        """Remove the rater's last decision on ``rubric``; returns it (None if there is none)."""
        with self._lock:
            for k in range(len(self.records) - 1, -1, -1):
                if self.records[k].get("rubric") == rubric:
                    rec = self.records.pop(k)
                    try:
                        self._flush()
                    except BaseException:
                        self.records.insert(k, rec)
                        raise
                    return rec
        return None
